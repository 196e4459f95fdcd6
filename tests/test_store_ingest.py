"""Ingestion into the Zarr store: round trips, atomicity, bad input, and MPI builds equal to serial ones."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from astrom3_hpc.data.ingest import IngestError, IngestOptions, ingest
from astrom3_hpc.data.preprocess import preprocess
from astrom3_hpc.data.raw import BadInputError
from astrom3_hpc.data.store import SCHEMA_VERSION, Store, StoreError
from astrom3_hpc.data.synthetic import SyntheticSource
from conftest import SMALL_LAYOUT, built_before_checksums


class Corrupting:
    """A real generator whose chosen objects are broken the ways real files break."""

    def __init__(self, n, faults):
        self.inner = SyntheticSource(n, seed=3, missing_rate=0.0)
        self.faults = faults

    def __len__(self):
        return len(self.inner)

    def describe(self):
        return {"name": "corrupting", **self.inner.describe()}

    def class_names(self):
        return self.inner.class_names()

    def get(self, i):
        obj = self.inner.get(i)
        kind = self.faults.get(i)
        obj.source = f"obj{i}.dat"
        if kind == "missing_file":
            raise BadInputError(obj.object_id, f"lc/obj{i}.dat", "file not found")
        if kind == "empty_lc":
            obj.lc = np.zeros((0, 3))
        if kind == "flat_spectrum":
            obj.spec_flux = np.full_like(obj.spec_flux, 2.0)
        if kind == "nan_meta":
            obj.meta[5] = np.nan
        return obj


def test_round_trip_values_equal_preprocessing(tiny_store):
    s = Store(tiny_store)
    src = SyntheticSource(640, seed=0)
    assert s.attrs["schema_version"] == SCHEMA_VERSION and s.n_objects == 640
    assert s.attrs["provenance"]["source"]["seed"] == 0
    skipped = {d["index"] for d in s.skipped()}
    r = s.root
    for i in [0, 1, 17, 255, 639]:
        if i in skipped:
            continue
        pre, present = preprocess(src.get(i))
        a, b = s.offsets[i], s.offsets[i + 1]
        np.testing.assert_array_equal(r["lc/values"][a:b], pre.lc_values)
        np.testing.assert_array_equal(r["spec"][i], pre.spec)
        np.testing.assert_array_equal(r["meta"][i], pre.meta)
        np.testing.assert_array_equal(r["aux"][i], pre.aux)
        assert r["object_id"][i] == src.get(i).object_id and r["label"][i] == src.get(i).label


def test_splits_and_stats_stored_for_every_seed(tiny_store):
    s = Store(tiny_store)
    valid = s.root["valid"][:]
    for seed in (42, 0, 66, 12, 123):
        tr, va, te = (s.split(seed, "full", k) for k in ("train", "val", "test"))
        assert not set(tr) & set(te) and not set(tr) & set(va) and not set(va) & set(te)
        assert valid[np.concatenate([tr, va, te])].all()
        st = s.stats(seed)
        np.testing.assert_allclose(st["meta_mean"], s.root["meta"][:][tr].mean(0), rtol=1e-4, atol=1e-5)
        assert len(s.split(seed, "sub10", "train")) < len(tr)


def test_store_chunks_are_at_least_a_megabyte_by_default():
    from astrom3_hpc.data.store import Layout

    lay = Layout(n_objects=1)
    assert lay.chunk_objects * 3 * 2575 * 4 >= 1_000_000
    assert lay.table_chunk * 34 * 4 >= 1_000_000
    assert lay.lc_chunk * 3 * 4 >= 250_000  # points axis: sized to one spectra chunk's light curves


def test_unknown_compression_is_refused_by_name(tmp_path):
    from astrom3_hpc.data.store import Layout

    with pytest.raises(ValueError, match="compression must be one of .* got 'zstd'"):
        Layout(n_objects=1, compression="zstd").validate()
    with pytest.raises(IngestError, match="compression"):
        ingest(SyntheticSource(10, seed=0), tmp_path / "x.zarr",
               IngestOptions(progress=False, layout_kw={"compression": "zstd"}))
    assert not (tmp_path / "x.zarr").exists()


def test_cli_compression_choices_are_the_store_layouts():
    from astrom3_hpc.cli import build_parser
    from astrom3_hpc.data.store import COMPRESSIONS, Layout

    ingest_parser = next(a for a in build_parser()._actions if a.dest == "command").choices["ingest"]
    synthetic = next(a for a in ingest_parser._actions if a.dest == "source").choices["synthetic"]
    opt = next(a for a in synthetic._actions if a.dest == "compression")
    assert tuple(opt.choices) == COMPRESSIONS and opt.default == Layout(n_objects=1).compression == "none"


@pytest.mark.parametrize("kind,reason", [("missing_file", "file not found"), ("empty_lc", "empty light curve"),
                                          ("flat_spectrum", "flat spectrum"), ("nan_meta", "NaN")])
def test_bad_input_fails_naming_object_and_file_and_leaves_nothing(tmp_path, kind, reason):
    src = Corrupting(40, {7: kind})
    out = tmp_path / "s.zarr"
    with pytest.raises(IngestError) as e:
        ingest(src, out, IngestOptions(progress=False, layout_kw=SMALL_LAYOUT))
    oid = src.inner.get(7).object_id
    assert f"object {oid}" in str(e.value) and "obj7.dat" in str(e.value) and reason in str(e.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_skip_writes_a_report_and_keeps_the_rest(tmp_path):
    faults = {3: "missing_file", 9: "empty_lc", 20: "flat_spectrum", 33: "nan_meta"}
    out = tmp_path / "s.zarr"
    summary = ingest(Corrupting(40, faults), out, IngestOptions(on_error="skip", progress=False,
                                                                  layout_kw=SMALL_LAYOUT))
    s = Store(out)
    report = json.loads((out / "skipped.json").read_text())
    assert [d["index"] for d in report] == sorted(faults)
    assert summary["n_skipped"] == 4
    assert not s.root["valid"][:][sorted(faults)].any()
    for seed in (42, 0):
        for k in ("train", "val", "test"):
            assert not set(s.split(seed, "full", k)) & set(faults)


def test_existing_store_is_not_overwritten_without_flag(tiny_store):
    with pytest.raises(FileExistsError, match="already exists"):
        ingest(SyntheticSource(10), tiny_store, IngestOptions(progress=False))


def test_overwrite_replaces_only_a_store(tmp_path):
    data = tmp_path / "data"
    (data / "lcs").mkdir(parents=True)
    (data / "lcs" / "a.dat").write_text("1 2 3\n")
    r = subprocess.run([str(_venv_bin() / "astrom3"), "ingest", "synthetic", "-n", "40", "--out", str(data),
                        "--overwrite", "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 2 and f"{data} exists and is not an astrom3 store" in r.stderr, r.stderr
    assert (data / "lcs" / "a.dat").read_text() == "1 2 3\n"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep")
    with pytest.raises(IngestError, match="notes.txt exists and is not an astrom3 store"):
        ingest(SyntheticSource(40), a_file, IngestOptions(overwrite=True, progress=False, layout_kw=SMALL_LAYOUT))
    assert a_file.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]
    out = tmp_path / "s.zarr"  # a store, on the other hand, is replaced
    for seed in (1, 2):
        ingest(SyntheticSource(40, seed=seed), out, IngestOptions(on_error="skip", overwrite=True, progress=False,
                                                                  layout_kw=SMALL_LAYOUT))
    assert Store(out).attrs["provenance"]["source"]["seed"] == 2


def test_interrupted_build_never_looks_finished(tmp_path):
    class Exploding(Corrupting):
        def get(self, i):
            if i == 30:
                raise KeyboardInterrupt
            return super().get(i)

    out = tmp_path / "s.zarr"
    with pytest.raises(KeyboardInterrupt):
        ingest(Exploding(40, {}), out, IngestOptions(progress=False, layout_kw=SMALL_LAYOUT))
    assert not out.exists()
    leftovers = list(tmp_path.iterdir())
    assert all(p.name.startswith(".s.zarr.tmp-") for p in leftovers)
    for p in leftovers:
        with pytest.raises(StoreError, match="not marked complete"):
            Store(p)


@pytest.mark.parametrize("name,other", [("s[1].zarr", "s1.zarr"), ("s*.zarr", "sb.zarr"), ("s?.zarr", "sb.zarr")])
def test_clean_leaves_other_stores_temporary_directories_alone(tmp_path, name, other):
    from astrom3_hpc.data.tempdirs import clean

    mine, theirs = tmp_path / f".{name}.tmp-1234abcd", tmp_path / f".{other}.tmp-5678ef01"
    mine.mkdir()
    theirs.mkdir()
    assert clean(tmp_path / name) == ([mine], None)
    assert theirs.is_dir() and not mine.exists()


def test_a_signal_between_replace_dirs_renames_waits_for_both(tmp_path, monkeypatch, caplog):
    """Catches the gap of `ingest --overwrite` (old store moved aside, new one not yet in): a SIGTERM there ended
    the process with no store at --out, the build's cleanup deleted the new one, and clean-store-temp the old.
    Once the new store is in, the signal is logged, not raised: raised, the command said "interrupted" (exit 130
    or 143) of a store it had replaced."""
    import signal

    from astrom3_hpc.core import atomic

    dst, src = tmp_path / "s.zarr", tmp_path / ".s.zarr.tmp-new"
    for d, text in ((dst, "old"), (src, "new")):
        d.mkdir()
        (d / "f").write_text(text)
    real, moved = os.replace, []

    def replace_then_signal(a, b):
        real(a, b)
        moved.append(b)
        if len(moved) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    def stop(signum, frame):
        raise KeyboardInterrupt(f"stopped with {len(moved)} rename(s) done")

    monkeypatch.setattr(atomic.os, "replace", replace_then_signal)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with caplog.at_level("WARNING", logger="astrom3"):
            atomic.replace_dir(src, dst)
        assert signal.getsignal(signal.SIGTERM) is stop  # the command's own handler again, for what follows
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert (dst / "f").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["s.zarr"]
    assert len(moved) == 2 and f"SIGTERM arrived while the new {dst} was being written; it is complete" in caplog.text


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_store_that_appears_while_an_ingest_runs_is_kept_without_overwrite(tmp_path, tiny_store, monkeypatch,
                                                                             overwrite):
    """Two ingests into one --out: the "already exists" check is at the build's start, and the final move used to
    replace whatever the other had finished meanwhile. The other's store appears here just before the move."""
    from astrom3_hpc.data import ingest as ingest_mod

    out, real = tmp_path / "s.zarr", ingest_mod.replace_dir

    def other_finishes_first(src, dst, **kw):
        shutil.copytree(tiny_store, dst)
        real(src, dst, **kw)

    monkeypatch.setattr(ingest_mod, "replace_dir", other_finishes_first)
    opts = IngestOptions(on_error="skip", overwrite=overwrite, progress=False, layout_kw=SMALL_LAYOUT)
    if overwrite:  # today's behaviour: --overwrite replaces it
        ingest(SyntheticSource(40, seed=5), out, opts)
        assert Store(out).n_objects == 40
    else:
        with pytest.raises(IngestError) as e:
            ingest(SyntheticSource(40, seed=5), out, opts)
        msg = str(e.value)
        assert msg.startswith(f"--out {out}: something else created it while this ingest ran") and "\n" not in msg
        assert "nothing of it was changed" in msg and Store(out).fingerprint == Store(tiny_store).fingerprint
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]  # no temporary directory left


