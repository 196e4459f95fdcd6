"""Deterministic preprocessing, done once at ingestion (spec section 2).

What stays for the loader is only what must change per epoch: the random 200-point window of a light curve
and the z-scoring with the statistics of the chosen split seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.constants import ABS_MAG_COLUMNS, META_COLUMNS, spectrum_grid
from .raw import BadInputError, RawObject

_ABS_MAG_IDX = np.array([META_COLUMNS.index(c) for c in ABS_MAG_COLUMNS])
_PARALLAX_IDX = META_COLUMNS.index("parallax")
_L_IDX = META_COLUMNS.index("l")
_B_IDX = META_COLUMNS.index("b")
_GRID = spectrum_grid()
DAYS_PER_YEAR = 365.0  # the reference's time span unit (365, not 365.25): part of the input it feeds


@dataclass
class Preprocessed:
    lc_values: np.ndarray  # (n, 3) float32: time in [0, 1], (flux - mean) / MAD, flux_err / MAD
    lc_stats: np.ndarray  # (2,) float32: log10 MAD, time span in years
    spec: np.ndarray  # (3, 2575) float32: normalised flux, normalised error channel, log10 MAD
    meta: np.ndarray  # (34,) float32, transformed, not yet z-scored
    aux: np.ndarray  # (4,) float32: amplitude, log10 period, lksl_statistic, rfr_score
    caveats: tuple[str, ...] = ()  # qualifications of these values, which ingest counts and reports


def mad(x: np.ndarray) -> float:
    """Median absolute deviation, unscaled (the reference's convention)."""
    return float(np.median(np.abs(x - np.median(x))))


def repeated_rows(rows: np.ndarray) -> np.ndarray:
    """True for every row equal in all columns to an earlier one (each first copy stays False), in any row order."""
    order = np.lexsort(rows.T[::-1])
    repeat = np.zeros(len(rows), bool)
    repeat[order[1:]] = np.all(rows[order[1:]] == rows[order[:-1]], axis=1)
    return repeat


def light_curve(lc: np.ndarray, object_id, source: str) -> tuple[np.ndarray, np.ndarray]:
    lc = np.asarray(lc, dtype=np.float64)
    if lc.ndim != 2 or lc.shape[1] != 3:
        raise BadInputError(object_id, source, f"light curve must have shape (n, 3), got {lc.shape}")
    lc = lc[np.all(np.isfinite(lc), axis=1)]
    if len(lc) == 0:
        raise BadInputError(object_id, source, "empty light curve (no finite rows)")
    # Sorted lexicographically (time first), without exact duplicates.
    lc = lc[np.lexsort((lc[:, 2], lc[:, 1], lc[:, 0]))]
    lc = lc[~repeated_rows(lc)]
    t, flux, err = lc[:, 0], lc[:, 1], lc[:, 2]
    m = mad(flux)
    if m <= 0:
        # A light curve with more than half its points equal has MAD 0, where the reference divides by zero
        # (inf/nan inputs); the spread is then the honest scale. Every other case is the reference's formula.
        m = float(np.std(flux)) or 1.0
    span = float(t[-1] - t[0])
    # All times equal: the reference gives nan; 0 here. Statistics use every unique row, before any window.
    t_scaled = (t - t[0]) / span if span > 0 else np.zeros_like(t)
    with np.errstate(over="ignore"):
        values = np.stack([t_scaled, (flux - flux.mean()) / m, err / m], axis=1).astype(np.float32)
        stats = np.array([np.log10(m), span / DAYS_PER_YEAR], dtype=np.float32)
    if not (np.isfinite(values).all() and np.isfinite(stats).all()):
        # One absurd point (a -99 "no data" magnitude is 1e46 mJy) drags the mean: every scaled value of the curve
        # overflows float32, the object reads as intact, and training later stops on it as a non-finite loss.
        worst = max((flux, "flux"), (err, "error"), key=lambda c: float(np.abs(c[0]).max()))
        raise BadInputError(object_id, source, f"light curve does not fit float32 once scaled (largest {worst[1]} "
                                               f"{float(np.abs(worst[0]).max()):.3g}): a sentinel or unit error?")
    return values, stats


def spectrum(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, object_id, source: str,
             error_channel: str = "ivar") -> np.ndarray:
    """Resample onto the 2575-point grid and normalise.

    error_channel "ivar" (default) is exactly the reference: it interpolates the inverse variance where its
    README says "flux error", holds the end values outside the observed range (numpy.interp's clamping), and
    z-scores with the mean of all grid values and the unscaled MAD of the non-zero ones (checked against the
    reference's own outputs in tests/test_golden.py). "sigma" is the corrected channel: 1/sqrt(ivar), masked
    pixels kept out of the interpolation, zeros outside the coverage and across wide masked gaps.
    """
    wave = np.asarray(wave, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    if not (wave.shape == flux.shape == ivar.shape) or wave.ndim != 1 or len(wave) < 2:
        raise BadInputError(object_id, source, f"spectrum arrays must be 1-D of equal length, got "
                                               f"wave {wave.shape}, flux {flux.shape}, ivar {ivar.shape}")
    order = np.argsort(wave, kind="stable")
    wave, flux, ivar = wave[order], flux[order], ivar[order]
    if error_channel == "ivar":
        ok = np.isfinite(wave) & np.isfinite(flux) & np.isfinite(ivar)
        if ok.sum() < 2 or wave[ok][-1] < _GRID[0] or wave[ok][0] > _GRID[-1]:
            raise BadInputError(object_id, source, "spectrum does not overlap the 3850-8998 A grid")
        f = np.interp(_GRID, wave[ok], flux[ok])
        e = np.interp(_GRID, wave[ok], ivar[ok])
    elif error_channel == "sigma":
        ok = np.isfinite(wave) & np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
        if ok.sum() < 2:
            raise BadInputError(object_id, source, "spectrum has fewer than 2 unmasked pixels")
        w = wave[ok]
        f = np.interp(_GRID, w, flux[ok], left=0.0, right=0.0)
        e = np.interp(_GRID, w, 1.0 / np.sqrt(ivar[ok]), left=0.0, right=0.0)
        # Grid points inside a masked stretch wider than a few pixels carry no information: zero them. Each point
        # takes the width of the observed interval it falls in (w[j-1] <= g < w[j]); an observed pixel, none.
        j = np.searchsorted(w, _GRID, side="right")
        inside = (j > 0) & (j < len(w))
        gap = np.full(len(_GRID), np.inf)
        gap[inside] = np.where(w[j[inside] - 1] == _GRID[inside], 0.0, w[j[inside]] - w[j[inside] - 1])
        typical = float(np.median(np.diff(w)))
        bad = gap > 4 * typical
        f[bad] = 0.0
        e[bad] = 0.0
    else:
        raise ValueError(f"unknown error_channel {error_channel!r}")
    nonzero = f[f != 0]
    if len(nonzero) == 0:
        raise BadInputError(object_id, source, "spectrum does not overlap the 3850-8998 A grid")
    m = mad(nonzero)
    if not m > 0:
        raise BadInputError(object_id, source, "flat spectrum (MAD of the flux is 0)")
    out = np.empty((3, len(_GRID)), dtype=np.float32)
    with np.errstate(over="ignore"):
        out[0] = (f - f.mean()) / m
        out[1] = e / m
        out[2] = np.log10(m)
    if not np.isfinite(out).all():
        big = f"largest |flux| {float(np.abs(f).max()):.3g}, error {float(np.abs(e).max()):.3g}"
        raise BadInputError(object_id, source, f"spectrum does not fit float32 once normalised ({big})")
    return out


class MissingMetadataError(BadInputError):
    """NaN or infinite metadata: ingestion's --meta-nan policy decides (fail, skip the object, or impute)."""


META_NAN_POLICIES = ("fail", "skip", "impute")


def metadata(meta: np.ndarray, object_id, source: str, nan_policy: str = "fail") -> np.ndarray:
    """Transformed metadata. With nan_policy "impute" missing values stay NaN (ingestion stores a presence mask
    and the loader fills them with the train median of the split seed); otherwise they raise."""
    meta = np.asarray(meta, dtype=np.float64).copy()
    if meta.shape != (len(META_COLUMNS),):
        raise BadInputError(object_id, source, f"metadata must have {len(META_COLUMNS)} values, got {meta.shape}")
    bad = ~np.isfinite(meta)
    if bad.any() and nan_policy != "impute":
        cols = [META_COLUMNS[i] for i in np.flatnonzero(bad)]
        raise MissingMetadataError(
            object_id, source, f"NaN or infinite metadata in column(s) {cols}; to proceed, ingest with "
            "--meta-nan impute (train-split median, presence mask stored) or --meta-nan skip (leave the object out)")
    meta[bad] = np.nan
    plx = meta[_PARALLAX_IDX]
    # The reference silently takes parallax 1 mas when it is not positive; kept for comparability. A missing
    # parallax (impute policy) makes the absolute magnitudes missing too rather than computed at 1 mas.
    plx = plx if (plx > 0 or np.isnan(plx)) else 1.0
    meta[_ABS_MAG_IDX] = meta[_ABS_MAG_IDX] - 10.0 + 5.0 * np.log10(plx)
    meta[_L_IDX] = np.cos(np.deg2rad(meta[_L_IDX]))
    meta[_B_IDX] = np.sin(np.deg2rad(meta[_B_IDX]))
    return meta.astype(np.float32)


def lafler_kinman(t: np.ndarray, y: np.ndarray, period: float) -> float:
    """Lafler-Kinman string-length statistic of y folded at `period` (small for a good period), the string closed
    around the cycle (last point in phase next to the first). Left open, the one pair it missed was the pair the
    time origin happened to cut: the value moved with t = 0 alone (9.7x on a Stripe 82 RR Lyrae), MJD and JD
    inputs gave different stores, and the baseline's lksl features depended on each object's first epoch."""
    order = np.argsort(np.mod(t, period) / period, kind="stable")
    yy = y[order]
    den = np.sum((yy - yy.mean()) ** 2)
    return float((np.sum(np.diff(yy) ** 2) + (yy[0] - yy[-1]) ** 2) / den) if den > 0 else float("nan")


def magnitude_amplitude(flux: np.ndarray, err: np.ndarray) -> tuple[float, bool]:
    """A light curve's amplitude in magnitudes, 2.5 log10(p97.5 / p2.5) of its flux, and whether its faint end
    stood on the noise floor (NaN where it has no finite row, or needs the floor and has no positive error).

    The amplitude column holds catalogue amplitudes in magnitudes (ASAS-SN) beside derived ones, and is z-scored
    and classified as one feature, so a derived one must be in magnitudes whatever the fluxes: a flux range in a
    file's units beside them was off by orders of magnitude. A 2.5th percentile <= 0 (a star fading into the
    noise, difference-imaging fluxes) has no magnitude; the median error, the flux the faint end cannot be told
    from, stands in for it, which makes the value a lower limit that stays in magnitudes (0 where even the top end
    is within the noise). Only such a faint end takes the floor: one point below zero barely moves the 2.5th
    percentile, so it does not change the rule, and positive fluxes (every magnitude table) keep their values.
    """
    ok = np.isfinite(flux) & np.isfinite(err)
    flux, err = flux[ok], err[ok]
    if len(flux) == 0:
        return float("nan"), False
    lo, hi = np.percentile(flux, [2.5, 97.5])
    if lo > 0:
        return float(2.5 * np.log10(hi / lo)), False
    if not np.any(err > 0):
        return float("nan"), True
    floor = float(np.median(err[err > 0]))
    return float(2.5 * np.log10(max(hi, floor) / floor)), True


AMPLITUDE_FLOOR = ("amplitude is a lower limit: a 2.5th-percentile flux <= 0 took the median flux error as the faint "
                   "end, 2.5 log10(p97.5 / median error) (docs/lightcurves.md, 'Amplitude')")


def aux_features(aux: np.ndarray, object_id, source: str, lc: np.ndarray | None = None,
                 caveats: list[str] | None = None) -> np.ndarray:
    """amplitude, log10 period, lksl_statistic, rfr_score.

    Catalogue values are used as given. Sources that are not the ASAS-SN catalogue (ZTF, Stripe 82) have a period
    but lack the rest: amplitude (`magnitude_amplitude`) and the Lafler-Kinman statistic are then computed from the
    light curve itself, and a missing rfr_score stays NaN: the loader imputes the train mean for it (0 after
    z-scoring). The period is required.
    """
    aux = np.asarray(aux, dtype=np.float64).copy()
    if aux.shape != (4,):
        raise BadInputError(object_id, source, f"aux features must have 4 values, got {aux.shape}")
    if not (np.isfinite(aux[1]) and aux[1] > 0):
        raise BadInputError(object_id, source, f"period must be a positive number, got {aux[1]}")
    if lc is not None and len(lc) >= 3:
        t, flux = lc[:, 0], lc[:, 1]
        if not np.isfinite(aux[0]):
            aux[0], on_floor = magnitude_amplitude(flux, lc[:, 2])
            if on_floor and caveats is not None:
                caveats.append(AMPLITUDE_FLOOR)
        if not np.isfinite(aux[2]):
            aux[2] = lafler_kinman(t, flux, aux[1])
    if not np.all(np.isfinite(aux[:3])):
        raise BadInputError(object_id, source, "NaN in photometric aux features (amplitude, lksl_statistic) "
                                               "that cannot be derived from the light curve")
    aux[1] = np.log10(aux[1])
    return aux.astype(np.float32)


def preprocess(obj: RawObject, modalities: tuple[str, ...] = ("photo", "spectra", "meta"),
               error_channel: str = "ivar", meta_nan: str = "fail") -> tuple[Preprocessed, np.ndarray]:
    """Preprocess every modality the object has; returns the result and its presence vector.

    A modality that the source says the object lacks (extra["modalities"]) is zero-filled and marked absent;
    a modality it claims to have but cannot deliver is a BadInputError.
    """
    has = tuple(obj.extra.get("modalities", modalities))
    present = np.array([m in has for m in modalities], dtype=bool)
    src = obj.source or "<unknown source>"
    caveats: list[str] = []
    if "photo" in has:
        lc_values, lc_stats = light_curve(obj.lc, obj.object_id, src)
        aux = aux_features(obj.aux, obj.object_id, src, np.asarray(obj.lc, dtype=np.float64), caveats)
    else:
        lc_values, lc_stats = np.zeros((0, 3), np.float32), np.zeros(2, np.float32)
        aux = np.zeros(4, np.float32)
    if "spectra" in has:
        spec = spectrum(obj.spec_wave, obj.spec_flux, obj.spec_ivar, obj.object_id, src, error_channel)
    else:
        spec = np.zeros((3, len(_GRID)), np.float32)
    meta = (metadata(obj.meta, obj.object_id, src, meta_nan) if "meta" in has
            else np.zeros(len(META_COLUMNS), np.float32))
    return Preprocessed(lc_values, lc_stats, spec, meta, aux, tuple(caveats)), present
