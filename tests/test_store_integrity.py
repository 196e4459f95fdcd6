"""Damaged stores: every chunk is checksummed at ingestion; `astrom3 verify`, store opening and the loader name
the damaged file and array instead of training on garbage (issue 12)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
import pytest

from astrom3_hpc.cli import main
from astrom3_hpc.data.chunks import ChunkReader
from astrom3_hpc.data.checksums import TABLE, ChecksumError
from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches, epoch_loader
from astrom3_hpc.data.store import Store, StoreError
from conftest import build_synthetic_store, built_before_checksums


@pytest.fixture
def store(tiny_store, tmp_path) -> Path:
    dst = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, dst)
    return dst


def _scribble(path: Path, offset: int = 64, n: int = 4096) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(min(offset, max(size - n, 0)))
        f.write(np.random.default_rng(1).bytes(min(n, size)))


def _epoch(store: Path, **kw) -> list:
    return list(epoch_loader(TrimodalBatches(LoaderSpec(str(store), batch_size=16, **kw)), 0))


def test_verify_passes_an_intact_store(store, capsys):
    assert main(["verify", str(store)]) == 0
    assert "intact" in capsys.readouterr().out
    table = json.loads((store / TABLE).read_text())
    assert {"spec", "lc/values", "meta", "splits/seed42/full/train", "stats/seed42/meta_std"} <= set(table["arrays"])
    assert Store(store).fingerprint and len(Store(store).fingerprint) == 64


def test_verify_names_objects_whose_values_are_not_finite(tmp_path, monkeypatch, capsys):
    """Catches a store built before ingest refused values that overflow float32 (a -99 magnitude read as a
    point): intact byte for byte, so `verify` said "intact" while training stopped on its infinite curves."""
    from astrom3_hpc.data import preprocess

    real, spoilt = preprocess.light_curve, []

    def as_before(lc, object_id, source):
        values, stats = real(lc, object_id, source)
        if len(spoilt) < 2 and int(object_id) % 5 == 0:
            values[2, 1] = np.inf
            spoilt.append(int(object_id))
        return values, stats

    monkeypatch.setattr(preprocess, "light_curve", as_before)
    store = build_synthetic_store(tmp_path / "s.zarr", n=64)
    assert main(["verify", str(store)]) == 3
    assert (f"array 'lc/values' holds non-finite values for 2 valid object(s) (object_id {spoilt[0]}, {spoilt[1]}): "
            f"rebuild the store with `astrom3 ingest`") in capsys.readouterr().out
    # The classical features too: NaN features mean "no light curve", so those objects were classified unsaid.
    from astrom3_hpc.data.lc_features import store_features

    s = Store(store)
    with pytest.raises(StoreError, match=rf"the light curves of 2 object\(s\) hold non-finite values \(object_id "
                                         rf"{spoilt[0]}, {spoilt[1]}\)"):
        store_features(s, s.valid_rows())


@pytest.mark.parametrize("array", ["lc/values", "spec", "meta", "lc/offsets"])
def test_random_bytes_in_a_chunk_are_named_by_verify_and_refused_by_the_loader(store, array, capsys):
    victim = sorted((store / array / "c").rglob("*"))[-1 if array == "lc/offsets" else 1]
    victim = victim if victim.is_file() else next(p for p in victim.rglob("*") if p.is_file())
    _scribble(victim)
    assert main(["verify", str(store)]) == 3
    out = capsys.readouterr().out
    assert f"array '{array}'" in out and str(victim) in out
    # Every chunk of the training split (all of them, for a store this small) is read in epoch 0.
    with pytest.raises(ChecksumError, match=f"array '{array}' is damaged"):
        _epoch(store, in_memory=False)
        _epoch(store, split="val")
        _epoch(store, split="test")


def _flip_byte(path: Path, offset: int = 20) -> None:
    """A damage of the same size: only the checksum can tell."""
    b = bytearray(path.read_bytes())
    b[min(offset, len(b) - 1)] ^= 0x40
    path.write_bytes(bytes(b))


@pytest.mark.parametrize("array", ["meta_present", "stats/seed42/meta_median", "lc/period_search"])
def test_optional_small_arrays_are_hashed_before_the_loader_reads_them(store, tmp_path, array):
    intact = tmp_path / "intact.zarr"
    shutil.copytree(store, intact)
    _flip_byte(next(p for p in sorted((store / array / "c").rglob("*")) if p.is_file()))
    with pytest.raises(ChecksumError, match=f"array '{array}' is damaged"):
        TrimodalBatches(LoaderSpec(str(store)))
    if array.startswith("stats/"):  # read from the store that normalises another's objects (`astrom3 predict`)
        with pytest.raises(ChecksumError, match=f"{store}.*array '{array}' is damaged"):
            TrimodalBatches(LoaderSpec(str(intact), train=False, norm_store=str(store)))


def test_damaged_chunk_is_refused_by_workers_and_in_memory_mode(store):
    _scribble(store / "spec" / "c" / "3" / "0" / "0")
    with pytest.raises(ChecksumError, match="'spec' is damaged"):
        _epoch(store, in_memory=True)
    with pytest.raises(Exception, match="'spec' is damaged"):
        list(epoch_loader(TrimodalBatches(LoaderSpec(str(store), batch_size=16)), 0, num_workers=1))


def test_missing_split_chunk_is_an_error_not_copies_of_row_0(store):
    (store / "splits/seed42/full/train/c/0").unlink()
    with pytest.raises(StoreError, match="'splits/seed42/full/train'.*file missing"):
        Store(store)
    with pytest.raises(StoreError, match="splits/seed42/full/train"):
        TrimodalBatches(LoaderSpec(str(store)))


def test_missing_stats_chunk_is_an_error(store):
    (store / "stats/seed42/meta_std/c/0").unlink()
    with pytest.raises(StoreError, match="'stats/seed42/meta_std'"):
        TrimodalBatches(LoaderSpec(str(store)))


def test_truncated_chunk_names_file_and_array(store):
    victim = store / "spec/c/2/0/0"
    victim.write_bytes(b"")
    with pytest.raises(StoreError, match=f"{victim}: chunk 'c/2/0/0' of array 'spec' is damaged \\(0 bytes"):
        Store(store)


def test_truncated_chunk_of_a_store_without_checksums_names_file_and_array(store):
    built_before_checksums(store)
    victim = store / "spec/c/2/0/0"
    victim.write_bytes(b"")
    with pytest.raises(StoreError, match=f"{victim}.*'spec'.*0 bytes"):
        Store(store)
    # And past the opening check (as a worker process opens it): the loader names the file, not mmap.
    with pytest.raises(StoreError, match=f"{victim}.*'spec'.*empty file"):
        ChunkReader(Store(store, check_chunks=False).array("spec")).read(2)


@pytest.mark.parametrize("array,shape", [("meta", [600, 34]), ("spec", [640, 3, 100]), ("lc/offsets", [640]),
                                          ("splits/seed42/full/test", [10_000]), ("stats/seed42/aux_std", [5])])
def test_wrong_shape_in_zarr_json_names_the_array(store, array, shape):
    p = store / array / "zarr.json"
    m = json.loads(p.read_text())
    m["shape"] = shape
    p.write_text(json.dumps(m))
    with pytest.raises(StoreError, match=f"array '{array}' has shape|split '{array}' has"):
        Store(store)
    assert main(["verify", str(store)]) == 3


def test_wrong_split_length_is_caught_against_the_table(store):
    p = store / "splits/seed42/full/val/zarr.json"
    m = json.loads(p.read_text())
    m["shape"] = [m["shape"][0] - 3]
    p.write_text(json.dumps(m))
    with pytest.raises(StoreError, match="'splits/seed42/full/val' has shape .* at ingestion"):
        Store(store)


def test_store_without_checksums_opens_with_a_warning_and_verify_says_so(store, caplog, capsys):
    built_before_checksums(store)
    with caplog.at_level(logging.WARNING, logger="astrom3"):
        assert Store(store).fingerprint is None
    assert "no checksum table" in caplog.text
    assert main(["verify", str(store)]) == 4
    assert "no checksum table" in capsys.readouterr().err


@pytest.mark.parametrize("garble", [lambda b: b[:len(b) // 2], lambda b: b"\xff\xfe" + b[2:], lambda b: b"[]"],
                         ids=["truncated", "not-utf8", "not-a-table"])
def test_garbled_checksum_table_is_store_damage_naming_the_file(store, capsys, garble):
    table = store / TABLE
    table.write_bytes(garble(table.read_bytes()))
    for command in ("verify", "info"):
        assert main([command, str(store)]) == 3
        assert f"{table}: the checksum table is damaged" in capsys.readouterr().err
    with pytest.raises(ChecksumError, match=f"{table}: the checksum table is damaged"):
        TrimodalBatches(LoaderSpec(str(store)))


@pytest.mark.parametrize("node,named", [("lc/stats", "array 'lc/stats'"), ("label", "array 'label'"),
                                        ("lc", "node 'lc'"), ("", "the store's root group")])
@pytest.mark.parametrize("garble", [lambda b: b"garbage", lambda b: b[:len(b) // 2], lambda b: b"\xff" + b[1:],
                                    lambda b: b"[]"], ids=["not-json", "truncated", "not-utf8", "not-an-object"])
def test_garbled_node_metadata_is_store_damage_naming_file_and_array(store, capsys, node, named, garble):
    """A zarr.json that no longer parses gave a bare JSON parser error naming no file, as bad input (exit 2)."""
    meta = store / node / "zarr.json" if node else store / "zarr.json"
    meta.write_bytes(garble(meta.read_bytes()))
    line = f"{meta}: the metadata of {named} is damaged"
    assert main(["verify", str(store)]) == 3
    captured = capsys.readouterr()
    assert line in captured.out + captured.err
    assert main(["info", str(store)]) == 3
    assert line in capsys.readouterr().err
    with pytest.raises(ChecksumError, match=f"metadata of {named} is damaged"):
        Store(store)


def test_a_lost_checksum_table_is_store_damage_not_an_older_store(store, capsys):
    """A store whose attributes record its table, and the table gone (a copy that kept only the Zarr nodes): it
    opened as a store from before checksums, every chunk unchecked, under a warning blaming an older astrom3."""
    (store / TABLE).unlink()
    _flip_byte(store / "spec" / "c" / "0" / "0" / "0")
    for command in ("verify", "info"):
        assert main([command, str(store)]) == 3
        assert f"{store / TABLE}: missing, though the store was built with it" in capsys.readouterr().err
    with pytest.raises(ChecksumError, match="missing, though the store was built with it"):
        TrimodalBatches(LoaderSpec(str(store)))


def test_per_object_caches_hash_the_light_curves_they_are_computed_from(tmp_path):
    """The feature and fold caches outlive the chunks they came from (named by the table's fingerprint, which a
    damaged chunk does not change): a damaged light-curve chunk was computed into them and read on after the
    chunk was repaired."""
    from astrom3_hpc.data import lc_features, store_cache

    store = build_synthetic_store(tmp_path / "small.zarr", n=48)  # the features of 640 objects took 30 s of CI
    chunk = next(p for p in sorted((store / "lc/values/c").rglob("*")) if p.is_file())
    good = chunk.read_bytes()
    _flip_byte(chunk)
    with pytest.raises(ChecksumError, match="array 'lc/values' is damaged"):
        lc_features.cached_features(Store(store))
    assert not list(store.glob(f"{store_cache.CACHE_DIR}/lc_features-*"))  # nothing computed from it is kept
    chunk.write_bytes(good)
    assert np.isfinite(lc_features.cached_features(Store(store))).any()


def test_fingerprint_changes_with_content(tmp_path, tiny_store):
    other = build_synthetic_store(tmp_path / "more.zarr", n=656)
    assert Store(other).fingerprint != Store(tiny_store).fingerprint
    assert Store(tiny_store).fingerprint == Store(tiny_store).fingerprint


def test_a_store_rebuilt_in_place_under_an_open_loader_is_refused(tmp_path):
    """A job's loader holds the old store's labels and offsets from its start; a rebuild in place (ingest
    --overwrite, same object count) used to pass the chunk checks with the new store's own digests, and batches
    joined old labels and offsets to the new spectra and light curves."""
    from astrom3_hpc.data.ingest import IngestOptions, ingest
    from astrom3_hpc.data.synthetic import SyntheticSource
    from conftest import SMALL_LAYOUT

    path = build_synthetic_store(tmp_path / "s.zarr", n=160)
    batches = TrimodalBatches(LoaderSpec(str(path), batch_size=16))
    ingest(SyntheticSource(160, seed=7), path, IngestOptions(on_error="skip", overwrite=True, progress=False,
                                                             layout_kw=SMALL_LAYOUT))
    with pytest.raises(StoreError, match="rebuilt or replaced while this job read it.*rerun the job") as e:
        next(iter(epoch_loader(batches, 0)))
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
    with pytest.raises(Exception, match="rebuilt or replaced while this job read it"):  # each worker checks too
        next(iter(epoch_loader(batches, 0, num_workers=1)))
    batches.close()
    assert len(_epoch(path)) > 0  # a loader built on the new store reads it


@pytest.mark.parametrize("seed", [7, 0])
def test_a_store_rebuilt_in_place_while_a_loader_reads_it(tmp_path, seed):
    """Catches a rebuild in place after the loader opened the store: chunk files it had checked were read again
    from the new store without a check (compressed chunks are re-read every epoch), so later epochs mixed the new
    arrays with the old labels and offsets. A rebuild of the same input (seed 0, the store's own) reads on."""
    from astrom3_hpc.data.ingest import IngestOptions, ingest
    from astrom3_hpc.data.synthetic import SyntheticSource
    from conftest import SMALL_LAYOUT

    layout = dict(SMALL_LAYOUT, compression="lz4")  # compressed chunk files are opened again on every read
    path = tmp_path / "s.zarr"
    ingest(SyntheticSource(160, seed=0), path, IngestOptions(on_error="skip", progress=False, layout_kw=layout))
    batches = TrimodalBatches(LoaderSpec(str(path), batch_size=16))
    batches._cache_cap = 2  # as in a store of more chunks than the decoded-chunk cache holds
    first = [b["label"] for b in epoch_loader(batches, 0)]
    ingest(SyntheticSource(160, seed=seed), path, IngestOptions(on_error="skip", overwrite=True, progress=False,
                                                                layout_kw=layout))
    if seed == 0:
        again = [b["label"] for b in epoch_loader(batches, 0)]
        assert all(torch.equal(a, b) for a, b in zip(first, again))
    else:
        with pytest.raises(StoreError, match="rebuilt or replaced while this job read it.*rerun the job"):
            list(epoch_loader(batches, 1))
    batches.close()


def test_a_chunk_first_read_after_a_rebuild_in_place_is_reported_as_a_rebuild(tmp_path):
    """Catches a chunk file this process had not read before the store was rebuilt in place reported as damaged
    (exit 3, "rerun verify"): its digest differs because the store's own table changed, not the file."""
    from astrom3_hpc.data.ingest import IngestOptions, ingest
    from astrom3_hpc.data.synthetic import SyntheticSource
    from conftest import SMALL_LAYOUT

    path = build_synthetic_store(tmp_path / "s.zarr", n=160)
    store = Store(path, check_chunks=False)
    reader = ChunkReader(store.array("spec"), store.digests("spec"))
    reader.read(0)
    ingest(SyntheticSource(160, seed=7), path, IngestOptions(on_error="skip", overwrite=True, progress=False,
                                                             layout_kw=SMALL_LAYOUT))
    with pytest.raises(StoreError, match="rebuilt or replaced while this job read it") as e:
        reader.read(5)
    assert not isinstance(e.value, ChecksumError)


def test_sharded_store_is_checked_too(tmp_path):
    from astrom3_hpc.data.ingest import IngestOptions, ingest
    from astrom3_hpc.data.synthetic import SyntheticSource

    path = tmp_path / "sharded.zarr"
    ingest(SyntheticSource(128, seed=0), path, IngestOptions(progress=False, layout_kw=dict(
        chunk_objects=16, table_chunk=64, lc_chunk=4096, shard_chunks=2)))
    assert main(["verify", str(path)]) == 0
    _scribble(next((path / "spec" / "c").rglob("*/0/0")), offset=200_000)
    with pytest.raises(ChecksumError, match="'spec' is damaged"):
        _epoch(path)


def test_the_sources_own_ids_are_checked_like_the_arrays(feat_store, tmp_path, capsys):
    """object_names.json (a source's string ids by row) sat outside the checksum table: lost, it turned every
    predictions file's ids into row numbers; replaced by another store's, it gave wrong ids; verify said intact."""
    from lightcurve_tables import private_copy

    from astrom3_hpc.data.store import object_names

    store, s = private_copy(feat_store, tmp_path)
    names = store / "object_names.json"
    assert object_names(s)[0] == json.loads(names.read_text())[0] and main(["verify", str(store)]) == 0
    good = names.read_text()
    for bad in (None, json.dumps(list(reversed(json.loads(good))))):
        names.unlink() if bad is None else names.write_text(bad)
        with pytest.raises(ChecksumError, match=f"{names}: {'missing' if bad is None else 'changed'}"):
            object_names(Store(store))
        capsys.readouterr()
        assert main(["verify", str(store)]) == 3 and str(names) in capsys.readouterr().out
    names.write_text(good)
    assert main(["verify", str(store)]) == 0
