"""Fold resampling (data.lc_fold_resamples): training batches carry the fold of a random subset of each object's
points, one of K cached per object; evaluation folds every point. Real stores, the real loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_lc_features import _lc_store, private_copy

from astrom3_hpc.core.config import ConfigError, load_config
from astrom3_hpc.data import lc_folds
from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches
from astrom3_hpc.data.store import Store


@pytest.fixture(scope="module")
def fold_store(tmp_path_factory):
    return _lc_store(tmp_path_factory.mktemp("folds"))


def test_resampled_folds_are_fixed_per_object_and_all_points_give_the_full_fold(fold_store, tmp_path, monkeypatch):
    s = Store(fold_store)
    rows = np.arange(s.n_objects)
    full = lc_folds.store_folds(s, rows)
    every = lc_folds.store_resampled_folds(s, rows, 3, 1.0)
    np.testing.assert_array_equal(every, np.repeat(full[:, None], 3, axis=1))
    half = lc_folds.store_resampled_folds(s, rows, 3, 0.5)
    # A different fold per draw and per object, each still a fold (occupancy 0/1).
    assert not np.allclose(half[:, 0], half[:, 1]) and not np.allclose(half[:, 0], full)
    assert set(np.unique(half[:, :, 1])) <= {0.0, 1.0}
    # The subsets belong to the object, not to the block of rows it was computed in.
    np.testing.assert_array_equal(lc_folds.store_resampled_folds(s, rows[5:9], 3, 0.5), half[5:9])

    store_dir, own = private_copy(fold_store, tmp_path)
    cached = lc_folds.cached_resampled_folds(own, 3, 0.5)
    np.testing.assert_allclose(cached, half, rtol=1e-6, atol=1e-6)
    names = sorted(p.name for p in (store_dir / "cache").iterdir())
    assert len(names) == 1 and names[0].startswith("lc_fold_resampled-k3-f0.5-")

    def no_compute(*a, **k):
        raise AssertionError("resampled folds recomputed although cached")

    monkeypatch.setattr(lc_folds, "store_resampled_folds", no_compute)
    np.testing.assert_array_equal(lc_folds.cached_resampled_folds(Store(store_dir), 3, 0.5), cached)


def test_a_sparse_light_curve_keeps_all_its_points(fold_store):
    s = Store(fold_store)
    # A fraction so small that no subset reaches MIN_RESAMPLED_POINTS: every draw is the full fold.
    tiny = lc_folds.store_resampled_folds(s, np.arange(3), 2, 1e-4)
    np.testing.assert_array_equal(tiny, np.repeat(lc_folds.store_folds(s, np.arange(3))[:, None], 2, axis=1))


def test_training_batches_draw_resampled_folds_and_evaluation_folds_every_point(fold_store, tmp_path):
    store_dir, own = private_copy(fold_store, tmp_path)
    k = 4
    spec = dict(batch_size=8, use_rfr_score=False, lc_fold=True)
    plain = TrimodalBatches(LoaderSpec(str(store_dir), **spec))
    resampled = TrimodalBatches(LoaderSpec(str(store_dir), lc_fold_resamples=k, **spec))
    draws = np.nan_to_num(lc_folds.cached_resampled_folds(own, k, 0.5))
    picked = []
    for epoch in (0, 1):
        for i, rows in enumerate(resampled.batch_rows(epoch)):
            a, b = plain.make_batch(rows, epoch, i), resampled.make_batch(rows, epoch, i)
            # Only the fold changes: the windows are drawn first, from the same stream.
            assert torch.equal(a["lc"], b["lc"]) and torch.equal(a["lc_mask"], b["lc_mask"])
            for j, r in enumerate(rows):
                hit = [m for m in range(k) if np.array_equal(b["lc_fold"][j].numpy(), draws[r, m])]
                assert hit, f"row {r}: the batch's fold is none of its {k} resampled folds"
                picked.append(hit[0])
    assert len(set(picked)) == k  # every draw is used
    # Evaluation loaders ignore the setting: the fold of every point.
    val = TrimodalBatches(LoaderSpec(str(store_dir), split="val", train=False, lc_fold_resamples=k, **spec))
    rows = val.batch_rows(0)[0]
    want = np.nan_to_num(lc_folds.cached_folds(own))[rows]
    assert torch.equal(val.make_batch(rows, 0, 0)["lc_fold"], torch.from_numpy(want))


@pytest.mark.parametrize("override, key", [("data.lc_fold_resamples=-1", "data.lc_fold_resamples"),
                                           ("data.lc_fold_resample_fraction=0", "data.lc_fold_resample_fraction"),
                                           ("data.lc_fold_resample_fraction=1.5", "data.lc_fold_resample_fraction"),
                                           ("data.buffer_chunks=0", "data.buffer_chunks"),
                                           ("data.streams=0", "data.streams")])
def test_bad_data_settings_are_refused_by_name(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])
