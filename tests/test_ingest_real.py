"""Ingestion of real survey files through the CLI: the AstroM3 raw layout (written by the fixtures in the exact
formats), and the shared ZTF, Stripe 82 and LAMOST samples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches
from astrom3_hpc.data.preprocess import preprocess
from astrom3_hpc.data.sources import AstroM3RawSource
from astrom3_hpc.data.store import Store
from conftest import REALDATA as REAL
from fixtures_raw import corrupt_light_curve, corrupt_spectrum, write_astrom3_raw_layout

ASTROM3 = str(Path(sys.executable).parent / "astrom3")
SMALL = ["--chunk-objects", "8", "--table-chunk", "32", "--lc-chunk", "2048", "--no-progress"]


def ingest(source: str, root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([ASTROM3, "ingest", source, "--root", str(root), "--out", str(out), *SMALL, *extra],
                          capture_output=True, text=True, timeout=300)


def test_astrom3_raw_layout_round_trip_and_bad_files(tmp_path):
    lay = write_astrom3_raw_layout(tmp_path / "raw", n_objects=40, seed=1)
    bad_lc = corrupt_light_curve(lay, 5, "missing")
    bad_spec = corrupt_spectrum(lay, 9, "truncated")
    out = tmp_path / "real.zarr"

    r = ingest("astrom3-raw", lay["root"], out)
    assert r.returncode == 2 and not out.exists()
    assert "error" in r.stderr and "object " in r.stderr  # names the first bad object and its file

    r = ingest("astrom3-raw", lay["root"], out, "--on-error", "skip")
    assert r.returncode == 0, r.stderr[-2000:]
    s = Store(out)
    skipped = {d["object_id"]: d for d in s.skipped()}
    assert {bad_lc["object_id"], bad_spec["object_id"]} <= set(skipped)
    assert Path(bad_spec["spec_path"]).name in skipped[bad_spec["object_id"]]["source"]
    assert bad_lc["name"].replace(" ", "") in skipped[bad_lc["object_id"]]["source"]
    for o in lay["objects"]:
        if np.isnan(o["meta"]).any():  # the fixture's empty metadata cells
            assert "NaN" in skipped[o["object_id"]]["reason"]
    src = AstroM3RawSource(lay["root"])
    ids = s.root["object_id"][:]
    for i in range(len(src)):
        obj = src.get(i) if ids[i] not in skipped else None
        if obj is None:
            continue
        pre, present = preprocess(obj)
        assert ids[i] == obj.object_id and present.all()
        np.testing.assert_array_equal(s.root["spec"][i], pre.spec)
        a, b = s.offsets[i], s.offsets[i + 1]
        np.testing.assert_array_equal(s.root["lc/values"][a:b], pre.lc_values)


@pytest.mark.parametrize("source,folder,n,has", [
    ("ztf-vsx", "ztf_vsx", 439, (True, False, False)),
    ("stripe82", "sesar2010_rrlyrae", 483, (True, False, False)),
    ("lamost", "lamost_dr1_sample", 176, (False, True, False)),
])
def test_shared_real_samples_ingest(tmp_path, source, folder, n, has):
    out = tmp_path / f"{source}.zarr"
    r = ingest(source, REAL / folder, out, "--on-error", "skip")
    assert r.returncode == 0, r.stderr[-2000:]
    s = Store(out)
    assert s.n_objects == n
    valid = s.root["valid"][:]
    present = s.root["present"][:][valid]
    assert valid.mean() > 0.9
    assert (present == np.array(has)).all()
    if has[0]:
        lengths = np.diff(s.offsets)[valid]
        assert lengths.min() >= 1 and np.isfinite(s.root["lc/values"][:]).all()
    if has[1]:
        spec = s.root["spec"][:][valid]
        assert np.isfinite(spec).all() and np.abs(np.median(spec[:, 0], axis=1)).max() < 2.0
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["n_objects"] == n


def test_labelled_real_light_curves_feed_the_loader(tmp_path):
    out = tmp_path / "s82.zarr"
    assert ingest("stripe82", REAL / "sesar2010_rrlyrae", out, "--on-error", "skip").returncode == 0
    b = TrimodalBatches(LoaderSpec(str(out), batch_size=32))
    batch = next(b.iter_epoch(0))
    assert set(batch["label"].tolist()) <= {3, 6}  # RRAB, RRC
    assert batch["lc_mask"].sum(1).min() >= 20  # real Stripe 82 cadence: ~55-60 epochs per band
    assert not batch["present"][:, 1].any()


def test_research_layout_flags(tmp_path):
    """The authors' research layout from the CLI: catalogue CSVs per split, a photometry container and a flat
    spectra directory anywhere (--catalogue, --photometry, --spectra-dir)."""
    import shutil

    lay = write_astrom3_raw_layout(tmp_path / "raw", n_objects=20, seed=2, with_nan_meta=False)
    root = tmp_path / "research"
    cat = root / "preprocessed_data" / "full_lb"
    cat.mkdir(parents=True)
    for split, p in lay["split_files"].items():
        shutil.copy(p, cat / f"spectra_and_v_{split}.csv")
    flat = root / "lamost_flat"
    flat.mkdir()
    for o in lay["objects"]:
        shutil.copy(o["spec_path"], flat / o["spec_filename"])
    shutil.copy(lay["photometry"], root / "asassn_lcs.zip")
    out = tmp_path / "research.zarr"
    r = ingest("astrom3-raw", root, out, *[a for s in ("train", "val", "test") for a in
                                           ("--catalogue", f"{s}=preprocessed_data/full_lb/spectra_and_v_{s}.csv")],
               "--photometry", "asassn_lcs.zip", "--spectra-dir", "lamost_flat")
    assert r.returncode == 0, r.stderr[-2000:]
    s = Store(out)
    assert s.root["valid"][:].all()
    assert s.root["object_id"][:].tolist() == [o["object_id"] for o in lay["objects"]]
    src = s.attrs["provenance"]["source"]
    assert src["photometry"].startswith(str(root / "asassn_lcs.zip")) and src["spectra_dir"] == str(flat)
    # The catalogues are the seed-42 split: kept as published, not drawn again (the authors' test objects in
    # train), and the seeds no file gives are drawn.
    ids = s.root["object_id"][:]
    for split in ("train", "val", "test"):
        want = [o["object_id"] for o in lay["objects"] if o["split"] == split]
        assert sorted(ids[s.split(42, "full", split)].tolist()) == sorted(want), split
    info = s.attrs["splits"]["seed42/full"]
    assert info["origin"] == "published" and str(cat / "spectra_and_v_test.csv") in json.dumps(info)
    assert s.attrs["splits"]["seed0/full"]["origin"] == "generated"
    r = ingest("astrom3-raw", root, tmp_path / "bad.zarr", "--catalogue", "spectra_and_v_train.csv")
    assert r.returncode != 0 and "SPLIT=CSV" in r.stderr and not (tmp_path / "bad.zarr").exists()


def _write_ztf_vsx(root: Path, classes: dict[int, str], n_points: int = 40) -> None:
    """A tiny ZTF VSX folder in the shared set's format: one row per (vsx_oid, class), r-band points each."""
    import gzip

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with open(root / "ztf_vsx_objects.csv", "w") as f:
        f.write("vsx_oid,astrom3_class,period,l,b,distance\n")
        f.writelines(f"{oid},{cls},0.5,10.0,20.0,1000\n" for oid, cls in classes.items())
    with gzip.open(root / "ztf_vsx_lightcurves_long.csv.gz", "wt") as f:
        f.write("vsx_oid,filter,mjd,mag,magerr\n")
        for oid in classes:
            for t in np.sort(rng.uniform(58000, 58300, n_points)):
                f.write(f"{oid},2,{t:.5f},{15 + 0.3 * np.sin(t / 0.5) + rng.normal(0, 0.02):.4f},0.02\n")


