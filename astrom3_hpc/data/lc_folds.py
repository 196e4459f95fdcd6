"""Phase-folded light curves: the `periodic` encoder's fold views (model/periodic.py).

`fold_bins` bins a folded curve into FOLD_BINS phase bins (masked mean flux and occupancy), rolled so the brightest
bin comes first: the fold's origin depends on the first epoch and carries no information. The encoder applies it
to the 200-point window of each batch (view "fold"); `cached_folds` applies it once per store to every point of
each light curve, in FULL_FOLD_BINS finer bins (view "fold_full", batch key `lc_fold`): ZTF and the synthetic
survey hold 500-3000 points per object, which the window never sees and the classical baseline's Fourier fits
use. `cached_resampled_folds` keeps K more folds per object, each of a random fraction of its points: training
batches draw one of them (data.lc_fold_resamples), so the fold branch never sees the same input twice in a row and
learns shapes that survive a sparser sampling, as a new object's will be.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from ..core.constants import AUX_COLUMNS
from . import store_cache
from .lc_features import SUBSETS_VERSION, light_curves_in_days, point_subsets
from .store import Store

FOLD_BINS = 32  # the window's fold: 200 points
FULL_FOLD_BINS = 32  # every point; 64 measured: validation mixed (worse on ZTF), see docs/lightcurves_results.md
# Bump when the fold's definition changes: cached arrays of older code are then ignored.
FOLDS_VERSION = 3
RESAMPLED_VERSION = 1


def phase(t_days: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
    """Phase in [0, 1) of times (B, L) at per-object periods (B,)."""
    return torch.remainder(t_days / period[:, None], 1.0)


def fold_bins(ph: torch.Tensor, flux: torch.Tensor, w: torch.Tensor, bins: int = FOLD_BINS) -> torch.Tensor:
    """(B, 2, bins): masked mean flux and occupancy (0/1) per phase bin of phases ph (B, L), rolled
    brightest-bin-first; w (B, L) weighs points (0: padding)."""
    idx = (ph * bins).long().clamp(0, bins - 1)
    sums = torch.zeros(flux.shape[0], bins, dtype=flux.dtype, device=flux.device)
    counts = torch.zeros_like(sums)
    sums.scatter_add_(1, idx, flux * w)
    counts.scatter_add_(1, idx, w)
    mean = sums / counts.clamp(min=1.0)
    occ = (counts > 0).to(flux.dtype)
    start = torch.where(occ > 0, mean, torch.full_like(mean, -1e9)).argmax(1)
    roll = (start[:, None] + torch.arange(bins, device=flux.device)[None, :]) % bins
    return torch.stack([mean.gather(1, roll), occ.gather(1, roll)], dim=1)


def fold_at_period_and_double(t_days: torch.Tensor, flux: torch.Tensor, w: torch.Tensor,
                              period: torch.Tensor, bins: int = FOLD_BINS) -> torch.Tensor:
    """(B, 4, bins): the fold at P and at 2P (eclipsing and ellipsoidal variables show two minima per orbit:
    their Lomb-Scargle peak is at half the orbital period)."""
    return torch.cat([fold_bins(phase(t_days, period), flux, w, bins),
                      fold_bins(phase(t_days, 2 * period), flux, w, bins)], dim=1)


def usable_period(period: torch.Tensor) -> torch.Tensor:
    """Periods to fold at: at least 1e-3 d, and 1 d where the store has none (NaN)."""
    period = period.clamp(min=1e-3)
    return torch.where(torch.isfinite(period), period, torch.ones_like(period))


def store_periods(store: Store) -> torch.Tensor:
    """(n_objects,) periods in days to fold each object at: the store's (aux keeps log10 of it), made usable."""
    return usable_period(torch.from_numpy(
        np.power(10.0, store.root["aux"][:, AUX_COLUMNS.index("period")].astype(np.float64))))


def store_folds(store: Store, rows: np.ndarray) -> np.ndarray:
    """(len(rows), 4, FULL_FOLD_BINS) float64: every point of each light curve folded at the store's period (the
    `lc_period` the encoder gets: a catalogue period where the source had one, else Lomb-Scargle)."""
    periods = store_periods(store)
    out = np.empty((len(rows), 4, FULL_FOLD_BINS))
    for i, t, y, _ in light_curves_in_days(store, rows):
        t = torch.from_numpy(t)[None]
        out[i] = fold_at_period_and_double(t, torch.from_numpy(y)[None], torch.ones_like(t),
                                           periods[rows[i]:rows[i] + 1], FULL_FOLD_BINS)[0].numpy()
    return out


def cached_folds(store: Store) -> np.ndarray:
    """(n_objects, 4, FULL_FOLD_BINS) float32 full-curve folds, NaN for objects without a light curve; kept in the
    store's cache (data/store_cache.py)."""
    return store_cache.cached_per_object(store, "lc_fold", FOLDS_VERSION, (4, FULL_FOLD_BINS),
                                         store_folds, "full light-curve folds")


def store_resampled_folds(store: Store, rows: np.ndarray, k: int, fraction: float) -> np.ndarray:
    """(len(rows), k, 4, FULL_FOLD_BINS) float64: k folds per light curve as store_folds makes them, each of a
    random `fraction` of its points (lc_features.point_subsets: the subsets the resampled features are measured on)."""
    periods = store_periods(store)
    out = np.empty((len(rows), k, 4, FULL_FOLD_BINS))
    for i, t, y, _ in light_curves_in_days(store, rows):
        keep = point_subsets(rows[i], len(t), k, fraction)
        out[i] = fold_at_period_and_double(torch.from_numpy(t)[None].expand(k, -1),
                                           torch.from_numpy(y)[None].expand(k, -1), torch.from_numpy(keep * 1.0),
                                           periods[rows[i]].expand(k), FULL_FOLD_BINS).numpy()
    return out


def cached_resampled_folds(store: Store, k: int, fraction: float) -> np.ndarray:
    """(n_objects, k, 4, FULL_FOLD_BINS) float32 folds of random point subsets (store_resampled_folds), NaN for
    objects without a light curve; cached per (k, fraction) like cached_folds."""
    return store_cache.cached_per_object(store, f"lc_fold_resampled-k{k}-f{fraction:g}",
                                         RESAMPLED_VERSION * 100 + SUBSETS_VERSION,
                                         (k, 4, FULL_FOLD_BINS),
                                         partial(store_resampled_folds, k=k, fraction=fraction),
                                         f"{k} folds of random {fraction:.0%} subsets of each light curve")