def test_replace_dir_without_overwrite_leaves_what_the_rename_finds(tmp_path, monkeypatch):
    """The rename itself must refuse: on NFS a check before it can see a stale cache, or the other build's store
    can land between check and rename."""
    from astrom3_hpc.core import atomic

    dst, src = tmp_path / "s.zarr", tmp_path / ".s.zarr.tmp-new"
    for d, text in ((dst, "theirs"), (src, "mine")):
        d.mkdir()
        (d / "f").write_text(text)
    real, calls = os.path.lexists, []

    def stale_first(p):  # the check before the rename sees nothing, as a stale NFS cache can
        calls.append(p)
        return len(calls) > 1 and real(p)

    monkeypatch.setattr(atomic.os.path, "lexists", stale_first)
    with pytest.raises(FileExistsError, match="created by another process while this one built it; it was left"):
        atomic.replace_dir(src, dst, overwrite=False)
    assert (dst / "f").read_text() == "theirs" and (src / "f").read_text() == "mine"
    shutil.rmtree(dst)
    atomic.replace_dir(src, dst, overwrite=False)
    assert (dst / "f").read_text() == "mine" and not src.exists()


def test_clean_puts_back_the_only_copy_a_killed_replacement_left(tmp_path, capsys):
    from astrom3_hpc.cli import main

    old = tmp_path / ".s.zarr.old-4242-deadbeef"
    old.mkdir()
    (old / "f").write_text("old")
    (tmp_path / ".s.zarr.tmp-1234abcd").mkdir()  # the new build, killed before it was moved in
    # Readers of the missing store point at the copy, not at a new ingest.
    assert main(["info", str(tmp_path / "s.zarr")]) == 2
    assert f"but {old} holds the store" in capsys.readouterr().err
    assert main(["clean-store-temp", str(tmp_path / "s.zarr")]) == 0
    out = capsys.readouterr().out
    assert f"put back {old}" in out and "removed" in out and ".s.zarr.tmp-1234abcd" in out
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"] and (tmp_path / "s.zarr" / "f").read_text() == "old"


