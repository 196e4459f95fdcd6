"""The full-curve fold (data/lc_folds.py, view `fold_full` of the periodic encoder): the encoder's own fold applied
once per store to every point, cached like the classical features, reaching the model only when asked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_lc_features import feat_store, periodic_batch, private_copy  # noqa: F401 - feat_store is a fixture

from astrom3_hpc.core.constants import AUX_COLUMNS
from astrom3_hpc.data import lc_folds, store_cache
from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches
from astrom3_hpc.data.preprocess import DAYS_PER_YEAR


def test_full_fold_is_the_window_fold_of_every_point_and_is_cached_once(feat_store, tmp_path, monkeypatch):
    store_dir, s = private_copy(feat_store, tmp_path)
    path = store_cache.cache_path(s, "lc_fold", lc_folds.FOLDS_VERSION)
    assert not path.exists()
    folds = lc_folds.cached_folds(s)
    assert path.exists() and folds.shape == (s.n_objects, 4, lc_folds.FULL_FOLD_BINS) and np.isfinite(folds).all()
    assert [p.name for p in path.parent.iterdir()] == [path.name]

    plain = TrimodalBatches(LoaderSpec(str(store_dir), batch_size=8, use_rfr_score=False, train=False))
    rows = plain.batch_rows(0)[0]
    assert "lc_fold" not in plain.make_batch(rows, 0, 0)

    def no_compute(*a, **k):
        raise AssertionError("folds recomputed although cached")

    monkeypatch.setattr(lc_folds, "store_folds", no_compute)
    b = TrimodalBatches(LoaderSpec(str(store_dir), batch_size=8, use_rfr_score=False, train=False, lc_fold=True))
    batch = b.make_batch(rows, 0, 0)
    assert torch.equal(batch["lc_fold"], torch.from_numpy(folds[rows]))
    # These curves have 150 points, so the 200-step window holds all of them: the encoder's window fold (view
    # "fold", same function) at the store's period equals the cached fold of the whole curve.
    assert int(batch["lc_mask"].sum(1).max()) == 150
    lc = batch["lc"].double()
    days = lc[:, :, 0] * lc[:, :, 8] * DAYS_PER_YEAR
    period = torch.from_numpy(10.0 ** s.root["aux"][:, AUX_COLUMNS.index("period")][rows].astype(np.float64))
    window = lc_folds.fold_at_period_and_double(days, lc[:, :, 1], batch["lc_mask"].double(), period,
                                                lc_folds.FULL_FOLD_BINS)
    torch.testing.assert_close(window.float(), batch["lc_fold"], rtol=0, atol=1e-5)
    # A clean folded pulsation: the brightest bin first, a range of several MAD units.
    assert torch.all(batch["lc_fold"][:, 0, 0] == batch["lc_fold"][:, 0].max(1).values)
    assert torch.all(batch["lc_fold"][:, 0].amax(1) - batch["lc_fold"][:, 0].amin(1) > 1.5)


def test_fold_full_view_reads_lc_fold_and_requires_it():
    from astrom3_hpc.core.config import ModelConfig
    from astrom3_hpc.model import build_classifier
    from astrom3_hpc.model.presets import resolve
    from astrom3_hpc.model.registry import cached_inputs

    cfg = ModelConfig(preset="periodic", d_model=16, n_layers=1, n_heads=2, d_ff=32,
                      periodic_views=["time", "fold_full"], periodic_features=False)
    assert cached_inputs(resolve(cfg)) == {"lc_features": False, "lc_fold": True}
    torch.manual_seed(0)
    model = build_classifier(cfg, "photo", 3).eval()
    assert "lc_fold" in model.input_keys["photo"]
    B = 4
    batch = periodic_batch(B, lc_fold=torch.randn(B, 4, lc_folds.FULL_FOLD_BINS, requires_grad=True))
    out = model(batch)
    out.sum().backward()
    assert batch["lc_fold"].grad.abs().sum() > 0
    with pytest.raises(KeyError, match="lc_fold"):
        model({k: v for k, v in batch.items() if k != "lc_fold"})
