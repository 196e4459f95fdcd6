"""The full-curve fold (data/lc_folds.py, view `fold_full` of the periodic encoder): the encoder's own fold applied
once per store to every point, cached like the classical features, reaching the model only when asked; and its
resampled variants for training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightcurve_tables import private_copy
from test_lc_features import periodic_batch

from astrom3_hpc.core.config import ConfigError, load_config
from astrom3_hpc.core.constants import AUX_COLUMNS
from astrom3_hpc.data import lc_features, lc_folds, store_cache
from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches
from astrom3_hpc.data.preprocess import DAYS_PER_YEAR
from astrom3_hpc.data.store import Store


def test_full_fold_is_the_window_fold_of_every_point_and_is_cached_once(feat_store, tmp_path, monkeypatch):
    store_dir, s = private_copy(feat_store, tmp_path)
    path = store_cache.cache_path(s, "lc_fold", lc_folds.FOLDS_VERSION)
    assert not path.exists()
    folds = lc_folds.cached_folds(s)
    assert path.exists() and folds.shape == (s.n_objects, 4, lc_folds.FULL_FOLD_BINS) and np.isfinite(folds).all()
    assert sorted(p.name for p in path.parent.iterdir()) == [".lc_fold.lock", path.name]

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


def test_without_tokens_the_window_reaches_the_encoder_only_through_its_object_channels():
    """model.periodic_tokens false drops the Informer: the encoder is the full-curve fold, the features and the
    per-object channels, so moving the window's points changes nothing while moving the fold does."""
    from astrom3_hpc.core.config import ModelConfig
    from astrom3_hpc.data.lc_features import FEATURE_NAMES
    from astrom3_hpc.model import build_classifier
    from astrom3_hpc.model.informer import InformerEncoder

    def build(tokens: bool):
        cfg = ModelConfig(preset="periodic", d_model=16, n_layers=1, n_heads=2, d_ff=32, periodic_tokens=tokens,
                          periodic_views=["fold_full"])
        cfg.validate()
        torch.manual_seed(0)
        return build_classifier(cfg, "photo", 3).eval()

    B = 4
    batch = periodic_batch(B, lc_features=torch.randn(B, len(FEATURE_NAMES)),
                           lc_fold=torch.randn(B, 4, lc_folds.FULL_FOLD_BINS))
    batch["lc"][:, :, 1] = torch.randn(B, 200)
    moved = {**batch, "lc": batch["lc"].clone()}
    moved["lc"][:, :, 1] += torch.randn(B, 200)
    refolded = {**batch, "lc_fold": batch["lc_fold"] + 1}
    plain, with_tokens = build(False), build(True)
    enc = plain.encoders["photo"]
    assert not any(isinstance(m, InformerEncoder) for m in enc.modules())
    assert enc.out_features == 3 * 16  # object channels, features, fold
    assert enc.out_features == with_tokens.encoders["photo"].out_features - 16
    with torch.no_grad():
        out = plain(batch)
        assert torch.isfinite(out).all() and out.shape == (B, 3)
        torch.testing.assert_close(plain(moved), out, rtol=0, atol=0)
        assert not torch.allclose(plain(refolded), out)
        assert not torch.allclose(with_tokens(moved), with_tokens(batch))
    # time and phase are channels of the tokens: refused without them, naming the key to change.
    with pytest.raises(ValueError, match="model.periodic_views"):
        ModelConfig(preset="periodic", periodic_tokens=False).validate()
    with pytest.raises(ValueError, match="model.periodic_tokens"):
        ModelConfig(preset="periodic", periodic_tokens="no", periodic_views=["fold_full"]).validate()


# Fold resampling (data.lc_fold_resamples): training batches carry the fold of a random subset of each object's
# points, one of K cached per object; evaluation folds every point.

def test_resampled_folds_are_fixed_per_object_and_all_points_give_the_full_fold(feat_store, tmp_path, monkeypatch):
    s = Store(feat_store)
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

    store_dir, own = private_copy(feat_store, tmp_path)
    cached = lc_folds.cached_resampled_folds(own, 3, 0.5)
    np.testing.assert_allclose(cached, half, rtol=1e-6, atol=1e-6)
    names = [p.name for p in (store_dir / "cache").iterdir() if "resampled" in p.name and p.suffix != ".lock"]
    assert len(names) == 1 and names[0].startswith("lc_fold_resampled-k3-f0.5-")  # one file, no temporary left

    def no_compute(*a, **k):
        raise AssertionError("resampled folds recomputed although cached")

    monkeypatch.setattr(lc_folds, "store_resampled_folds", no_compute)
    np.testing.assert_array_equal(lc_folds.cached_resampled_folds(Store(store_dir), 3, 0.5), cached)