def test_wrong_schema_version_and_missing_chunk_are_refused(tmp_path, tiny_store):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, copy)
    g = zarr.open_group(str(copy), mode="r+")
    g.attrs["schema_version"] = 99
    with pytest.raises(StoreError, match="schema_version 99"):
        Store(copy)
    g.attrs["schema_version"] = SCHEMA_VERSION
    Store(copy)
    chunk = next(p for p in (copy / "spec" / "c").rglob("*") if p.is_file())
    chunk.unlink()
    with pytest.raises(StoreError, match="of array 'spec' is damaged \\(file missing\\)"):
        Store(copy)
    built_before_checksums(copy)  # chunk files are counted
    with pytest.raises(StoreError, match="array 'spec' has .* chunk files on disk"):
        Store(copy)


def test_sharded_store_reads_the_same(tmp_path, tiny_store):
    out = tmp_path / "sharded.zarr"
    ingest(SyntheticSource(640, seed=0), out, IngestOptions(on_error="skip", progress=False,
                                                              layout_kw={**SMALL_LAYOUT, "shard_chunks": 4}))
    a, b = Store(tiny_store), Store(out)
    assert b.root["spec"].shards is not None
    np.testing.assert_array_equal(a.root["spec"][100:140], b.root["spec"][100:140])


