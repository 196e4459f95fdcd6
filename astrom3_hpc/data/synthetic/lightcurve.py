"""The ASAS-SN V-band light curve of a drawn star: epochs, model magnitudes, catalogue period and noise."""

from __future__ import annotations

import math

import numpy as np

from .physics import ASASSN_HJD0, ASASSN_HJD1, ZP_MJY
from .placement import _sigma_mag
from .stars import _Draws, _Star
from .templates import _NG


def _epochs(d: _Draws, rng: np.random.Generator, n: int) -> tuple[np.ndarray, float]:
    """n observation times (HJD, sorted): seasons of 6-8 months a year, weather gaps, night-time only."""
    span = 365.25 * d.u(2.0, 6.0)
    t0 = ASASSN_HJD0 + d.u(0.0, max(ASASSN_HJD1 - ASASSN_HJD0 - span, 0.0))
    t1 = t0 + span
    s0, vis = d.u(0.0, 365.25), d.u(180.0, 245.0)  # season start (set by the star's RA) and length
    wins = []
    k = math.floor((t0 - s0) / 365.25)
    while s0 + k * 365.25 < t1:
        a, b = max(s0 + k * 365.25, t0), min(s0 + k * 365.25 + vis, t1)
        if b > a:
            wins.append((a, b))
        k += 1
    for _ in range(d.int(0, 4)):  # weather / instrument gaps of 5-40 days
        g0 = d.u(t0, t1)
        g1 = g0 + d.u(5.0, 40.0)
        cut = []
        for a, b in wins:
            if b <= g0 or a >= g1:
                cut.append((a, b))
            else:
                if a < g0:
                    cut.append((a, g0))
                if b > g1:
                    cut.append((g1, b))
        if sum(b - a for a, b in cut) > 60.0:
            wins = cut
    starts = np.array([a for a, _ in wins])
    lengths = np.array([b - a for a, b in wins])
    cum = np.cumsum(lengths)
    r = rng.random(2 * n)
    u = r[:n] * cum[-1]
    j = np.minimum(cum.searchsorted(u, side="right"), len(cum) - 1)
    t = starts[j] + (u - (cum[j] - lengths[j]))
    # Night-time only: the day fraction stays in [0.15, 0.85) (several sites), which keeps one-day aliases real.
    t = np.floor(t) + 0.7 * r[n:] + 0.15
    t.sort()
    return t, t0


