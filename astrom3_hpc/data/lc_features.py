"""Classical per-object light-curve features: the classical baseline's whole input (`astrom3 baseline`,
train/baseline.py) and a per-object input of the `periodic` encoder (model/periodic.py), from this one code path.

Per object, from the store's light curve alone: the Lomb-Scargle search (best and second period and powers;
stored at ingestion or computed here), a 3-harmonic Fourier fit at the best period and at twice it (amplitudes,
R21, R31, phi21, phi31, explained variance), and statistics (amplitude, percentile ranges, skew, kurtosis,
Lafler-Kinman at both periods, von Neumann ratio, noise level, span, point count).

`cached_features` computes the matrix for a whole store once and keeps it beside the store's arrays
(`STORE/cache/lc_features-<fingerprint>-v<version>.npy`, data/store_cache.py): the loader of every rank and every
split reads it instead of fitting ~1 ms of numpy per object per job.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from scipy.special import ndtri

from ..core.constants import AUX_COLUMNS
from . import store_cache
from .preprocess import DAYS_PER_YEAR, lafler_kinman
from .store import Store
from .store_schema import StoreError
from .verify import non_finite_rows, shown_ids

N_HARMONICS = 3
FEATURE_NAMES = (
    "log_period", "ls_power", "log_period2", "ls_power2", "period_ratio",
    *[f"{p}{k}" for p in ("A", "B") for k in ("1", "2", "3", "_r21", "_r31", "_phi21", "_phi31", "_expl")],
    "log_mad", "amplitude", "p5_95", "p10_90", "p25_75", "skew", "kurtosis", "lksl", "lksl2", "eta",
    "beyond1std", "noise", "log_span", "log_n",
)
# Bump when a feature's definition changes: cached matrices of older code are then ignored.
# 2: the Lafler-Kinman features closed around the cycle (independent of the time origin); 3: no Fourier fit of
# 7 points or fewer
FEATURES_VERSION = 3
# Bump when point_subsets draws different subsets: cached resampled folds and features are then ignored.
SUBSETS_VERSION = 1
MIN_SUBSET_POINTS = 8  # a subset with fewer points folds into mostly empty bins: keep every point instead
CACHE_DIR = store_cache.CACHE_DIR


def fourier_features(t: np.ndarray, y: np.ndarray, period: float) -> list[float]:
    """Least-squares 3-harmonic fit at `period`: A1..A3, R21, R31, phi21, phi31 (in [0, 2 pi)), explained
    variance. NaN without a period (an object too short to search), and for 7 points or fewer: the fit's 7
    parameters then pass through every point (explained variance 1, amplitudes of any size)."""
    if not np.isfinite(period) or len(t) <= 2 * N_HARMONICS + 1:
        return [np.nan] * (N_HARMONICS + 5)
    ph = 2 * np.pi * t / period
    cols = [np.ones_like(t)]
    for k in range(1, N_HARMONICS + 1):
        cols += [np.cos(k * ph), np.sin(k * ph)]
    X = np.stack(cols, axis=1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    a = np.hypot(coef[1::2], coef[2::2])
    phi = np.arctan2(-coef[2::2], coef[1::2])
    var = float(np.var(y))
    expl = 1.0 - float(np.var(y - X @ coef)) / var if var > 0 else 0.0
    a1 = a[0] if a[0] > 0 else 1e-12
    return [*a.tolist(), a[1] / a1, a[2] / a1, float((phi[1] - 2 * phi[0]) % (2 * np.pi)),
            float((phi[2] - 3 * phi[0]) % (2 * np.pi)), expl]


def object_features(t: np.ndarray, y: np.ndarray, err: np.ndarray, search: np.ndarray, log_mad: float,
                    amplitude: float) -> np.ndarray:
    """One feature row (FEATURE_NAMES order). t in days; y, err in the store's MAD units."""
    p1, pow1, p2, pow2 = (float(x) for x in search)
    q = np.percentile(y, [5, 10, 25, 75, 90, 95])
    sd = float(np.std(y)) or 1.0
    z = (y - y.mean()) / sd
    order = np.argsort(t)
    dy = np.diff(y[order])
    eta = float(np.mean(dy ** 2) / sd ** 2) if len(dy) else 0.0
    span = float(np.ptp(t))
    lk = (lafler_kinman(t, y, p1), lafler_kinman(t, y, 2 * p1)) if np.isfinite(p1) else (np.nan, np.nan)
    return np.array([
        np.log10(p1), pow1, np.log10(p2), pow2, p2 / p1,
        *fourier_features(t, y, p1), *fourier_features(t, y, 2 * p1),
        log_mad, amplitude, q[5] - q[0], q[4] - q[1], q[3] - q[2], float(np.mean(z ** 3)), float(np.mean(z ** 4)) - 3,
        *lk, eta, float(np.mean(np.abs(z) > 1)),
        float(np.median(err)), np.log10(max(span, 1e-3)), np.log10(len(t)),
    ], dtype=np.float64)


