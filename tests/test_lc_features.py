"""The classical light-curve features as the `periodic` encoder's per-object input (data/lc_features.py): one code
path with `astrom3 baseline`, cached once per store (atomically, keyed by the store's content), standardised with
train rows only, reaching the model; the encoder's time axis in the store's own unit; and the baseline's class weights
and cross-fitted teacher that fine-tuning borrows. Real stores, real runs (the presets end to end:
test_lc_presets.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lightcurve_tables import lc_store, private_copy

from astrom3_hpc.cli import main
from astrom3_hpc.data import lc_features as lcf
from astrom3_hpc.data.store import Store

ROOT = Path(__file__).resolve().parents[1]


def test_cache_is_written_once_read_back_and_equals_the_baselines_features(feat_store, tmp_path, monkeypatch):
    store_dir, s = private_copy(feat_store, tmp_path)
    path = lcf.cache_path(s)
    assert path is not None and not path.exists()
    feats = lcf.cached_features(s)
    assert path.exists() and feats.shape == (s.n_objects, len(lcf.FEATURE_NAMES)) and np.isfinite(feats).all()
    # The same numbers the baseline computes (one code path; the cache holds them as float32).
    rows = np.arange(s.n_objects)
    np.testing.assert_allclose(feats, lcf.store_features(s, rows), rtol=1e-5, atol=1e-6)
    # No temporary left behind; the lock file jobs take turns on stays (unlinking one another job may be waiting
    # on would let a third take a new one at the same time).
    assert sorted(p.name for p in path.parent.iterdir()) == [".lc_features.lock", path.name]

    # A second job reads the file: computing again would fail here.
    def no_compute(*a, **k):
        raise AssertionError("features recomputed although cached")

    monkeypatch.setattr(lcf, "store_features", no_compute)
    np.testing.assert_array_equal(lcf.cached_features(Store(store_dir)), feats)
    # The store still verifies with the cache inside it (the cache is no array of the store).
    assert main(["verify", str(store_dir)]) == 0


def test_failed_cache_write_leaves_nothing_and_still_returns_features(feat_store, tmp_path, monkeypatch):
    store_dir, s = private_copy(feat_store, tmp_path)
    real_save = np.save

    def half_save(f, arr):
        real_save(f, arr[: len(arr) // 2])  # half the bytes reach the temporary file, then the disk "fills"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lcf.np, "save", half_save)
    feats = lcf.cached_features(s)
    assert feats.shape == (s.n_objects, len(lcf.FEATURE_NAMES))
    cache = store_dir / lcf.CACHE_DIR
    # Neither a truncated matrix nor a temporary: only the lock file jobs take turns on.
    assert [p.name for p in cache.iterdir()] == [".lc_features.lock"]
    monkeypatch.setattr(lcf.np, "save", real_save)
    np.testing.assert_array_equal(lcf.cached_features(Store(store_dir)), feats)


def test_cache_follows_the_store_content_and_the_feature_version(tmp_path, monkeypatch):
    """A store rebuilt at the same path (other light curves) gets its own features, never the old file's."""
    d = tmp_path / "t"
    out = lc_store(d, seed=0, n_per_class=5)
    old = lcf.cached_features(Store(out))
    old_path = lcf.cache_path(Store(out))
    shutil.rmtree(out)
    shutil.rmtree(d)
    out = lc_store(d, seed=1, n_per_class=5)  # same objects and path, different points
    s = Store(out)
    assert lcf.cache_path(s) != old_path
    new = lcf.cached_features(s)
    assert not np.allclose(new, old)
    np.testing.assert_allclose(new, lcf.store_features(s, np.arange(s.n_objects)), rtol=1e-5, atol=1e-6)
    # New feature code: a new name, and the older matrix is removed when the new one is written.
    first = lcf.cache_path(s)
    monkeypatch.setattr(lcf, "FEATURES_VERSION", lcf.FEATURES_VERSION + 1)
    assert lcf.cache_path(s) != first
    lcf.cached_features(s)
    assert sorted(p.name for p in (out / lcf.CACHE_DIR).iterdir()) == [".lc_features.lock", lcf.cache_path(s).name]


