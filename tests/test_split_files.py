"""Published split files are kept by ingestion (issue 11 item 1): exact memberships for every (subset, seed)
present, generated splits for the rest, marked as such; bad split files are clear errors with nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from astrom3_hpc.data.ingest import IngestOptions, ingest
from astrom3_hpc.data.split_files import SplitFileError, read_split_dir
from astrom3_hpc.data.store import Store
from astrom3_hpc.data.synthetic import SyntheticSource
from fixtures_raw import write_astrom3_raw_layout, write_split_files

ASTROM3 = str(Path(sys.executable).parent / "astrom3")
SMALL = ["--chunk-objects", "8", "--table-chunk", "32", "--lc-chunk", "2048", "--no-progress"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ASTROM3, *args], capture_output=True, text=True, timeout=300)


def _ids(store: Store, seed: int, subset: str, split: str) -> set[int]:
    return set(store.root["object_id"][:][store.split(seed, subset, split)].tolist())


def _three_way(ids: np.ndarray, rng) -> dict[str, list[int]]:
    p = rng.permutation(ids)
    n = len(p) // 10
    return {"train": p[2 * n:].tolist(), "val": p[:n].tolist(), "test": p[n:2 * n].tolist()}


def _nested(full: dict[str, list[int]], rng, keep: float = 0.4) -> dict[str, list[int]]:
    return {k: rng.choice(v, size=max(1, int(keep * len(v))), replace=False).tolist() for k, v in full.items()}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A 60-object copy of the authors' layout with published full/42 (the fixture's own), full/0, sub10/42 and
    sub25/0 split files."""
    lay = write_astrom3_raw_layout(tmp_path_factory.mktemp("raw") / "AstroM3Dataset", n_objects=60, seed=3,
                                   with_nan_meta=False)
    rng = np.random.default_rng(7)
    ids = np.array([o["object_id"] for o in lay["objects"]])
    full42 = {s: [o["object_id"] for o in lay["objects"] if o["split"] == s] for s in ("train", "val", "test")}
    full0 = _three_way(ids, rng)
    pub = {("full", 42): full42, ("full", 0): full0, ("sub10", 42): _nested(full42, rng),
           ("sub25", 0): _nested(full0, rng)}
    for (subset, seed), parts in pub.items():
        if (subset, seed) != ("full", 42):
            write_split_files(lay, subset, seed, parts)
    return lay, pub


def test_published_splits_are_kept_and_the_rest_generated(raw, tmp_path):
    lay, pub = raw
    out = tmp_path / "astrom3.zarr"
    r = run("ingest", "astrom3-raw", "--root", str(lay["root"]), "--out", str(out), *SMALL)
    assert r.returncode == 0, r.stderr[-2000:]
    s = Store(out)
    for (subset, seed), parts in pub.items():
        for split, members in parts.items():
            assert _ids(s, seed, subset, split) == set(members), (subset, seed, split)
        assert s.attrs["splits"][f"seed{seed}/{subset}"]["origin"] == "published"
    origins = s.attrs["splits"]
    assert origins["seed66/full"]["origin"] == "generated" and origins["seed0/sub10"]["origin"] == "generated"
    # A generated sub-X of a published full split is capped from it: nested, split by split.
    for split in ("train", "val", "test"):
        assert _ids(s, 0, "sub10", split) <= set(pub[("full", 0)][split])
        assert _ids(s, 0, "sub10", split)
    # The seed-0 z-score statistics come from the published seed-0 train split.
    rows0 = s.split(0, "full", "train")
    np.testing.assert_allclose(s.stats(0)["meta_mean"], s.root["meta"][:][rows0].mean(0), rtol=1e-5, atol=1e-5)
    info = run("info", str(out))
    assert info.returncode == 0, info.stderr
    line = next(ln for ln in info.stdout.splitlines() if ln.split()[:2] == ["0", "sub25"])
    assert "published" in line and str(Path("splits") / "sub25" / "0") in line
    assert "generated" in next(ln for ln in info.stdout.splitlines() if ln.split()[:2] == ["66", "full"])


def _bad_copy(lay, tmp_path, subset, seed, parts):
    alt = tmp_path / "alt"
    write_split_files(lay, subset, seed, parts, root=alt)
    for s, p in lay["split_files"].items():  # --splits-from replaces ROOT/splits: give it full/42 too
        (alt / "full" / "42").mkdir(parents=True, exist_ok=True)
        (alt / "full" / "42" / f"{s}.csv").write_bytes(Path(p).read_bytes())
    return alt


@pytest.mark.parametrize("case", ["unknown", "duplicate", "not_nested", "no_id_column"])
def test_bad_split_files_are_clear_errors_and_write_nothing(raw, tmp_path, case):
    lay, pub = raw
    full0 = {k: list(v) for k, v in pub[("full", 0)].items()}
    if case == "unknown":
        full0["test"] = full0["test"] + [123456789012345]
        alt, expect = _bad_copy(lay, tmp_path, "full", 0, full0), ["object 123456789012345", "full/0/test.csv"]
    elif case == "duplicate":
        full0["test"] = full0["test"] + [full0["train"][0]]
        alt = _bad_copy(lay, tmp_path, "full", 0, full0)
        expect = [f"object {full0['train'][0]} is in both", "full/0/train.csv", "full/0/test.csv"]
    elif case == "not_nested":
        sub = {"train": [full0["test"][0]], "val": full0["val"][:1], "test": full0["test"][1:2]}
        alt = _bad_copy(lay, tmp_path, "full", 0, full0)
        write_split_files(lay, "sub50", 0, sub, root=alt)
        expect = [f"object {full0['test'][0]} is not in the train split", "sub50/0/train.csv", "nested"]
    else:
        alt = _bad_copy(lay, tmp_path, "full", 0, full0)
        p = alt / "full" / "0" / "val.csv"
        text = p.read_text().splitlines()
        p.write_text("\n".join([text[0].replace("id,", "source,")] + text[1:]) + "\n")
        expect = ["no object-id column", "full/0/val.csv"]
    out = tmp_path / "bad.zarr"
    r = run("ingest", "astrom3-raw", "--root", str(lay["root"]), "--out", str(out), "--splits-from", str(alt),
            *SMALL)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    for e in expect:
        assert e in r.stderr, (e, r.stderr)
    assert not out.exists() and not list(tmp_path.glob(".bad.zarr.tmp-*"))