def test_ztf_vsx_refuses_a_star_listed_twice(tmp_path):
    """Catches a repeated vsx_oid ingested twice (the copies could land in train and test)."""
    root = tmp_path / "ztf"
    _write_ztf_vsx(root, {100 + i: "RRAB" for i in range(4)})
    with open(root / "ztf_vsx_objects.csv", "a") as f:
        f.write("0102,RRAB,0.5,10.0,20.0,1000\n")  # star 102 again (row 6), written with a leading zero
    out = tmp_path / "z.zarr"
    r = ingest("ztf-vsx", root, out)
    assert r.returncode == 2 and not out.exists(), r.stderr[-2000:]
    assert "ztf_vsx_objects.csv:row 6: vsx_oid 102 listed twice (first seen at " in r.stderr
    assert "ztf_vsx_objects.csv:row 4)" in r.stderr and "Traceback" not in r.stderr


def test_ztf_vsx_thin_class_warning_names_no_option_ztf_vsx_lacks(tmp_path):
    """Catches the thin-class warning telling a ztf-vsx user to "Merge them with --class-map", an option that
    `ingest ztf-vsx` rejects."""
    root = tmp_path / "ztf"
    _write_ztf_vsx(root, {100 + i: "RRAB" if i < 10 else "RRC" for i in range(12)})
    r = ingest("ztf-vsx", root, tmp_path / "z.zarr")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "class 'RRC' (2 objects) missing from the validation or test split" in r.stderr
    assert "`astrom3 ingest lightcurves --class-map` (this source has no class map)" in r.stderr
    assert r.stderr.count("--class-map") == 1