def test_a_sparse_light_curve_keeps_all_its_points(feat_store):
    s = Store(feat_store)
    # A fraction so small that no subset reaches MIN_SUBSET_POINTS: every draw is the full fold.
    tiny = lc_folds.store_resampled_folds(s, np.arange(3), 2, 1e-4)
    np.testing.assert_array_equal(tiny, np.repeat(lc_folds.store_folds(s, np.arange(3))[:, None], 2, axis=1))


def test_training_batches_draw_resampled_folds_and_evaluation_folds_every_point(feat_store, tmp_path):
    store_dir, own = private_copy(feat_store, tmp_path)
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


# Feature resampling (data.lc_feature_resampling): the classical features of the same subsets as the folds.

def test_resampled_features_are_measured_on_the_folds_subsets(feat_store, tmp_path, monkeypatch):
    s = Store(feat_store)
    rows = np.arange(s.n_objects)
    full = lc_features.store_features(s, rows)
    np.testing.assert_allclose(lc_features.store_resampled_features(s, rows, 2, 1.0),
                               np.repeat(full[:, None], 2, axis=1))
    half = lc_features.store_resampled_features(s, rows, 3, 0.5)
    np.testing.assert_array_equal(lc_features.store_resampled_features(s, rows[4:7], 3, 0.5), half[4:7])
    folds = lc_folds.store_resampled_folds(s, rows, 3, 0.5)
    log_n = lc_features.FEATURE_NAMES.index("log_n")
    for i, t, y, err in lc_features.light_curves_in_days(s, rows[:5]):
        for j, keep in enumerate(lc_features.point_subsets(rows[i], len(t), 3, 0.5)):
            assert half[i, j, log_n] == pytest.approx(np.log10(keep.sum()))
            # The fold of subset j is the fold of exactly these points.
            fold = lc_folds.fold_at_period_and_double(
                torch.from_numpy(t[keep])[None], torch.from_numpy(y[keep])[None], torch.ones(1, int(keep.sum()),
                dtype=torch.float64), lc_folds.store_periods(s)[rows[i]:rows[i] + 1], lc_folds.FULL_FOLD_BINS)
            np.testing.assert_allclose(folds[i, j], fold[0].numpy())
    # The period search is the whole curve's in every subset; what the fits measure varies.
    np.testing.assert_array_equal(half[:, :, :5], np.repeat(full[:, None, :5], 3, axis=1))
    assert not np.allclose(half[:, 0, 5:], half[:, 1, 5:])

    store_dir, own = private_copy(feat_store, tmp_path)
    cached = lc_features.cached_resampled_features(own, 3, 0.5)
    np.testing.assert_allclose(cached, half, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(lc_features, "store_resampled_features",
                        lambda *a, **k: pytest.fail("resampled features recomputed although cached"))
    np.testing.assert_array_equal(lc_features.cached_resampled_features(Store(store_dir), 3, 0.5), cached)
    # The whole curves' feature cache is a different file, left alone.
    assert lc_features.cache_path(own) is None or not lc_features.cache_path(own).exists()


def test_training_batches_pair_each_resampled_fold_with_its_subsets_features(feat_store, tmp_path):
    store_dir, own = private_copy(feat_store, tmp_path)
    k = 4
    spec = dict(batch_size=8, use_rfr_score=False, lc_fold=True, lc_features=True, lc_fold_resamples=k)
    folds_only = TrimodalBatches(LoaderSpec(str(store_dir), **spec))
    both = TrimodalBatches(LoaderSpec(str(store_dir), lc_feature_resampling=True, **spec))
    draws = np.nan_to_num(lc_folds.cached_resampled_folds(own, k, 0.5))
    feats = lc_features.cached_resampled_features(own, k, 0.5)
    n, _, f = feats.shape
    train = own.split(42, "full", "train")
    scaled = lc_features.standardise(feats.reshape(n * k, f), (train[:, None] * k + np.arange(k)).ravel())
    scaled = scaled.reshape(n, k, f)
    for i, rows in enumerate(both.batch_rows(0)):
        a, b = folds_only.make_batch(rows, 0, i), both.make_batch(rows, 0, i)
        # The same windows and the same draws: only the features change.
        assert torch.equal(a["lc"], b["lc"]) and torch.equal(a["lc_fold"], b["lc_fold"])
        for j, r in enumerate(rows):
            m = [m for m in range(k) if np.array_equal(b["lc_fold"][j].numpy(), draws[r, m])]
            assert any(np.array_equal(b["lc_features"][j].numpy(), scaled[r, mm]) for mm in m)
    # Normalised through the subsets' own train distribution: every feature of the train subsets is centred.
    assert np.abs(np.median(scaled[train].reshape(-1, f), axis=0)).max() < 0.1
    # Evaluation loaders get the whole curves' features, as without the setting.
    val_spec = dict(spec, lc_feature_resampling=True)
    val = TrimodalBatches(LoaderSpec(str(store_dir), split="val", train=False, **val_spec))
    rows = val.batch_rows(0)[0]
    want = lc_features.standardise(lc_features.cached_features(own), train)[rows]
    assert torch.equal(val.make_batch(rows, 0, 0)["lc_features"], torch.from_numpy(want))


@pytest.mark.parametrize("override, key", [("data.lc_fold_resamples=-1", "data.lc_fold_resamples"),
                                           ("data.lc_fold_resample_fraction=0", "data.lc_fold_resample_fraction"),
                                           ("data.lc_fold_resample_fraction=1.5", "data.lc_fold_resample_fraction"),
                                           ("data.buffer_chunks=0", "data.buffer_chunks"),
                                           ("data.streams=0", "data.streams")])
def test_bad_data_settings_are_refused_by_name(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_feature_resampling_needs_fold_resamples():
    with pytest.raises(ConfigError, match=r"data\.lc_feature_resampling.*lc_fold_resamples"):
        load_config(None, ["data.lc_feature_resampling=true", "data.lc_fold_resamples=0"])
    assert load_config(None, ["data.lc_feature_resampling=true", "data.lc_fold_resamples=2"]).data.lc_feature_resampling


def test_the_double_period_fold_separates_an_eclipsing_binarys_two_minima():
    """An eclipsing binary whose catalogue period P is half its orbit: primary (depth 1) in orbital phase bin 0,
    secondary (depth 0.5) half an orbit later. Channels 2-3 (the fold at 2P, one orbit) must show both minima half a
    cycle apart with their own depths; channels 0-1 (the fold at P) superpose them. Expected bins: the analytic curve
    averaged over each phase bin, rolled so its brightest bin comes first as fold_bins does (catches a fold at P/2)."""
    bins, period, orbit = 32, 0.37, 0.74
    peak = 17.5 / 64  # a bright spot: inside bin 8 at 2P, at bin 17's centre at P; the roll is never a tie

    def flux(ph):  # orbital phase -> flux: eclipses at bin 0's centre and half an orbit on; a spot after each
        def bump(centre, width):
            d = (ph - centre + 0.5) % 1 - 0.5
            return np.exp(-0.5 * (d / width) ** 2)
        first = 0.5 / bins
        return (0.3 * bump(peak, 0.01) + 0.15 * bump(peak + 0.5, 0.01)
                - bump(first, 0.015) - 0.5 * bump(first + 0.5, 0.015))

    within = (np.arange(400) + 0.5) / 400  # points across one bin
    phases = (np.arange(bins)[:, None] + within) / bins
    want_orbit = flux(phases).mean(1)
    want_p = 0.5 * (flux(phases / 2) + flux(phases / 2 + 0.5)).mean(1)  # each P-phase is two orbital phases

    def rolled(m):
        return np.roll(m, -int(np.argmax(m)))

    t = np.sort(np.random.default_rng(0).uniform(0, 2000, 40000))
    tt = torch.from_numpy(t)[None]
    fold = lc_folds.fold_at_period_and_double(tt, torch.from_numpy(flux(t / orbit % 1))[None], torch.ones_like(tt),
                                              torch.tensor([period], dtype=torch.float64), bins)[0].numpy()
    assert fold.shape == (4, bins) and np.all(fold[[1, 3]] == 1)
    np.testing.assert_allclose(fold[2], rolled(want_orbit), atol=0.03)
    np.testing.assert_allclose(fold[0], rolled(want_p), atol=0.03)
    # The brightest orbital bin is bin 8 (the spot): the primary, bin 0, is 24 bins on; the secondary 8.
    assert int(np.argmax(want_orbit)) == 8
    primary, secondary = fold[2, 24], fold[2, 8]
    assert primary == fold[2].min() and primary < -0.8 and -0.6 < secondary < -0.3
    assert secondary == fold[2, 1:16].min()
    # At P both eclipses fall on the same phases: one dip of the two depths' mean, no second one half a cycle on.
    low = np.flatnonzero(fold[0] < -0.15)
    assert 1 <= len(low) <= 5 and np.ptp(low) == len(low) - 1
    assert -0.75 < fold[0].min() < secondary