def test_splits_from_serves_any_source(tmp_path):
    """--splits-from is generic: a synthetic store with user split files for seed 12 keeps them exactly."""
    src = SyntheticSource(120, seed=4, missing_rate=0.0)
    ids = np.array([src.get(i).object_id for i in range(len(src))])
    rng = np.random.default_rng(0)
    parts = _three_way(ids, rng)
    d = tmp_path / "splits" / "full" / "12"
    d.mkdir(parents=True)
    for split, members in parts.items():
        (d / f"{split}.csv").write_text("object_id,comment\n" + "".join(f"{m},x\n" for m in members))
    out = tmp_path / "syn.zarr"
    ingest(src, out, IngestOptions(progress=False, splits_from=tmp_path / "splits",
                                   layout_kw=dict(chunk_objects=16, table_chunk=64, lc_chunk=4096)))
    s = Store(out)
    for split, members in parts.items():
        assert _ids(s, 12, "full", split) == set(members)
    assert s.attrs["splits"]["seed12/full"]["origin"] == "published"
    assert s.attrs["splits"]["seed42/full"]["origin"] == "generated"
    # A published sub-X split without its seed's full split is refused before anything is written.
    write_split_files({"split_files": {}, "root": tmp_path}, "sub10", 66, {k: v[:2] for k, v in parts.items()},
                      root=tmp_path / "splits")
    with pytest.raises(SplitFileError, match="needs the published full split of seed 66"):
        read_split_dir(tmp_path / "splits")
    with pytest.raises(SplitFileError):
        ingest(src, tmp_path / "x.zarr", IngestOptions(progress=False, splits_from=tmp_path / "splits"))
    assert not (tmp_path / "x.zarr").exists()


def _write(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")


def test_text_ids_own_id_column_and_unknown_ids_for_sources_that_name_objects(tmp_path):
    """The one reader also serves `ingest lightcurves`: ids in a column the source names, parsed its way
    (text, "00123" == "123"), DIR or DIR/splits, and ids that are not objects skipped when asked."""
    from astrom3_hpc.data.sources.points_table import norm_id
    from astrom3_hpc.data.split_files import lookup_rows

    base = tmp_path / "splits" / "full" / "42"
    _write(base / "train.csv", "name,other", ["OGLE-1,x", "00007,y", "OGLE-3,z"])
    _write(base / "val.csv", "name", ["OGLE-4"])
    _write(base / "test.csv", "name", ["OGLE-5", "NOT-A-STAR"])
    ps = read_split_dir(tmp_path, id_column="name", parse=norm_id)  # the folder holding splits/
    assert ps.ids[("full", 42)]["train"].tolist() == ["OGLE-1", "7", "OGLE-3"]
    row_of = {k: i for i, k in enumerate(["OGLE-5", "7", "OGLE-1", "OGLE-3", "OGLE-4"])}
    with pytest.raises(SplitFileError, match=r"test\.csv: object NOT-A-STAR is not in"):
        lookup_rows(ps, ("full", 42), row_of)
    rows, ignored = lookup_rows(ps, ("full", 42), row_of, skip_unknown=True)
    assert {k: v.tolist() for k, v in rows.items()} == {"train": [2, 1, 3], "val": [4], "test": [0]}
    assert len(ignored) == 1 and ignored[0].endswith("test.csv:NOT-A-STAR")
    # The generic checks hold for text ids too: one object in two splits is an error naming both files.
    _write(base / "val.csv", "name", ["OGLE-1"])
    with pytest.raises(SplitFileError, match=r"object OGLE-1 is in both .*train\.csv and .*val\.csv"):
        read_split_dir(tmp_path / "splits", id_column="name", parse=norm_id)
    # Integer ids (the default parser) cannot read these files: the bad cell is named.
    with pytest.raises(SplitFileError, match=r"train\.csv:2: not an object id: 'OGLE-1'"):
        read_split_dir(tmp_path, id_column="name")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_a_sub_x_split_outside_its_full_split_is_refused_in_every_split(tmp_path, split):
    """Catches the nesting check looking at train alone: a sub-X test (or val) file listing an object of the full
    split's train would score a model on objects it (or its pretraining) trained on."""
    full = {"train": list(range(10)), "val": [10, 11], "test": [12, 13]}
    sub = {"train": [0, 1], "val": [10], "test": [12]}
    sub[split] = sub[split] + [5 if split != "train" else 11]
    for subset, sets in (("full", full), ("sub50", sub)):
        d = tmp_path / subset / "42"
        d.mkdir(parents=True)
        for s, ids in sets.items():
            (d / f"{s}.csv").write_text("id\n" + "".join(f"{i}\n" for i in ids))
    with pytest.raises(SplitFileError, match=rf"sub50/42/{split}\.csv: object (5|11) is not in the {split} split"):
        read_split_dir(tmp_path)