def test_light_curves_are_read_in_blocks_and_match_each_objects_points(feat_store):
    """Block reads (any row order; a block smaller than one object) give every object exactly its own points."""
    from astrom3_hpc.data.preprocess import DAYS_PER_YEAR

    s = Store(feat_store)
    values, stats = s.root["lc/values"], s.root["lc/stats"][:]
    rows = np.random.default_rng(0).permutation(s.n_objects)[:20]
    for max_points in (50, 400, 1 << 22):
        seen = []
        for i, t, y, err in lcf.light_curves_in_days(s, rows, max_points=max_points):
            row = rows[i]
            pts = values[int(s.offsets[row]):int(s.offsets[row + 1])].astype(np.float64)
            np.testing.assert_array_equal(t, pts[:, 0] * float(stats[row, 1]) * DAYS_PER_YEAR)
            np.testing.assert_array_equal(np.stack([y, err], 1), pts[:, 1:])
            seen.append(i)
        assert sorted(seen) == list(range(len(rows)))


def test_standardise_maps_train_rows_onto_a_normal_and_uses_them_only():
    rng = np.random.default_rng(0)
    x = rng.lognormal(1.0, 1.5, (400, 4)).astype(np.float32)  # heavy right tail
    x[:, 3] = 7.0  # constant feature: 0, not a division by zero
    x[:150, 2] = 2.0  # a spike shared by many rows lands mid-range, not at its lower edge
    train = np.arange(300)
    z = lcf.standardise(x, train)
    spoiled = x.copy()
    spoiled[350:] = 1e6  # test rows far out must not move the statistics
    spoiled[320, 0] = np.nan
    zs = lcf.standardise(spoiled, train)
    np.testing.assert_array_equal(zs[:300], z[:300])
    assert zs[350:, :3].max() == 5.0 and zs[320, 0] == 0.0
    assert np.all(z[:, 3] == 0)
    zt = z[train, 0].astype(np.float64)
    assert abs(np.median(zt)) < 0.01 and abs(zt.std() - 1.0) < 0.1 and abs(np.mean(zt ** 3)) < 0.1
    order = np.argsort(x[:, 0], kind="stable")
    assert np.all(np.diff(z[order, 0]) >= 0)  # monotone: ranks kept
    spike = z[:150, 2]
    assert np.all(spike == spike[0]) and -1.0 < spike[0] < 0.0  # 150 of 300 tied: centre of their range


def test_loader_batches_carry_standardised_features_only_when_asked(feat_store, tmp_path):
    from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches

    feat_store, _ = private_copy(feat_store, tmp_path)  # it writes the features cache: the module's store stays bare
    plain = TrimodalBatches(LoaderSpec(str(feat_store), batch_size=8, use_rfr_score=False))
    rows = plain.batch_rows(0)[0]
    assert "lc_features" not in plain.make_batch(rows, 0, 0)
    b = TrimodalBatches(LoaderSpec(str(feat_store), batch_size=8, use_rfr_score=False, lc_features=True))
    got = b.make_batch(rows, 0, 0)["lc_features"]
    s = Store(feat_store)
    want = lcf.standardise(lcf.cached_features(s), s.split(42, "full", "train"))[rows]
    assert got.shape == (8, len(lcf.FEATURE_NAMES)) and torch.equal(got, torch.from_numpy(want))
    assert got.abs().max() <= 5.0 and got.std() > 0.1


def periodic_batch(B: int, L: int = 200, **optional: torch.Tensor) -> dict[str, torch.Tensor]:
    """A photometry batch for the periodic encoder: B curves of L points over one year, period 0.5 d, plus the
    optional inputs given."""
    lc = torch.zeros(B, L, 9)
    lc[:, :, 0] = torch.linspace(0, 1, L)
    lc[:, :, 8] = 1.0
    return {"lc": lc, "lc_mask": torch.ones(B, L), "lc_period": torch.full((B,), 0.5),
            "lc_period_search": torch.zeros(B, 4), **optional}