def light_curves_in_days(store: Store, rows: np.ndarray, max_points: int = 1 << 22):
    """Yield (i, t, y, err) for each rows[i] (float64; t in days, y and err in the store's MAD units), the
    points read in blocks of consecutive rows of up to max_points: one zarr read per object costs more than the
    features themselves (measured: 1.5 s of reads for 2,000 objects, against 0.07 s for one read of them all)."""
    values = store.root["lc/values"]
    offsets = store.offsets
    span_years = store.root["lc/stats"][:, 1].astype(np.float64)
    order = np.argsort(rows, kind="stable")
    k = 0
    while k < len(order):
        lo, j = int(offsets[rows[order[k]]]), k
        while j + 1 < len(order) and int(offsets[rows[order[j + 1]] + 1]) - lo <= max_points:
            j += 1
        block = values[lo:int(offsets[rows[order[j]] + 1])].astype(np.float64)
        _refuse_non_finite(store, block, lo, rows[order[k:j + 1]])
        for i in order[k:j + 1]:
            row = rows[i]
            pts = block[int(offsets[row]) - lo:int(offsets[row + 1]) - lo]
            yield i, pts[:, 0] * span_years[row] * DAYS_PER_YEAR, pts[:, 1], pts[:, 2]
        k = j + 1


def _refuse_non_finite(store: Store, block: np.ndarray, lo: int, rows: np.ndarray) -> None:
    """NaN features mark an object without a light curve: a store built before ingest refused values that
    overflow float32 would have its infinite curves classified from their few finite features, unsaid."""
    # The block also spans rows between the asked ones.
    owners = np.intersect1d(non_finite_rows(block, lo, store.offsets), rows)
    if not len(owners):
        return
    from .store import object_names

    ids = object_names(store)[owners]
    raise StoreError(f"{store.path}: the light curves of {len(ids)} object(s) hold non-finite values (object_id "
                     f"{shown_ids(ids)}): rebuild the store with `astrom3 ingest`, which refuses such objects")


def point_subsets(row: int, n_points: int, k: int, fraction: float) -> np.ndarray:
    """(k, n_points) bool: k random subsets of about `fraction` of an object's points, drawn from (store row, k,
    fraction) alone, so any split of the rows into blocks, and the fold and the feature caches, see the same
    subsets. A subset under MIN_SUBSET_POINTS points keeps every point."""
    keep = np.random.default_rng([int(row), k, round(fraction * 1e6)]).random((k, n_points)) < fraction
    keep[keep.sum(1) < MIN_SUBSET_POINTS] = True
    return keep


def _feature_inputs(store: Store, rows: np.ndarray, period_source: str):
    """Yield (i, t, y, err, search, log_mad, amplitude) for each rows[i]: object_features' arguments.
    period_source "ls": the Lomb-Scargle search (stored at ingestion, else computed now); "store": the store's aux
    period (a catalogue period where the source had one) with the stored search's powers."""
    from . import periods

    r = store.root
    log_mad = r["lc/stats"][:, 0].astype(np.float64)
    aux = r["aux"][:].astype(np.float64)
    search = r["lc/period_search"][:].astype(np.float64) if "lc/period_search" in r else \
        np.full((store.n_objects, 4), np.nan)
    k_amp, k_per = AUX_COLUMNS.index("amplitude"), AUX_COLUMNS.index("period")
    for i, t, y, err in light_curves_in_days(store, rows):
        row = rows[i]
        s = search[row]
        if not np.all(np.isfinite(s)) and len(t) >= periods.MIN_SEARCH_POINTS:
            s = periods.search(t, y, err).as_array().astype(np.float64)
        if period_source == "store":
            s = s.copy()
            s[0] = 10.0 ** aux[row, k_per]
        yield i, t, y, err, s, float(log_mad[row]), float(aux[row, k_amp])


