"""Lomb-Scargle period search for light curves that come without a catalogue period.

Backend: nifty-ls (a non-uniform FFT periodogram) when installed, else astropy's LombScargle "fast" method;
both give the standard floating-mean generalised periodogram. Measured on the shared ZTF DR3 sample
(docs/lightcurves.md): nifty-ls is the faster of the two at equal grid, so it is the default.

The grid runs from 1/(2 x span) to 1/MIN_PERIOD_DAYS with 5 samples per peak width (1/span): fine enough that
a 0.05-day pulsator's peak is not missed, coarse enough for a million-point grid to take milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Below most HADS and delta Scuti periods, not all: DSCT reach 0.02 d and less (the synthetic survey's do). Lower
# it per store with `ingest lightcurves --min-period`: the grid grows as 1/min_period, and so does the search time
# (docs/lightcurves_results.md measures 0.0125 d against this default).
MIN_PERIOD_DAYS = 0.03
MAX_FREQUENCIES = 2_000_000  # caps the grid for decade-long spans
OVERSAMPLE = 5
MIN_SEARCH_POINTS = 5  # fewer points fix no period: such objects (catalogue sources keep them) get NaN features
# What is stored per object (`lc/period_search` in a store) and seen by the classical baseline.
PERIOD_SEARCH_COLUMNS = ("ls_period", "ls_power", "ls_period2", "ls_power2")


@dataclass(frozen=True)
class PeriodSearch:
    period: float  # days, highest peak
    power: float  # its normalised power (0..1)
    period2: float  # days, highest local maximum outside the main peak's lobe
    power2: float

    def as_array(self) -> np.ndarray:
        return np.array([self.period, self.power, self.period2, self.power2], dtype=np.float32)


def frequency_grid(span_days: float, min_period: float = MIN_PERIOD_DAYS) -> tuple[float, float, int]:
    """(f0, df, n) of the search grid in cycles per day."""
    span = max(float(span_days), 1.0)
    df = 1.0 / (OVERSAMPLE * span)
    f0 = 1.0 / (2.0 * span)
    n = int((1.0 / min_period - f0) / df) + 1
    if n > MAX_FREQUENCIES:
        df = (1.0 / min_period - f0) / MAX_FREQUENCIES
        n = MAX_FREQUENCIES
    return f0, df, n


def periodogram(t: np.ndarray, y: np.ndarray, dy: np.ndarray | None, backend: str = "auto",
                min_period: float = MIN_PERIOD_DAYS) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in 1/day, normalised power) on `frequency_grid`."""
    t = np.asarray(t, np.float64)
    order = np.argsort(t, kind="stable")  # nifty-ls assumes sorted times
    t = t[order]
    y = np.asarray(y, np.float64)[order]
    dy = None if dy is None else np.asarray(dy, np.float64)[order]
    if dy is not None and not np.all(dy > 0):
        dy = None  # a zero error would get infinite weight: fall back to unweighted
    f0, df, n = frequency_grid(float(t.max() - t.min()), min_period)
    freq = f0 + df * np.arange(n)
    if backend == "auto":
        backend = "nifty" if _have_nifty() else "astropy"
    if backend == "nifty":
        import nifty_ls

        # One thread: ingestion runs one process per core, and threaded NUFFT sums differ in the last bit
        # from run to run (a store must not depend on the thread count).
        power = nifty_ls.lombscargle(t, y, dy, fmin=f0, fmax=f0 + df * (n - 1), Nf=n, backend="finufft",
                                     nthreads=1).power
    elif backend == "astropy":
        from astropy.timeseries import LombScargle

        power = LombScargle(t, y, dy).power(freq, method="fast", assume_regular_frequency=True)
    else:
        raise ValueError(f"unknown Lomb-Scargle backend {backend!r} (auto, nifty, astropy)")
    return freq, np.nan_to_num(np.asarray(power, np.float64), nan=0.0)


def search(t: np.ndarray, y: np.ndarray, dy: np.ndarray | None = None, backend: str = "auto",
           min_period: float = MIN_PERIOD_DAYS) -> PeriodSearch:
    """Best and second-best Lomb-Scargle periods of one light curve (needs >= 5 points)."""
    if len(t) < MIN_SEARCH_POINTS:
        raise ValueError(f"a period search needs at least {MIN_SEARCH_POINTS} points, got {len(t)}")
    freq, power = periodogram(t, y, dy, backend, min_period)
    k = int(np.argmax(power))
    span = max(float(np.ptp(t)), 1.0)
    # Second peak: the highest local maximum at least one peak width (1/span) away from the best one, so it
    # is a distinct candidate (an alias or a harmonic), not the shoulder of the main peak.
    inner = power[1:-1]
    local = np.flatnonzero((inner >= power[:-2]) & (inner >= power[2:])) + 1
    local = local[np.abs(freq[local] - freq[k]) > 1.0 / span]
    k2 = int(local[np.argmax(power[local])]) if len(local) else k
    return PeriodSearch(1.0 / freq[k], float(power[k]), 1.0 / freq[k2], float(power[k2]))


def _have_nifty() -> bool:
    try:
        import nifty_ls  # noqa: F401
    except ImportError:
        return False
    return True