def test_piecewise_encoding_slices_each_feature_at_its_train_quantiles():
    """After the quantile transform, the encoding's slice k is full for exactly the train rows above the k-th of
    BINS equal-count slices: thresholds at the train quantiles of the raw feature, whatever its distribution."""
    from astrom3_hpc.model.periodic import PiecewiseLinearEncoding

    T = PiecewiseLinearEncoding.BINS
    rng = np.random.default_rng(0)
    raw = np.stack([rng.standard_cauchy(4000), rng.lognormal(0, 2, 4000), rng.uniform(-1, 1, 4000)], axis=1)
    train = np.arange(3000)
    enc = PiecewiseLinearEncoding()(torch.from_numpy(lcf.standardise(raw, train))).view(len(raw), 3, T).numpy()
    assert enc.min() >= 0 and enc.max() <= 1
    full = (enc[train] == 1).mean(axis=0)  # (3, T): share of train rows past each slice
    np.testing.assert_allclose(full, np.tile(1 - np.arange(1, T + 1) / T, (3, 1)), atol=2 / 3000)
    # Between two slices' edges exactly one slice is partly filled, and the sum grows with the value.
    z = torch.linspace(-4.9, 4.9, 101)[:, None]
    e = PiecewiseLinearEncoding()(z)
    assert ((e > 0) & (e < 1)).sum(dim=1).max() <= 1
    assert (e.sum(dim=1).diff() > 0).all()


@pytest.mark.parametrize("embedding", ["linear", "periodic", "piecewise"])
def test_features_reach_the_periodic_encoder_and_are_required(embedding):
    from astrom3_hpc.core.config import ModelConfig
    from astrom3_hpc.model import build_classifier

    torch.manual_seed(0)
    cfg = ModelConfig(preset="periodic", d_model=16, n_layers=1, n_heads=2, d_ff=32,
                      periodic_feature_embedding=embedding, periodic_views=["time", "phase", "fold"])
    model = build_classifier(cfg, "photo", 3).eval()
    B = 4
    batch = periodic_batch(B, lc_features=torch.randn(B, len(lcf.FEATURE_NAMES), requires_grad=True))
    out = model(batch)
    out.sum().backward()
    assert batch["lc_features"].grad.abs().sum() > 0  # the features feed the logits
    other = dict(batch, lc_features=torch.randn(B, len(lcf.FEATURE_NAMES)))
    assert not torch.allclose(model(other), out)
    with pytest.raises(KeyError, match="lc_features"):
        model({k: v for k, v in batch.items() if k != "lc_features"})
    # Switched off: the encoder neither needs nor reads them.
    off = build_classifier(ModelConfig(preset="periodic", d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                       periodic_features=False, periodic_views=["time", "phase", "fold"]),
                           "photo", 3)
    assert "lc_features" not in off.input_keys["photo"]
    if embedding == "periodic":
        # Learned frequencies: each feature is cut at many thresholds, and the frequencies are trained.
        emb = model.encoders["photo"].features[0]
        assert emb.freq.grad is not None and emb.freq.grad.abs().sum() > 0