def _venv_bin() -> Path:
    return Path(sys.executable).parent


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_mpi_build_equals_serial_build(tmp_path, tiny_store):
    out = tmp_path / "mpi.zarr"
    env = {**os.environ, "PATH": f"{_venv_bin()}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    cmd = ["mpiexec", "-n", "2", "astrom3", "ingest", "synthetic", "-n", "640", "--seed", "0", "--out", str(out),
           "--missing-rate", "0.003",  # the Python generator's default, as tiny_store
           "--on-error", "skip", "--no-progress", "--chunk-objects", "16", "--table-chunk", "64",
           "--lc-chunk", "4096"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = Store(tiny_store), Store(out)
    assert b.attrs["provenance"]["mpi_ranks"] == 2
    for name in ["object_id", "label", "valid", "present", "lc/length", "lc/stats", "lc/offsets", "lc/values",
                 "aux", "meta", "spec"]:
        np.testing.assert_array_equal(a.root[name][:], b.root[name][:], err_msg=name)
    for seed in (42, 123):
        for sub in ("full", "sub10"):
            np.testing.assert_array_equal(a.split(seed, sub, "train"), b.split(seed, sub, "train"))
        for k, v in a.stats(seed).items():
            np.testing.assert_array_equal(v, b.stats(seed)[k])
    assert a.skipped() == b.skipped()


def test_cli_errors_are_clear_and_nonzero(tmp_path):
    r = subprocess.run([str(_venv_bin() / "astrom3"), "info", str(tmp_path / "nope.zarr")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "nope.zarr does not exist (moved? give its new path" in r.stderr
    (tmp_path / "empty.zarr").mkdir()
    r = subprocess.run([str(_venv_bin() / "astrom3"), "info", str(tmp_path / "empty.zarr")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "empty.zarr is not a Zarr v3 store" in r.stderr


def test_cli_builds_a_compressed_store_and_info_shows_its_layout(tmp_path):
    import os

    out = tmp_path / "small.zarr"
    astrom3 = str(_venv_bin() / "astrom3")
    r = subprocess.run([astrom3, "ingest", "synthetic", "-n", "40", "--out", str(out), "--compression", "lz4hc",
                        "--chunk-objects", "16", "--table-chunk", "64", "--lc-chunk", "4096", "--no-progress",
                        "--on-error", "skip"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([astrom3, "info", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    layout = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("layout:"))[len("layout:"):])
    assert layout["compression"] == "lz4hc" and layout["chunk_objects"] == 16
    # A reader that went away (`astrom3 info store | head -1`) ends the command quietly, without a traceback.
    read_end, write_end = os.pipe()
    os.close(read_end)
    r = subprocess.run([astrom3, "info", str(out)], stdout=write_end, stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    assert r.returncode == 141 and "Traceback" not in r.stderr, r.stderr