def _shape_at(x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Periodic shape (on the 1025-point phase grid) at cycle counts x, linear interpolation."""
    y = x - np.floor(x)
    y *= _NG
    k = y.astype(np.intp)
    y -= k
    slope = np.empty_like(shape)
    np.subtract(shape[1:], shape[:-1], out=slope[:-1])
    slope[-1] = 0.0
    return shape[k] + y * slope[k]


class _Knots:
    """Piecewise-linear curves on unit-spaced knots starting at x0 (random walks of Mira cycles, spot groups)."""

    __slots__ = ("k", "f")

    def __init__(self, x: np.ndarray, x0: float):
        u = x - x0
        self.k = u.astype(np.intp)  # u >= 0 by construction
        self.f = u - self.k

    def __call__(self, v: np.ndarray) -> np.ndarray:
        a = v[self.k]
        return a + self.f * (v[self.k + 1] - a)


def _model_mag(s: _Star, t: np.ndarray, t0: float, d: _Draws, span: float) -> np.ndarray:
    """Noiseless magnitude offset from the mean, dm(t)."""
    kind = s.kind
    x = (t - t0) * (1.0 / s.P) + s.phi0  # cycle count
    if kind in ("EW", "EB", "EA", "ELL", "RRC", "DCEP"):
        return s.amp * _shape_at(x, s.shape)
    if kind == "RRAB":
        dm = s.amp * _shape_at(x, s.shape)
        if s.blazhko:  # Blazhko modulation of amplitude
            pb, beta, th = d.logu(20.0, 200.0), d.u(0.1, 0.4), d.u(0.0, 2 * math.pi)
            dm *= 1.0 + beta * np.sin(2 * math.pi / pb * (t - t0) + th)
        return dm
    if kind == "HADS":
        dm = s.amp * _shape_at(x, s.shape)
        if s.mode2:  # double-mode HADS: first overtone at P1/P0 = 0.773
            dm = (dm + s.mode2 * s.amp * 0.5 * np.sin(2 * math.pi / 0.773 * x + d.u(0, 6.3))) / (1 + s.mode2)
        return dm
    if kind == "DSCT":
        dm = np.zeros_like(t)
        tot = sum(a for _, a in s.modes)
        for ratio, a in s.modes:
            dm += a * np.sin(2 * math.pi * ratio * x + d.u(0.0, 6.3))
        return 0.5 * s.amp / tot * dm
    if kind == "M":  # cycle-to-cycle changes of mean level, amplitude and phase
        ncyc = int(span / s.P) + 4
        kn = _Knots(x, s.phi0 - 1.0)
        r = d.rng.standard_normal((3, ncyc))
        ampf = np.exp(0.12 * r[0])
        off = 0.2 * r[1]
        jit = np.cumsum(0.03 * r[2])
        return kn(off) + s.amp * kn(ampf) * _shape_at(x + kn(jit), s.shape)
    if kind == "SR":  # several modes, random amplitude and phase walks, red noise
        ncyc = int(span / s.P) + 4
        kn = _Knots(x, s.phi0 - 1.0)
        if d.u() < 0.3:
            ratio, a2 = 1.0 / d.u(5.0, 10.0), d.u(0.3, 1.0)  # long secondary period
        else:
            ratio, a2 = 1.0 / d.u(0.5, 0.75), d.u(0.2, 0.7)  # overtone-like second mode
        r = d.rng.standard_normal((4, ncyc))
        a1t = kn(np.exp(0.35 * r[0]))
        ph1 = kn(np.cumsum(0.12 * r[1]))
        ph2 = kn(np.cumsum(0.12 * r[2]))
        red = kn(r[3])
        dm = a1t * np.sin(2 * math.pi * (x + ph1)) + a2 * np.sin(2 * math.pi * (ratio * x + ph2))
        return 0.5 * s.amp / (1.0 + a2) * dm + 0.12 * s.amp * red
    if kind == "ROT":  # two spot groups; amplitude and phases evolve over the spot lifetime
        nk = int(span / s.spot_tau) + 4
        kn = _Knots((t - t0) * (1.0 / s.spot_tau), -1.0)
        r = d.rng.standard_normal((3, nk))
        at = kn(np.exp(0.3 * r[0]))
        p1 = kn(np.cumsum(0.1 * r[1]))
        p2 = kn(np.cumsum(0.1 * r[2]))
        dm = np.sin(2 * math.pi * (x + p1)) + s.spot_r * np.sin(4 * math.pi * (x + p2))
        return 0.5 * s.amp / (1.0 + s.spot_r) * at * dm
    raise ValueError(kind)


def _catalogue_period(s: _Star, d: _Draws, span: float, quality: float) -> float:
    """The period a survey pipeline reports: precise for most classes (phase error ~0.01 cycle over the
    baseline), aliased now and then, only approximate for the semi-regular ones, and wrong for a fraction of
    the low signal-to-noise curves (quality = amplitude / per-epoch error * sqrt(n / 300))."""
    p, kind = s.P, s.kind
    if d.u() < 0.6 / (1.0 + (quality / 1.5) ** 2):  # the periodogram peak is not the true period
        r = d.u()
        if r < 0.25:
            return p / 2.0
        if r < 0.5:
            return 2.0 * p
        if r < 0.75:
            f = 1.0 / p + (1.0027 if d.u() < 0.5 else -1.0027)
            return 1.0 / (f if f > 0.05 else 1.0 / p + 1.0027)
        return d.logu(0.05, 300.0)
    u = d.u()
    if kind in ("EW", "EB", "EA", "ELL") and u < (0.06 if kind == "EW" else 0.03):
        return p / 2.0  # eclipsing binaries folded at half the orbital period
    if kind in ("RRAB", "RRC", "HADS", "DSCT") and u < 0.02:  # one-cycle-per-sidereal-day alias
        f = 1.0 / p + (1.0027 if d.u() < 0.5 else -1.0027)
        return 1.0 / (f if f > 0.05 else 1.0 / p + 1.0027)
    if kind == "SR":
        return p * math.exp(d.n(0.0, 0.1))
    if kind in ("M", "ROT"):
        return p * math.exp(d.n(0.0, 0.03))
    return p * (1.0 + d.n(0.0, 0.01 * p / span))


def _lafler_kinman(t: np.ndarray, f: np.ndarray, period: float) -> float:
    """Lafler-Kinman string-length statistic of the curve folded at `period`:
    sum (f[i+1] - f[i])^2 / sum (f - mean)^2 over phase order (about 2 for pure noise, near 0 for a smooth,
    well-sampled periodic signal). Phases are quantised to 16 bits so that the sort is a radix sort."""
    ph = t * (1.0 / period)
    ph -= np.floor(ph)
    order = (ph * 65535.0).astype(np.uint16).argsort(kind="stable")
    y = f[order]
    dev = y - y.sum() / len(y)
    den = float(dev @ dev)
    dy = y[1:] - y[:-1]
    return float(dy @ dy) / den if den > 0 else 2.0


def _light_curve(s: _Star, d: _Draws, rng: np.random.Generator, outlier_rate: float):
    n = int(round(d.logu(100.0, 2995.0)))
    t, t0 = _epochs(d, rng, n)
    span = float(t[-1] - t0) + 1.0
    mag = s.vref + _model_mag(s, t, t0, d, span)
    ncam = d.int(1, 5)
    cam = rng.integers(0, ncam, n, dtype=np.int8)
    zp = 0.015 * rng.standard_normal(ncam)
    flux = ZP_MJY * np.exp(-0.4 * math.log(10.0) * (mag + zp[cam]))
    # Heteroscedastic errors: calibration floor, source photon noise, sky background (5 sigma at V ~ 17),
    # times a per-epoch seeing / transparency factor.
    bg = 0.115 * d.u(0.7, 1.5)
    err = np.sqrt(flux * (3.6e-5 * flux + 0.0032) + bg * bg)
    err *= 0.75 + 0.5 * rng.random(n)
    obs = flux + err * rng.standard_normal(n)
    n_out = int(rng.binomial(n, outlier_rate)) if outlier_rate > 0 else 0
    if n_out:
        pos = rng.integers(0, n, n_out)
        faint = rng.random(n_out) < 0.6
        obs[pos] = np.where(faint, flux[pos] * rng.uniform(0.1, 0.8, n_out),
                            obs[pos] + rng.uniform(5.0, 30.0, n_out) * err[pos])
    # Rows come camera by camera, each in time order, as in ASAS-SN's merged files.
    order = cam.argsort(kind="stable")
    lc = np.empty((n, 3))
    lc[:, 0], lc[:, 1], lc[:, 2] = t[order], obs[order], err[order]
    if d.u() < 0.4:  # a few exact duplicate rows (re-reduced epochs)
        reps = np.ones(n, dtype=np.int64)
        reps[rng.integers(0, n, d.int(1, 6))] += 1
        lc = np.repeat(lc, reps, axis=0)
    # Catalogue quantities.
    obs_mag = np.minimum(mag, 17.5)  # minima fainter than the detection limit are not seen
    amp_cat = float(obs_mag.max() - obs_mag.min()) * math.exp(d.n(0.0, 0.05))
    mean_v = float(mag.sum()) / n + d.n(0.0, 0.01)
    quality = s.amp / _sigma_mag(s.vref) * math.sqrt(n / 300.0)
    p_cat = _catalogue_period(s, d, span, quality)
    lksl = _lafler_kinman(t, obs, p_cat)
    return lc, amp_cat, p_cat, lksl, mean_v