def test_fold_uses_the_stores_time_unit_over_a_long_span():
    """A 0.2-day pulsator observed over 4 years, through the store's own preprocessing: folded at its period
    the curve is sharp. A days-per-year other than the one lc/stats was written with (365.25 against 365) drifts
    by 5 cycles over this span and smears the fold (its range drops from ~2.8 to ~0.9)."""
    from astrom3_hpc.data.preprocess import light_curve
    from astrom3_hpc.data.lc_folds import fold_bins, phase
    from astrom3_hpc.model.periodic import DAYS_PER_YEAR

    rng = np.random.default_rng(3)
    n, period = 600, 0.2
    t = np.sort(rng.uniform(58000, 58000 + 4 * 365, n))
    flux = 10 + np.sin(2 * np.pi * t / period)
    values, stats = light_curve(np.stack([t, flux, np.full_like(t, 0.01)], 1), 1, "test")
    lc = torch.zeros(1, n, 9)
    lc[0, :, :3] = torch.from_numpy(values)
    lc[0, :, 8] = float(stats[1])  # the span channel, as the loader fills it from lc/stats
    days = lc[:, :, 0] * lc[:, :, 8] * DAYS_PER_YEAR
    folded = fold_bins(phase(days, torch.tensor([period])), lc[:, :, 1], torch.ones(1, n))
    mean = folded[0, 0][folded[0, 1] > 0]
    # Normalised flux: amplitude 1 / MAD (~1.4), so a clean fold spans ~2.8.
    assert mean.max() - mean.min() > 2.0


def test_balanced_weights_are_sklearns():
    from sklearn.utils.class_weight import compute_class_weight

    from astrom3_hpc.train.finetune import balanced_weights

    y = np.array([0] * 30 + [1] * 5 + [3] * 15)
    w = balanced_weights(y, 4).numpy()
    np.testing.assert_allclose(w[[0, 1, 3]], compute_class_weight("balanced", classes=np.array([0, 1, 3]), y=y),
                               rtol=1e-6)
    assert w[2] == 0.0  # a class without training rows
    with pytest.raises(Exception, match="class_weights"):
        from astrom3_hpc.core.config import FinetuneConfig

        FinetuneConfig(class_weights="inverse").validate()
    with pytest.raises(Exception, match="label_smoothing"):
        FinetuneConfig(label_smoothing=1.0).validate()


def test_distillation_teacher_is_fitted_once_per_split_and_kept_in_the_store(feat_store, tmp_path, monkeypatch,
                                                                             capsys):
    """Catches a teacher cached under a key that misses the split (another seed's or subset's rows would read
    this one's probabilities) and a cache that is not read (five fits again in every run of the split)."""
    from astrom3_hpc.train import baseline as bl

    store_dir, s = private_copy(feat_store, tmp_path)
    rows, k = np.sort(s.split(42, "full", "train")), len(s.class_names)
    fresh = bl.cross_fitted_probabilities(bl.baseline_features(s, rows, "ls"), s.labels[rows], k, seed=42)
    p = bl.cached_teacher(s, rows, k, seed=42, threads=1, what="train")
    np.testing.assert_array_equal(p, fresh.astype(np.float32))
    other = bl.cached_teacher(s, rows, k, seed=0, threads=1, what="train")  # same rows, other folds
    assert not np.array_equal(other, p)
    assert len(list((store_dir / "cache").glob("distill_teacher-*.npy"))) == 2  # one split's file keeps the other's
    capsys.readouterr()
    assert main(["info", str(store_dir)]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith(f"cache ({store_dir / 'cache'}:") and "distill_teacher 2 files" in line

    def no_fit(*a, **kw):
        raise AssertionError("teacher fitted again although cached")

    monkeypatch.setattr(bl, "cross_fitted_probabilities", no_fit)
    np.testing.assert_array_equal(bl.cached_teacher(Store(store_dir), rows, k, seed=42, threads=2, what="t"), p)
    with pytest.raises(AssertionError, match="fitted again"):  # fewer rows: another split, another key
        bl.cached_teacher(s, rows[1:], k, seed=42, threads=1, what="train")


def test_distillation_teacher_never_saw_the_labels_it_is_asked_about():
    """On pure noise a model fitted on all rows recites their labels; the cross-fitted teacher cannot do better
    than the class prior there, because no row's probabilities come from a model that saw that row."""
    from astrom3_hpc.train.baseline import cross_fitted_probabilities, make_classifier

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 6)), rng.integers(0, 4, 200)
    in_sample = make_classifier(len(y)).fit(x, y).predict_proba(x)[np.arange(len(y)), y]
    p = cross_fitted_probabilities(x, y, 4)
    assert p.shape == (200, 4) and np.allclose(p.sum(1), 1.0)
    # folds fitted in three processes: each fold's fit is the sequential one
    np.testing.assert_array_equal(cross_fitted_probabilities(x, y, 4, threads=3), p)
    assert in_sample.mean() > 0.9 and p[np.arange(len(y)), y].mean() < 0.4
    with pytest.raises(ValueError, match="only 3 training objects"):
        cross_fitted_probabilities(x[:43], np.r_[np.zeros(40, int), np.ones(3, int)], 2, what="tiny")
    from astrom3_hpc.core.config import FinetuneConfig

    with pytest.raises(Exception, match="finetune.distill"):
        FinetuneConfig(mode="spectra", distill="baseline").validate()
    with pytest.raises(Exception, match="finetune.average_baseline' needs finetune.mode photo"):
        FinetuneConfig(mode="all", average_baseline=True).validate()