def store_features(store: Store, rows: np.ndarray, period_source: str = "ls") -> np.ndarray:
    """Feature matrix for store rows (period_source: see _feature_inputs)."""
    out = np.empty((len(rows), len(FEATURE_NAMES)))
    for i, t, y, err, s, log_mad, amp in _feature_inputs(store, rows, period_source):
        out[i] = object_features(t, y, err, s, log_mad, amp)
    return out


def store_resampled_features(store: Store, rows: np.ndarray, k: int, fraction: float) -> np.ndarray:
    """(len(rows), k, len(FEATURE_NAMES)): the features of each of point_subsets' k subsets of every light curve.
    The period search stays the whole curve's (a search per subset would cost k period searches per object): what
    varies is what the baseline fits and measures at that period."""
    out = np.empty((len(rows), k, len(FEATURE_NAMES)))
    for i, t, y, err, s, log_mad, amp in _feature_inputs(store, rows, "ls"):
        for j, keep in enumerate(point_subsets(rows[i], len(t), k, fraction)):
            out[i, j] = object_features(t[keep], y[keep], err[keep], s, log_mad, amp)
    return out


def cache_path(store: Store) -> Path | None:
    return store_cache.cache_path(store, "lc_features", FEATURES_VERSION)


def cached_features(store: Store) -> np.ndarray:
    """(n_objects, len(FEATURE_NAMES)) float32, Lomb-Scargle periods; NaN rows for objects without a light curve.
    Kept in the store's cache (data/store_cache.py): computed by the first job that needs them."""
    return store_cache.cached_per_object(store, "lc_features", FEATURES_VERSION, (len(FEATURE_NAMES),),
                                         partial(store_features, period_source="ls"),
                                         "classical light-curve features")


def cached_resampled_features(store: Store, k: int, fraction: float) -> np.ndarray:
    """(n_objects, k, len(FEATURE_NAMES)) float32 features of random point subsets (store_resampled_features),
    NaN rows for objects without a light curve; cached per (k, fraction) like cached_features."""
    return store_cache.cached_per_object(store, f"lc_features_resampled-k{k}-f{fraction:g}",
                                         FEATURES_VERSION * 100 + SUBSETS_VERSION, (k, len(FEATURE_NAMES)),
                                         partial(store_resampled_features, k=k, fraction=fraction),
                                         f"classical features of {k} random {fraction:.0%} subsets of each light curve")


CLIP = 5.0  # standardised features lie in [-CLIP, CLIP] (model/periodic.py bins them up to it)


def standardise(feats: np.ndarray, train_rows: np.ndarray, clip: float = CLIP,
                reference: np.ndarray | None = None) -> np.ndarray:
    """Each feature mapped through its train rows' empirical distribution onto a standard normal (rank-Gauss,
    the quantile transform of Gorishniy et al. 2021), clipped to +-clip; non-finite values and features of
    constant train value become 0, the train median. Period ratios, kurtoses and R21 have heavy tails and
    spikes that a linear scaling leaves to dominate a network's first layer: against median/IQR z-scores this
    lowered the periodic preset's validation loss on all three datasets of docs/lightcurves_results.md.
    `reference`: the feature matrix `train_rows` index (another store's: its model classifying these objects);
    default `feats` itself."""
    tr = (feats if reference is None else reference)[train_rows].astype(np.float64)
    out = np.zeros(feats.shape, np.float64)
    for j in range(feats.shape[1]):
        col = tr[:, j][np.isfinite(tr[:, j])]
        if col.size < 2 or col.min() == col.max():
            continue
        levels = np.linspace(0.0, 1.0, min(1000, col.size))
        q = np.quantile(col, levels)
        x = feats[:, j].astype(np.float64)
        ok = np.isfinite(x)
        # Forward and reversed interpolation averaged: a value shared by many train rows (a spike) lands in
        # the middle of its quantile range, not at its lower edge.
        u = 0.5 * (np.interp(x[ok], q, levels) - np.interp(-x[ok], -q[::-1], -levels[::-1]))
        out[ok, j] = ndtri(np.clip(u, 1e-7, 1 - 1e-7))
    return np.clip(out, -clip, clip).astype(np.float32)
