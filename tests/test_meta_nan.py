"""NaN metadata (issue 11 item 5): a clear error by default, or skip, or train-median imputation with a presence
mask; and the README's plain synthetic ingest works as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from astrom3_hpc.core.constants import META_COLUMNS, SPLIT_SEEDS
from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches
from astrom3_hpc.data.store import Store
from astrom3_hpc.data.synthetic import SyntheticSource

ASTROM3 = str(Path(sys.executable).parent / "astrom3")
SMALL = ["--chunk-objects", "16", "--table-chunk", "64", "--lc-chunk", "4096", "--no-progress"]


def ingest(out: Path, *extra: str, n: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([ASTROM3, "ingest", "synthetic", "-n", str(n), "--out", str(out), *SMALL, *extra],
                          capture_output=True, text=True, timeout=300)


def test_readme_plain_synthetic_ingest_works(tmp_path):
    out = tmp_path / "X.zarr"
    r = subprocess.run([ASTROM3, "ingest", "synthetic", "-n", "300", "--out", str(out)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    s = Store(out)
    assert s.root["valid"][:].all() and not s.skipped()
    assert s.attrs["provenance"]["source"]["missing_rate"] == 0.0


@pytest.fixture(scope="module")
def planted():
    """Which objects and columns the generator plants NaN in at --missing-rate 0.05 (seed 0)."""
    src = SyntheticSource(300, seed=0, missing_rate=0.05)
    nan = np.stack([~np.isfinite(src.get(i).meta) for i in range(len(src))])
    ids = [src.get(i).object_id for i in range(len(src))]
    assert 5 <= nan.any(1).sum() <= 30
    return src, nan, ids


def test_nan_metadata_fails_by_default_naming_object_and_column(tmp_path, planted):
    src, nan, ids = planted
    out = tmp_path / "fail.zarr"
    r = ingest(out, "--missing-rate", "0.05")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    first = int(np.flatnonzero(nan.any(1))[0])
    col = META_COLUMNS[int(np.flatnonzero(nan[first])[0])]
    assert f"object {ids[first]}" in r.stderr and repr(col) in r.stderr
    assert "--meta-nan impute" in r.stderr and "--meta-nan skip" in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".fail.zarr.tmp-*"))


def test_nan_metadata_skip(tmp_path, planted):
    src, nan, ids = planted
    out = tmp_path / "skip.zarr"
    r = ingest(out, "--missing-rate", "0.05", "--meta-nan", "skip")  # --on-error stays fail: only NaN skips
    assert r.returncode == 0, r.stderr[-2000:]
    s = Store(out)
    assert {d["object_id"] for d in s.skipped()} == {ids[i] for i in np.flatnonzero(nan.any(1))}
    assert (s.root["valid"][:] == ~nan.any(1)).all()


def test_nan_metadata_impute_uses_train_median_and_a_presence_mask(tmp_path, planted):
    src, nan, ids = planted
    out = tmp_path / "impute.zarr"
    r = ingest(out, "--missing-rate", "0.05", "--meta-nan", "impute")
    assert r.returncode == 0, r.stderr[-2000:]
    s = Store(out)
    assert s.root["valid"][:].all() and s.attrs["preprocessing"]["meta_nan"] == "impute"
    present = s.root["meta_present"][:]
    meta = s.root["meta"][:]
    assert (present == ~nan).all() and np.isnan(meta[~present]).all()
    for seed in SPLIT_SEEDS:
        train = s.split(seed, "full", "train")
        median = np.nanmedian(meta[train], axis=0)  # train rows of this seed only: no val/test leak
        np.testing.assert_allclose(s.root[f"stats/seed{seed}/meta_median"][:], median, rtol=1e-6)
    # The loader fills exactly the missing cells with the seed's train median, then z-scores.
    seed = 0
    b = TrimodalBatches(LoaderSpec(str(out), seed=seed, split="test", batch_size=16))
    st = s.stats(seed)
    med = s.root[f"stats/seed{seed}/meta_median"][:]
    assert np.isfinite(b.meta).all()
    rows, cols = np.nonzero(~present)
    np.testing.assert_allclose(b.meta[rows, cols], ((med - st["meta_mean"]) / st["meta_std"])[cols], rtol=1e-5)
    ok = present.all(1)
    np.testing.assert_allclose(b.meta[ok], (meta[ok] - st["meta_mean"]) / st["meta_std"], rtol=1e-5, atol=1e-6)