def test_an_object_too_short_for_a_period_search_gets_no_period_features_and_the_baseline_runs(tmp_path):
    """The catalogue sources keep objects of 3-4 points (their period comes from the catalogue); a period search
    needs 5. The features computed one for every object and failed the whole store's baseline on the first such
    object; now its period-dependent features are NaN (standardised to 0, a gap to the trees) and the rest stand."""
    import csv
    import gzip

    rng = np.random.default_rng(0)
    d = tmp_path / "ztf"
    d.mkdir()
    with open(d / "ztf_vsx_objects.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["vsx_oid", "astrom3_class", "period", "l", "b", "distance"])
        w.writerows([1000 + i, ("EW", "RRAB")[i % 2], 0.3 + 0.01 * i, 10 + i, 5, 1000] for i in range(30))
    with gzip.open(d / "ztf_vsx_lightcurves_long.csv.gz", "wt") as fh:
        fh.write("vsx_oid,filter,mjd,mag,magerr\n")
        for i in range(30):
            n = 3 if i == 5 else 60
            t = np.sort(rng.uniform(58000, 58300, n))
            m = 15 + 0.3 * np.sin(2 * np.pi * t / (0.3 + 0.01 * i)) + rng.normal(0, 0.02, n)
            fh.writelines(f"{1000 + i},2,{a:.5f},{b:.4f},0.02\n" for a, b in zip(t, m))
    store = tmp_path / "ztf.zarr"
    assert main(["ingest", "ztf-vsx", "--root", str(d), "--out", str(store), "--no-progress"]) == 0
    s = Store(store)
    short = int(np.flatnonzero(s.root["object_id"][:] == 1005)[0])
    f = lcf.cached_features(s)
    names = list(lcf.FEATURE_NAMES)
    of_period = names[:names.index("log_mad")] + ["lksl", "lksl2"]  # the search, both Fourier fits, both folds
    assert np.isnan(f[short, [names.index(c) for c in of_period]]).all()
    assert np.isfinite(f[short, [i for i, c in enumerate(names) if c not in of_period]]).all()
    assert f[short, names.index("log_n")] == np.float32(np.log10(3))
    assert np.isfinite(np.delete(f, short, axis=0)).all()
    assert np.isfinite(lcf.standardise(f, np.arange(len(f)))).all()
    assert main(["baseline", str(store), "--seed", "42", "--out", str(tmp_path / "bl")]) == 0


def test_a_fourier_fit_of_seven_points_or_fewer_is_missing_not_an_exact_interpolation():
    """Catches the 3-harmonic fit (7 parameters) of 5-7 points: it passed through every point, so its explained
    variance was 1 and its amplitudes anything (A2 near 1 for a pure sinusoid, B2 1,620 for a range of 8.8)."""
    rng = np.random.default_rng(1)
    for n, missing in ((5, True), (6, True), (7, True), (8, False), (40, False)):
        t = np.sort(rng.uniform(0, 100, n))
        y = np.sin(2 * np.pi * t / 0.7) + rng.normal(0, 0.05, n)
        f = lcf.fourier_features(t, y, 0.7)
        assert len(f) == lcf.N_HARMONICS + 5 and np.isnan(f).all() == missing, (n, f)
    assert f[-1] > 0.98 and abs(f[0] - 1) < 0.05 and f[1] < 0.05  # 40 points: A1 1, A2 0, explained 0.99


def test_fourier_fit_recovers_known_amplitudes_and_phase_differences():
    """Catches a phase difference formed as phi2 - phi1 (or phi3 - phi1) instead of phi2 - 2 phi1 (phi3 - 3 phi1):
    only the latter are properties of the curve's shape. Convention of the code (arctan2(-b, a) of the a cos + b sin
    fit): y = c + sum_k A_k cos(k w t + phi_k), so phi21 = phi2 - 2 phi1 and phi31 = phi3 - 3 phi1, mod 2 pi."""
    period, amp, phi = 0.61, (1.3, 0.52, 0.26), (0.9, 3.5, -1.0)
    t = np.sort(np.random.default_rng(0).uniform(0, 300, 400))
    w = 2 * np.pi / period
    y = 4.0 + sum(a * np.cos((k + 1) * w * t + p) for k, (a, p) in enumerate(zip(amp, phi)))
    a1, a2, a3, r21, r31, phi21, phi31, expl = lcf.fourier_features(t, y, period)
    np.testing.assert_allclose([a1, a2, a3, r21, r31], [1.3, 0.52, 0.26, 0.4, 0.2], rtol=1e-9)
    # 3.5 - 1.8 = 1.7; -1.0 - 2.7 = -3.7, i.e. 2 pi - 3.7
    np.testing.assert_allclose([phi21, phi31], [1.7, 2 * np.pi - 3.7], atol=1e-9)
    assert expl == pytest.approx(1.0, abs=1e-12)


def test_classical_features_do_not_depend_on_the_time_origin():
    """Catches a feature that moves with t = 0 (MJD or JD input, times counted from the first epoch): a phase
    difference phi2 - phi1 turns by 2 pi c / P under t -> t + c. Every feature, the fits at P and at 2P included,
    must stay put for shifts that are no multiple of either period."""
    rng = np.random.default_rng(1)
    period = 0.6137
    t = np.sort(rng.uniform(0, 900, 500))
    w = 2 * np.pi / period
    # harmonics of P and a subharmonic: the 2P fit's first harmonic (the B features' phi1) is signal, not noise
    y = (np.cos(w * t + 0.4) + 0.45 * np.cos(2 * w * t + 2.2) + 0.2 * np.cos(3 * w * t - 0.7)
         + 0.3 * np.cos(w * t / 2 + 1.1) + rng.normal(0, 0.05, len(t)))
    err = np.full_like(t, 0.05)
    search = np.array([period, 0.8, 2 * period, 0.3])
    base = lcf.object_features(t, y, err, search, 0.1, 1.5)
    names = list(lcf.FEATURE_NAMES)
    angles = [names.index(f"{p}_{q}") for p in "AB" for q in ("phi21", "phi31")]
    rest = [i for i in range(len(names)) if i not in angles]
    assert np.isfinite(base).all()
    for shift in (0.3 * period, 1000.123, 58000.5, 2400000.5):
        cycles = np.array([shift / period, shift / period / 2]) % 1
        assert np.all(np.minimum(cycles, 1 - cycles) > 0.1)  # a shift of whole cycles would prove nothing
        moved = lcf.object_features(t + shift, y, err, search, 0.1, 1.5)
        np.testing.assert_allclose(moved[rest], base[rest], rtol=1e-6, atol=1e-7, err_msg=str(shift))
        turned = np.angle(np.exp(1j * (moved[angles] - base[angles])))  # phases compared on the circle
        np.testing.assert_allclose(turned, 0.0, atol=1e-5, err_msg=str(shift))
