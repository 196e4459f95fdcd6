"""The embedded synthetic survey: ASAS-SN-like light curves, LAMOST-like spectra and Gaia/2MASS/WISE metadata.

`SyntheticSource(n_objects, seed)` is a `RawSource` (see `raw.py`) that generates every object on demand from
`(seed, index)` alone, so that MPI ranks can each generate a disjoint index range and together produce exactly
the data one process would. The physical model of every modality and class is documented in
`docs/generator.md`; the numbers below are the same tables.

Determinism contract:
- the class (and the unseen / mislabelled markers) of every object come from one seeded shuffle of an int8
  code array of length n, computed lazily once per source (1 byte per object; ~50 ms for n = 1,000,000);
- everything else about object i comes from `np.random.default_rng([seed, i])`, consumed in a fixed order,
  so `get(i)` is independent of which other objects were generated before it, and in which order.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..core.constants import CLASS_COUNTS, CLASS_NAMES, META_COLUMNS, N_CLASSES
from .raw import RawObject

GENERATOR_NAME = "astrom3_hpc.synthetic"
GENERATOR_VERSION = "1.0.0"

# Classes AstroM3 does not have, generated only with unseen_fraction > 0 (label -1).
UNSEEN_CLASSES: tuple[str, ...] = ("DCEP", "ELL")

_CI = {name: k for k, name in enumerate(CLASS_NAMES)}

# Code array layout (int8): 0..9 a correctly labelled object of that class; 10 + 10 * true + shown for a
# mislabelled object; 110 + u for an object of unseen class UNSEEN_CLASSES[u].
_MIS_BASE = 10
_UNSEEN_BASE = 110

# Which wrong label a mislabelled object gets: the confusions a catalogue classifier makes.
_CONFUSION: dict[str, dict[str, float]] = {
    "EW": {"EB": 0.6, "EA": 0.2, "RRC": 0.1, "ROT": 0.1},
    "SR": {"M": 0.3, "ROT": 0.4, "EA": 0.15, "EB": 0.15},
    "EA": {"EB": 0.6, "EW": 0.2, "ROT": 0.2},
    "RRAB": {"RRC": 0.5, "EW": 0.2, "HADS": 0.2, "EB": 0.1},
    "EB": {"EW": 0.5, "EA": 0.4, "ROT": 0.1},
    "ROT": {"EA": 0.3, "SR": 0.3, "EW": 0.2, "EB": 0.2},
    "RRC": {"RRAB": 0.4, "EW": 0.4, "DSCT": 0.2},
    "HADS": {"DSCT": 0.6, "RRC": 0.3, "RRAB": 0.1},
    "M": {"SR": 1.0},
    "DSCT": {"HADS": 0.6, "RRC": 0.2, "ROT": 0.2},
}

# ----------------------------------------------------------------------------------------------------------
# Physical constants and survey geometry
# ----------------------------------------------------------------------------------------------------------
C2_AK = 1.4387769e8  # h c / k in Angstrom * K
ZP_MJY = 3631e3  # flux (mJy) of a V = 0 star (AB-like zero point; ASAS-SN's is within a few per cent)
LAMOST_LOG0 = math.log10(3700.0)
LAMOST_DLOG = 1e-4
LAMOST_NPIX = 3909
ASASSN_HJD0 = 2455950.0  # start of the ASAS-SN V-band era (early 2012)
ASASSN_HJD1 = 2458450.0  # end of the V-band era (late 2018)
R_LAMOST = 1800.0

# Main-sequence / intrinsic colour table on Teff (dwarfs; giants are adjusted where it matters).
# Columns: M_V (main sequence), B-V, BP-RP, V-K, J-K, H-K, K-W1. Values after Pecaut & Mamajek (2013).
_TEFF = np.array([2400, 2500, 2800, 3000, 3300, 3500, 3800, 4000, 4400, 4800, 5300, 5800, 6200, 6600, 7000,
                  7500, 8000, 9000, 10000, 11000], dtype=float)
_TAB = np.array([
    [19.5, 18.5, 16.0, 14.0, 12.0, 10.6, 9.0, 8.1, 7.0, 6.2, 5.3, 4.6, 4.0, 3.4, 2.9, 2.4, 2.0, 1.3, 0.8, 0.4],
    [2.0, 1.95, 1.9, 1.82, 1.6, 1.5, 1.4, 1.33, 1.15, 0.96, 0.78, 0.64, 0.53, 0.44, 0.35, 0.24, 0.18, 0.05,
     -0.01, -0.05],
    [5.0, 4.8, 4.1, 3.6, 2.9, 2.45, 2.0, 1.78, 1.43, 1.17, 0.97, 0.80, 0.68, 0.57, 0.47, 0.36, 0.27, 0.10, 0.0,
     -0.08],
    [10.0, 9.2, 7.6, 6.6, 5.3, 4.7, 4.0, 3.6, 2.9, 2.4, 1.9, 1.5, 1.2, 0.95, 0.75, 0.55, 0.40, 0.15, 0.0, -0.1],
    [1.35, 1.3, 1.2, 1.1, 0.95, 0.88, 0.84, 0.80, 0.68, 0.58, 0.47, 0.38, 0.30, 0.22, 0.15, 0.08, 0.05, 0.0,
     -0.03, -0.05],
    [0.45, 0.4, 0.35, 0.32, 0.25, 0.21, 0.18, 0.15, 0.11, 0.09, 0.07, 0.05, 0.04, 0.03, 0.02, 0.01, 0.01, 0.0,
     0.0, 0.0],
    [0.35, 0.3, 0.25, 0.2, 0.15, 0.12, 0.1, 0.08, 0.06, 0.05, 0.04, 0.03, 0.02, 0.02, 0.02, 0.01, 0.01, 0.0, 0.0,
     0.0],
]).T
_LOGT = np.log10(_TEFF).tolist()
_TAB_ROWS = _TAB.tolist()

# Extinction ratios A_X / A_V (Cardelli-like, Gaia and WISE after Wang & Chen 2019).
_A_BP, _A_RP, _A_J, _A_H, _A_K, _A_W1, _A_W2, _A_W3, _A_W4 = 1.06, 0.63, 0.28, 0.18, 0.11, 0.065, 0.05, 0.04, 0.02


def _colours(teff: float) -> list[float]:
    """Linear interpolation of the colour table in log Teff: [M_V, B-V, BP-RP, V-K, J-K, H-K, K-W1]."""
    x = math.log10(teff)
    j = min(max(bisect.bisect_right(_LOGT, x) - 1, 0), len(_LOGT) - 2)
    w = min(max((x - _LOGT[j]) / (_LOGT[j + 1] - _LOGT[j]), 0.0), 1.0)
    a, b = _TAB_ROWS[j], _TAB_ROWS[j + 1]
    return [a[k] + w * (b[k] - a[k]) for k in range(len(a))]


def _sig(x: float) -> float:
    """Logistic function, guarded against overflow."""
    if x < -40:
        return 0.0
    if x > 40:
        return 1.0
    return 1.0 / (1.0 + math.exp(-x))


# ----------------------------------------------------------------------------------------------------------
# Fixed spectral templates on the LAMOST grid (built once per process)
# ----------------------------------------------------------------------------------------------------------
_SPEC_TERMS = ("balmer_core", "balmer_wing", "paschen", "ca_hk", "ca_triplet", "mgb", "nad", "gband", "metals",
               "tio", "vo", "c2", "cn", "blue_opacity", "halpha_em", "cahk_em", "balmer_em", "telluric_o2",
               "telluric_h2o", "dib", "dichroic", "resp1", "resp2", "resp3", "reddening")
_TI = {k: j for j, k in enumerate(_SPEC_TERMS)}
_TEMPLATES: dict[str, np.ndarray] = {}
_LOGB_T0, _LOGB_DT, _LOGB_NT = math.log10(2200.0), 0.002, 360  # Teff table 2200 K .. ~11900 K
_REF_PIX = 2100  # ~6000 A: the continuum is normalised to 1 there before scaling
_CENTRAL = slice(2100, 2447)  # ~6000-6500 A: reference level for the SNR


def lamost_wave() -> np.ndarray:
    """The LAMOST LRS log-linear wavelength grid, 3909 pixels from 3700 A: 10**(log10(3700) + i * 1e-4)."""
    return 10.0 ** (LAMOST_LOG0 + LAMOST_DLOG * np.arange(LAMOST_NPIX))


def _lines(wave: np.ndarray, centres, weights, width: float | np.ndarray = 0.0) -> np.ndarray:
    """Sum of Gaussian lines, each convolved with the instrumental profile (R = 1800)."""
    out = np.zeros_like(wave)
    widths = np.broadcast_to(np.asarray(width, dtype=float), (len(centres),))
    for c, w, intrinsic in zip(centres, weights, widths):
        s = math.hypot(c / (R_LAMOST * 2.3548), intrinsic)
        m = np.abs(wave - c) < 8 * s
        out[m] += w * np.exp(-0.5 * ((wave[m] - c) / s) ** 2)
    return out


def _bands(wave: np.ndarray, heads, weights, scale: float, to_red: bool) -> np.ndarray:
    """Molecular bands: sharp head (smoothed by the instrument), absorption fading away from the head."""
    out = np.zeros_like(wave)
    for h, w in zip(heads, weights):
        d = (wave - h) if to_red else (h - wave)
        edge = 0.5 * (1.0 + np.tanh(d / 2.5))
        out += w * edge * np.exp(-np.clip(d, 0.0, None) / scale)
    return out


def _build_templates() -> dict[str, np.ndarray]:
    if _TEMPLATES:
        return _TEMPLATES
    wave = lamost_wave()
    fixed = np.random.default_rng(20241114)  # the line lists below are part of the generator, not of a seed
    balmer = [6562.8, 4861.3, 4340.5, 4101.7, 3970.1, 3889.0, 3835.4, 3797.9, 3770.6]
    balmer_w = [1.0, 0.9, 0.8, 0.75, 0.6, 0.5, 0.42, 0.35, 0.3]
    paschen = [8438.0, 8467.3, 8502.5, 8545.4, 8598.4, 8665.0, 8750.5, 8862.8, 9014.9]
    t = {
        "balmer_core": _lines(wave, balmer, balmer_w, 2.5),
        "balmer_wing": _lines(wave, balmer, balmer_w, 22.0),
        "paschen": _lines(wave, paschen, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 1.0], 3.0),
        "ca_hk": _lines(wave, [3933.7, 3968.5], [1.0, 0.8], 3.0) + _lines(wave, [3933.7, 3968.5], [0.4, 0.3], 15.0),
        "ca_triplet": _lines(wave, [8498.0, 8542.1, 8662.1], [0.6, 1.0, 0.85], 1.5),
        "mgb": _lines(wave, [5167.3, 5172.7, 5183.6], [0.6, 0.8, 1.0], 1.2)
        + _bands(wave, [5211.0], [0.15], 200.0, to_red=False),
        "nad": _lines(wave, [5889.95, 5895.92], [1.0, 0.8], 1.0),
        "gband": _lines(wave, [4227.0, 5270.0, 5335.0, 4383.5, 4045.8], [0.7, 0.4, 0.35, 0.45, 0.4], 1.0)
        + 0.5 * (0.5 * (1 + np.tanh((wave - 4290.0) / 2.0))) * (0.5 * (1 + np.tanh((4318.0 - wave) / 2.0))),
    }
    # A forest of weak metal lines, denser in the blue (uniform in 1 / lambda).
    inv = fixed.uniform(1.0 / 9100.0, 1.0 / 3700.0, 450)
    t["metals"] = _lines(wave, 1.0 / inv, 0.25 * fixed.exponential(1.0, 450), 0.5)
    t["tio"] = _bands(wave, [4762, 4954, 5167, 5448, 5847, 6159, 6651, 7054, 7589, 8432],
                      [0.3, 0.5, 0.6, 0.6, 0.5, 0.8, 0.7, 1.0, 0.8, 0.6], 110.0, to_red=True)
    t["vo"] = _bands(wave, [7334, 7851, 7865], [0.5, 0.6, 0.6], 80.0, to_red=True)
    t["c2"] = _bands(wave, [4737, 5165, 5636, 6191], [0.8, 1.0, 0.8, 0.4], 140.0, to_red=False)
    t["cn"] = _bands(wave, [6926, 7088, 7874, 8063], [0.5, 0.8, 0.9, 0.7], 180.0, to_red=True)
    t["blue_opacity"] = np.clip((5000.0 / wave) ** 4 - 0.6, 0.0, None)
    t["halpha_em"] = -_lines(wave, [6562.8], [1.0], 0.8)
    t["cahk_em"] = -_lines(wave, [3933.7, 3968.5], [1.0, 0.8], 0.4)
    t["balmer_em"] = -_lines(wave, balmer[:5], [0.35, 0.45, 0.8, 1.0, 0.6], 1.0)
    t["telluric_o2"] = _bands(wave, [7594.0, 6867.0, 6277.0], [1.0, 0.6, 0.15], 25.0, to_red=True)
    h2o = fixed.uniform(7150.0, 7350.0, 40).tolist() + fixed.uniform(8120.0, 8350.0, 50).tolist()
    t["telluric_h2o"] = _lines(wave, h2o, fixed.uniform(0.05, 0.25, len(h2o)), 1.0)
    t["dib"] = _lines(wave, [4428.0, 5780.5, 5797.1, 6283.8], [0.6, 0.5, 0.2, 0.6], [10.0, 1.0, 0.6, 2.0])
    t["dichroic"] = np.exp(-0.5 * ((wave - 5850.0) / 45.0) ** 2)
    x = (np.log10(wave) - (LAMOST_LOG0 + LAMOST_DLOG * (LAMOST_NPIX - 1) / 2)) / (LAMOST_DLOG * LAMOST_NPIX / 2)
    t["resp1"], t["resp2"], t["resp3"] = x, 1.5 * x * x - 0.5, 2.5 * x ** 3 - 1.5 * x
    t["reddening"] = 0.4 * math.log(10.0) * (5500.0 / wave) ** 1.3
    mat = np.stack([t[k] for k in _SPEC_TERMS])
    # Night-sky emission residuals (add variance, not flux) and the noise boost near the detector edges.
    sky = _lines(wave, [5577.3, 5889.9, 6300.3, 6363.8], [30.0, 6.0, 12.0, 4.0], 0.5)
    oh = fixed.uniform(6800.0, 9100.0, 140)
    sky += _lines(wave, oh, fixed.exponential(4.0, 140) * (oh / 7000.0) ** 2, 0.3)
    edge = 1.0 + 3.0 * np.exp(-(wave - wave[0]) / 80.0) + 2.0 * np.exp(-(wave[-1] - wave) / 150.0)
    # Normalised log Planck function on a log-Teff table (rows), continuum = exp(row interpolation).
    teffs = 10 ** (_LOGB_T0 + _LOGB_DT * np.arange(_LOGB_NT))
    logb = -5.0 * np.log(wave)[None, :] - np.log(np.expm1(C2_AK / np.outer(teffs, wave)))
    logb -= logb[:, _REF_PIX][:, None]
    _TEMPLATES.update({"wave": wave, "matrix32": mat.astype(np.float32), "logb": logb.astype(np.float32),
                       "sky32": sky.astype(np.float32), "edge2_32": (edge ** 2).astype(np.float32)})
    return _TEMPLATES


# ----------------------------------------------------------------------------------------------------------
# Phase-curve templates (shapes on a 1025-point phase grid, interpolated at the observed phases)
# ----------------------------------------------------------------------------------------------------------
_NG = 1024
_PHASE = np.linspace(0.0, 1.0, _NG + 1)
_NH = 6
_HARM = np.arange(1, _NH + 1)
_SIN_K = np.sin(2 * np.pi * np.outer(_HARM, _PHASE))
_COS2 = np.cos(2 * np.pi * _PHASE)
_COS4 = np.cos(4 * np.pi * _PHASE)
_SIN2 = np.sin(2 * np.pi * _PHASE)
_DPH0 = np.minimum(_PHASE, 1.0 - _PHASE)  # phase distance to primary minimum (phase 0)


def _sawtooth_shape(c: float) -> np.ndarray:
    """Magnitude shape of a radial pulsator: sum_k c^(k-1)/k sin(2 pi k phi) in brightness (c=1: sawtooth with
    a fast rise at phase 0, c -> 0: sinusoid). Returned with peak-to-peak 1 and zero phase-mean."""
    coef = c ** (_HARM - 1.0) / _HARM
    m = -(coef @ _SIN_K)
    return _norm_shape(m)


def _norm_shape(m: np.ndarray) -> np.ndarray:
    m = m - m.min()
    m /= max(float(m.max()), 1e-12)
    return m - m[:-1].mean()


# ----------------------------------------------------------------------------------------------------------
# Per-object random numbers: pooled scalar draws (one numpy call per 64 values) in a fixed order.
# ----------------------------------------------------------------------------------------------------------
class _Draws:
    __slots__ = ("rng", "_u", "_n")

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self._u: list[float] = []
        self._n: list[float] = []

    def u(self, lo: float = 0.0, hi: float = 1.0) -> float:
        if not self._u:
            self._u = self.rng.random(64).tolist()
        return lo + (hi - lo) * self._u.pop()

    def n(self, mu: float = 0.0, sd: float = 1.0) -> float:
        if not self._n:
            self._n = self.rng.standard_normal(32).tolist()
        return mu + sd * self._n.pop()

    def logu(self, lo: float, hi: float) -> float:
        return lo * (hi / lo) ** self.u()

    def beta(self, a: float, b: float, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * float(self.rng.beta(a, b))

    def expo(self, scale: float) -> float:
        return -scale * math.log(1.0 - self.u())

    def int(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi)."""
        return lo + min(int(self.u() * (hi - lo)), hi - lo - 1)


class _Star:
    """All physical parameters of one object (plain attributes; filled by the class-specific drawers)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.subtype: str | None = None
        self.carbon = False
        self.emission = 0.0  # chromospheric emission strength (young active dwarfs)
        self.balmer_em = 0.0  # shock-driven Balmer emission (Miras)
        self.dust = 0.0  # circumstellar dust (mid-IR excess), 0..1
        self.binary = False
        self.feh = 0.0
        self.logg = 4.3
        self.teff_amp = 0.0  # pulsational Teff half-range seen at a random spectrum epoch
        self.hz = 300.0  # disc scale height, pc
        self.sigv = 30.0  # velocity dispersion per component, km/s
        self.vlag = 15.0  # asymmetric drift + solar reflex, km/s
        self.halo = 0.0  # probability of an isotropic (halo) sky position
        self.ruwe_extra = 0.0


# ----------------------------------------------------------------------------------------------------------
# Class models: period, amplitude, shape, Teff, luminosity, population
# ----------------------------------------------------------------------------------------------------------
def _draw_star(kind: str, d: _Draws, subtypes: bool) -> _Star:
    s = _Star(kind)
    s.phi0 = d.u()
    if kind == "EW":
        lo, hi = math.log10(0.22), math.log10(0.9)  # bulk 0.25-0.7 d
        x = d.beta(2.0, 3.5)
        s.P = 10 ** (lo + (hi - lo) * x)
        s.amp = d.beta(1.6, 3.0, 0.1, 0.8)
        s.teff = 4900.0 + 1300.0 * x + d.beta(2, 2, 0.0, 900.0)
        # Near-equal minima; poor-thermal-contact systems reach ~30 % depth difference.
        g, dep, ocon = d.u(0.7, 1.4), 0.3 * d.u() ** 2, d.u(-0.05, 0.05)
        w = ((1.0 + _COS4) / 2.0) ** g * (1.0 + dep * _COS2) / (1.0 + dep) + ocon * _SIN2
        s.shape = _norm_shape(w)
        s.logg, s.binary, s.feh = 4.3, True, d.n(-0.2, 0.3)
        bv = _colours(s.teff)[1]
        s.MV = -4.44 * math.log10(s.P) + 3.02 * bv + 0.12 + d.n(0.0, 0.3)  # Rucinski & Duerbeck (1997)
        s.hz, s.sigv, s.vlag = 300.0, 35.0, 20.0
    elif kind in ("EB", "EA", "ELL"):
        if kind == "EB":
            s.P = 10 ** d.beta(1.2, 3.0, math.log10(0.3), math.log10(5.0))  # bulk 0.5-5 d
            s.amp = d.beta(2.0, 3.0, 0.2, 1.1)
            sw = d.u(0.04, 0.14)  # wide eclipses ...
            ell, d1, q = d.u(0.2, 1.0), 1.0, d.u(0.15, 0.95)  # ... on a continuous ellipsoidal variation
            w = ell * (1.0 + _COS4) / 2.0 + d1 * np.exp(-0.5 * (_DPH0 / sw) ** 2) \
                + q * np.exp(-0.5 * ((_PHASE - 0.5) / sw) ** 2)
            s.logg = 3.9 if d.u() > 0.5 else 3.0
            evolved = s.logg < 3.5
            teff_lo = 5500.0
        elif kind == "EA":
            s.P = 10 ** d.beta(1.3, 2.5, math.log10(0.5), math.log10(20.0))  # bulk 1-20 d
            s.amp = d.beta(1.5, 3.0, 0.15, 1.4)
            # Eclipse half-width ~ (R1 + R2) / (pi a), a ~ P^(2/3).
            ww = min(max(0.045 * (s.P / 2.0) ** (-2.0 / 3.0) * d.u(0.6, 2.0), 0.008), 0.12)
            ph2 = 0.5 + (d.u(-0.06, 0.06) if d.u() < 0.3 else 0.0)  # eccentric orbits
            q = d.u(0.0, 0.9)
            e1 = np.maximum(1.0 - (_DPH0 / ww) ** 2, 0.0) ** 0.6
            e2 = np.maximum(1.0 - ((_PHASE - ph2) / ww) ** 2, 0.0) ** 0.6
            w = e1 + q * e2 + d.u(0.0, 0.1) ** 1.5 * (1.0 + _COS4) / 2.0  # + weak ellipsoidal/reflection
            s.logg = 4.2 if d.u() > 0.3 else 3.5
            evolved = s.logg < 4.0
            teff_lo = 5500.0
        else:  # ELL: ellipsoidal variable, light varies at half the orbital period
            s.P = 10 ** d.u(0.0, math.log10(15.0))
            s.amp = d.logu(0.02, 0.2)
            dep = d.u(0.0, 0.1)
            w = (1.0 + _COS4) / 2.0 * (1.0 + dep * _COS2)
            s.logg = 3.5
            evolved = d.u() < 0.6
            teff_lo = 4500.0
        s.shape = _norm_shape(w)
        s.teff = 10 ** (math.log10(teff_lo) + (4.0 - math.log10(teff_lo)) * d.beta(1.3, 1.8))
        s.binary, s.feh = True, d.n(-0.2, 0.3)
        s.MV = _colours(s.teff)[0] - 0.4 + d.n(0.0, 0.3) - (d.u(0.5, 3.0) if evolved else 0.0)
        s.hz, s.sigv, s.vlag = 250.0, 30.0, 15.0
    elif kind in ("RRAB", "RRC"):
        if kind == "RRAB":
            s.P = d.beta(2.5, 5.0, 0.42, 0.9)
            lp = math.log10(s.P)
            # Bailey diagram of Oosterhoff I RRab (Cacciari et al. 2005).
            s.amp = min(max(-2.627 - 22.046 * lp - 30.876 * lp * lp + d.n(0.0, 0.12), 0.4), 1.25)
            # Low-amplitude (long-period) RRab have the more sinusoidal curves.
            s.shape = _sawtooth_shape(min(0.45 + 0.45 * s.amp + d.n(0.0, 0.08), 0.97))
            s.teff = 6100.0 + d.beta(2, 2, 0.0, 800.0)
            s.teff_amp = 500.0 * s.amp
            s.blazhko = d.u() < 0.4
        else:
            s.P = d.beta(3.0, 2.5, 0.2, 0.48)
            s.amp = d.beta(2.0, 2.0, 0.15, 0.55)
            s.shape = _sawtooth_shape(d.u(0.05, 0.45))
            s.teff = 6900.0 + d.beta(2, 2, 0.0, 600.0)
            s.teff_amp = 600.0 * s.amp
            s.blazhko = False
        s.feh = d.n(-1.2, 0.5)
        s.logg = 2.7
        s.MV = 0.23 * s.feh + 0.93 + d.n(0.0, 0.1)  # Chaboyer (1999) / Cacciari & Clementini (2003)
        s.hz, s.sigv, s.vlag, s.halo = 1000.0, 110.0, 180.0, 0.6
    elif kind in ("DSCT", "HADS"):
        if kind == "DSCT":
            s.P = 10 ** d.u(math.log10(0.02), math.log10(0.09))
            s.amp = d.logu(0.02, 0.4)
            s.teff = 6500.0 + d.beta(2, 2, 0.0, 2000.0)
            s.teff_amp = 100.0
            s.modes = [(1.0, 1.0)] + [(d.u(1.15, 1.4) if d.u() < 0.7 else 1.0 / 0.773, d.u(0.1, 0.7))
                                      for _ in range(d.int(0, 3))]
            s.hz, s.sigv, s.vlag = 150.0, 20.0, 10.0
        else:
            s.P = 10 ** d.u(math.log10(0.05), math.log10(0.2))
            s.amp = d.beta(1.5, 3.0, 0.22, 0.9)
            s.shape = _sawtooth_shape(d.u(0.4, 0.8))
            s.teff = 6500.0 + d.beta(2, 2, 0.0, 1500.0)
            s.teff_amp = 400.0 * s.amp
            s.mode2 = d.u(0.2, 0.5) if d.u() < 0.3 else 0.0
            s.hz, s.sigv, s.vlag = 180.0, 25.0, 10.0
        s.feh, s.logg = d.n(-0.05, 0.2), 3.8
        s.MV = -2.89 * math.log10(s.P) - 1.31 + d.n(0.0, 0.25)  # McNamara (2011)
    elif kind == "M":
        s.carbon = subtypes and d.u() < 0.3
        s.subtype = ("carbon" if s.carbon else "oxygen") if subtypes else None
        s.P = 10 ** (d.beta(3.0, 2.5, 2.0, math.log10(500.0)) + (0.05 if s.carbon else 0.0))
        s.P = min(s.P, 500.0)
        s.amp = d.beta(1.8, 3.0, 2.5, 7.0) * (0.85 if s.carbon else 1.0)
        s.shape = _sawtooth_shape(d.u(0.3, 0.6))
        s.teff = d.beta(2, 2, 2500.0, 3200.0) if s.carbon else d.beta(2, 2, 2500.0, 3500.0)
        s.teff_amp = 150.0
        s.balmer_em = 0.0 if s.carbon else d.u(0.3, 1.5)
        s.dust, s.logg, s.feh = d.u(0.3, 1.0), 0.5, d.n(0.0, 0.2)
        # Mira period-luminosity relation in K (Whitelock et al. 2008).
        s.MK = -3.51 * (math.log10(s.P) - 2.38) - 7.25 + d.n(0.0, 0.2)
        s.hz, s.sigv, s.vlag, s.ruwe_extra = 450.0, 45.0, 30.0, 0.8
    elif kind == "SR":
        s.carbon = subtypes and d.u() < 0.08
        s.subtype = ("carbon" if s.carbon else "oxygen") if subtypes else None
        s.P = 10 ** d.beta(2.0, 2.0, math.log10(20.0), math.log10(200.0))
        s.amp = d.beta(1.3, 3.0, 0.1, 1.8)
        s.teff = d.beta(2.0, 1.6, 3000.0, 4000.0)
        s.teff_amp = 80.0
        s.balmer_em = d.u(0.0, 0.5) if (d.u() < 0.2 and not s.carbon) else 0.0
        s.dust, s.logg, s.feh = d.u(0.0, 0.5), 1.0, d.n(-0.1, 0.25)
        seq = (0.9, 0.0, 0.4)[d.int(0, 3)]  # PL sequences C', C and an intermediate one
        s.MK = min(max(-3.51 * (math.log10(s.P) - 2.38) - 7.25 + seq + d.n(0.0, 0.4), -8.5), -4.0)
        s.hz, s.sigv, s.vlag, s.ruwe_extra = 400.0, 40.0, 25.0, 0.3
    elif kind == "ROT":
        if subtypes:
            young = d.u() < 0.5
            s.subtype = "young_active" if young else "old_quiet"
            if young:  # young, active K dwarfs (BY Dra): fast rotation, big spots, chromospheric emission
                s.P = 10 ** d.u(math.log10(0.5), 1.0)
                s.amp = d.logu(0.04, 0.4)
                s.teff = d.beta(2, 2, 3800.0, 4800.0)
                s.emission, s.logg, s.feh = d.u(0.4, 1.0), 4.6, d.n(0.05, 0.1)
                s.hz, s.sigv, s.vlag = 100.0, 15.0, 5.0
                s.MV = _colours(s.teff)[0] - d.u(0.0, 0.8) + d.n(0.0, 0.2)
            else:  # older G/K stars, partly RS CVn subgiants: slow rotation, small spots, no emission
                s.P = 10 ** d.u(math.log10(5.0), math.log10(30.0))
                s.amp = d.logu(0.02, 0.15)
                s.teff = d.beta(2, 2, 4800.0, 5600.0)
                s.emission, s.logg, s.feh = d.u(0.0, 0.1), 4.4, d.n(-0.1, 0.2)
                s.hz, s.sigv, s.vlag = 300.0, 30.0, 15.0
                rscvn = d.u() < 0.3
                s.logg = 3.5 if rscvn else 4.4
                s.MV = _colours(s.teff)[0] + d.n(0.0, 0.2) - (d.u(1.0, 4.0) if rscvn else 0.0)
                s.ruwe_extra = 0.4 if rscvn else 0.0
        else:  # one blended population
            s.P = 10 ** d.u(math.log10(0.5), math.log10(30.0))
            s.amp = d.logu(0.02, 0.3)
            s.teff = d.u(3800.0, 5500.0)
            s.emission, s.logg, s.feh = d.u(0.0, 1.0), 4.4, d.n(-0.05, 0.2)
            s.MV = _colours(s.teff)[0] + d.n(0.0, 0.3) - (d.u(1.0, 3.0) if d.u() < 0.15 else 0.0)
            s.hz, s.sigv, s.vlag = 200.0, 25.0, 10.0
        s.spot_tau = d.u(30.0, 150.0)
        s.spot_r = d.u(0.0, 1.0)
    elif kind == "DCEP":
        s.P = 10 ** d.u(math.log10(3.0), math.log10(30.0))
        s.amp = d.u(0.4, 1.0)
        s.shape = _sawtooth_shape(d.u(0.5, 0.85))
        s.teff = 5300.0 + d.beta(2, 2, 0.0, 1200.0)
        s.teff_amp = 400.0
        s.feh, s.logg = d.n(0.0, 0.1), 1.5
        s.MV = -2.43 * (math.log10(s.P) - 1.0) - 4.05 + d.n(0.0, 0.1)  # Benedict et al. (2007)
        s.hz, s.sigv, s.vlag = 80.0, 12.0, 5.0
    else:
        raise ValueError(f"unknown kind {kind!r}")
    if kind in ("M", "SR"):
        c = _colours(s.teff)
        vk = c[3] + (d.u(0.5, 1.5) if s.carbon else 0.0)
        s.MV = s.MK + vk
    return s


# ----------------------------------------------------------------------------------------------------------
# Galactic position, distance, extinction, kinematics
# ----------------------------------------------------------------------------------------------------------
def _sigma_mag(v: float) -> float:
    """Typical single-epoch ASAS-SN error (mag) at V, from the light-curve error model below."""
    f = ZP_MJY * 10 ** (-0.4 * v)
    return 1.0857 * math.sqrt(f * (3.6e-5 * f + 0.0032) + 0.126 ** 2) / f


_SIGMA_V = np.arange(6.0, 19.01, 0.05)
_SIGMA_TAB = [_sigma_mag(v) for v in _SIGMA_V]


def _v_detectable(amp: float) -> float:
    """Faintest V at which a variation of `amp` mag is as large as the per-epoch error (catalogue detection)."""
    j = bisect.bisect_right(_SIGMA_TAB, amp)
    return float(_SIGMA_V[min(max(j - 1, 0), len(_SIGMA_V) - 1)])


def _place(s: _Star, d: _Draws) -> None:
    v_bright, v_faint = d.u(9.0, 11.0), d.u(14.5, 17.0)
    # Detection bias: a low-amplitude variable enters the catalogue only if it is bright enough.
    v_faint = min(v_faint, _v_detectable(s.amp * (0.5 if s.kind == "EA" else 1.0)))
    v_bright = min(v_bright, v_faint - 1.0)
    dlo = min(max(10 ** ((v_bright - s.MV + 5.0) / 5.0), 100.0), 10000.0)
    dhi = min(max(10 ** ((v_faint - s.MV + 5.0) / 5.0), 100.0), 10000.0)
    dlo = min(dlo, dhi)
    a1 = 2.5  # p(d) ~ d^1.5: a flattened, magnitude-limited disc sample
    dist = (dlo ** a1 + d.u() * (dhi ** a1 - dlo ** a1)) ** (1.0 / a1)
    if d.u() < s.halo:
        sinb = d.u(-1.0, 1.0)
    else:
        z = d.expo(s.hz) * (1.0 if d.u() < 0.5 else -1.0)
        sinb = min(max(z / dist, -1.0), 1.0)
    l_deg = d.u(0.0, 360.0)
    # Dust layer with 110 pc scale height, 0.7 mag/kpc in the plane, patchy.
    patch = math.exp(d.n(0.0, 0.35))
    for _ in range(4):  # bring the star inside the survey's magnitude window, extinction included
        ab = abs(sinb)
        dk = dist / 1000.0
        if ab < 1e-3:
            av = 0.7 * dk * patch
        else:
            av = 0.7 * 0.11 / ab * (1.0 - math.exp(-dk * ab / 0.11)) * patch
        v = s.MV + 5.0 * math.log10(dist / 10.0) + av
        if v > v_faint + 0.3 and dist > 100.0:
            dist = max(dist * 10 ** ((v_faint - v) / 5.0), 100.0)
        elif v < v_bright - 0.3 and dist < 10000.0:
            dist = min(dist * 10 ** ((v_bright - v) / 5.0), 10000.0)
        else:
            break
    s.dist, s.av, s.l, s.b = dist, av, l_deg, math.degrees(math.asin(sinb))
    s.vref = s.MV + 5.0 * math.log10(dist / 10.0) + av
    # Tangential velocity: isotropic dispersion + asymmetric drift/solar reflex in a random projection.
    ang = d.u(0.0, 2 * math.pi)
    lag = s.vlag * d.u(0.3, 1.0)
    vx = d.n(0.0, s.sigv) + lag * math.cos(ang)
    vy = d.n(0.0, s.sigv) + lag * math.sin(ang)
    k = 1.0 / (4.74047 * dist / 1000.0)
    s.pmra_true, s.pmdec_true = vx * k, vy * k


# ----------------------------------------------------------------------------------------------------------
# Light curve (ASAS-SN V band)
# ----------------------------------------------------------------------------------------------------------
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


# The catalogue's random-forest "classification probability" (rfr_score): mean of a Beta(20 mu, 20 (1 - mu))
# per true class (x 0.75 for mislabelled objects). Correlated with the class: the label-leak feature.
_RFR = {"EW": 0.92, "SR": 0.82, "EA": 0.90, "RRAB": 0.93, "EB": 0.72, "ROT": 0.65, "RRC": 0.85, "HADS": 0.80,
        "M": 0.95, "DSCT": 0.75, "DCEP": 0.55, "ELL": 0.45}


# ----------------------------------------------------------------------------------------------------------
# Spectrum (LAMOST LRS)
# ----------------------------------------------------------------------------------------------------------
def _spectrum(s: _Star, d: _Draws, rng: np.random.Generator, gmag: float):
    tp = _build_templates()
    wave = tp["wave"]
    teff = max(s.teff + s.teff_amp * math.cos(d.u(0.0, 2 * math.pi)), 2300.0)
    s.teff_spec = teff
    m = 10 ** (0.5 * s.feh)
    g = s.logg
    lt = math.log10(teff)
    c = [0.0] * len(_SPEC_TERMS)
    # Balmer lines peak near 9000 K (A2) and fade slowly towards K stars (EW(H-alpha) ~3 A at 5800 K).
    c[_TI["balmer_core"]] = 0.7 * math.exp(-0.5 * ((lt - 3.954) / (0.17 if lt < 3.954 else 0.1)) ** 2)
    c[_TI["balmer_wing"]] = 0.35 * math.exp(-0.5 * ((lt - 3.97) / 0.07) ** 2) * (0.3 + 0.7 * g / 4.5)
    c[_TI["paschen"]] = 0.3 * math.exp(-0.5 * ((lt - 3.96) / 0.06) ** 2)
    c[_TI["ca_hk"]] = 1.2 * m * _sig((7500.0 - teff) / 700.0)
    c[_TI["ca_triplet"]] = 0.5 * math.sqrt(m) * _sig((7200.0 - teff) / 700.0) * (1.0 + 0.5 * (4.5 - g) / 3.5)
    cool_fade = 1.0 - 0.5 * _sig((3800.0 - teff) / 200.0)
    c[_TI["mgb"]] = 0.6 * m * _sig((6300.0 - teff) / 500.0) * (0.7 + 0.3 * g / 4.5) * cool_fade
    c[_TI["nad"]] = 0.6 * m * _sig((6000.0 - teff) / 500.0) * (0.6 + 0.4 * g / 4.5) * cool_fade + 0.15 * s.av
    c[_TI["gband"]] = 0.4 * m * _sig((6300.0 - teff) / 400.0) * _sig((teff - 3900.0) / 300.0)
    c[_TI["metals"]] = 0.6 * m * _sig((6800.0 - teff) / 600.0)
    if s.carbon:
        c[_TI["c2"]] = d.u(0.6, 1.5)
        c[_TI["cn"]] = d.u(0.5, 1.2)
        c[_TI["blue_opacity"]] = d.u(0.5, 2.0)
    else:
        c[_TI["tio"]] = 1.8 * _sig((3700.0 - teff) / 180.0)
        c[_TI["vo"]] = 1.0 * _sig((3000.0 - teff) / 120.0)
    if s.emission:
        c[_TI["halpha_em"]] = s.emission * d.u(0.6, 1.4) * 0.8
        c[_TI["cahk_em"]] = s.emission * d.u(0.6, 1.4) * 1.0
    if s.balmer_em:
        c[_TI["balmer_em"]] = s.balmer_em * max(0.0, math.cos(d.u(0.0, 2 * math.pi))) * 1.5
    c[_TI["telluric_o2"]] = d.u(0.3, 1.0)
    c[_TI["telluric_h2o"]] = d.u(0.1, 0.6)
    c[_TI["dib"]] = 0.03 * s.av
    c[_TI["dichroic"]] = d.u(-0.05, 0.15)
    c[_TI["resp1"]], c[_TI["resp2"]], c[_TI["resp3"]] = d.n(0.0, 0.08), d.n(0.0, 0.06), d.n(0.0, 0.04)
    c[_TI["reddening"]] = s.av
    tau = np.asarray(c, dtype=np.float32) @ tp["matrix32"]
    # Planck continuum (log, normalised near 6000 A; interpolated in log Teff from a fine table) times the
    # absorption, reddening and residual-response terms; float32 inside, float64 out.
    x = (math.log10(teff) - _LOGB_T0) / _LOGB_DT
    j = min(max(int(x), 0), _LOGB_NT - 2)
    w = np.float32(min(max(x - j, 0.0), 1.0))
    logb = tp["logb"]
    flux = np.exp(logb[j] + w * (logb[j + 1] - logb[j]) - tau)
    scale = 10 ** (-0.4 * (gmag - 15.0)) * 500.0 * d.logu(0.5, 2.0)
    flux *= np.float32(scale)
    snr = min(max(25.0 * 10 ** (-0.2 * (gmag - 14.0)) * math.exp(d.n(0.0, 0.5)), 5.0), 100.0)
    ref = float(flux[_CENTRAL].sum()) / (_CENTRAL.stop - _CENTRAL.start)
    sky = d.logu(0.05, 1.0)
    # Variance: photon noise of the source, a floor (read noise / sky continuum), sky-line residuals, with the
    # detector ends noisier.
    var = np.maximum(flux, 0.0)
    var += np.float32(ref * 0.03) + np.float32(ref * sky) * tp["sky32"]
    var *= np.float32(ref / snr ** 2) * tp["edge2_32"]
    sigma = np.sqrt(var)
    out = (flux + sigma * rng.standard_normal(LAMOST_NPIX, dtype=np.float32)).astype(np.float64)
    ivar = 1.0 / var.astype(np.float64)
    # Masks: detector ends, occasional bad columns, isolated bad pixels / cosmic rays.
    n_lo, n_hi = d.int(0, 40), d.int(0, 80)
    if n_lo:
        ivar[:n_lo] = 0.0
        out[:n_lo] = 0.0
    if n_hi:
        ivar[LAMOST_NPIX - n_hi:] = 0.0
        out[LAMOST_NPIX - n_hi:] = 0.0
    if d.u() < 0.15:
        j0 = d.int(0, LAMOST_NPIX - 20)
        j1 = j0 + d.int(2, 16)
        ivar[j0:j1] = 0.0
        out[j0:j1] = 0.0
    nbad = d.int(0, 8)
    if nbad:
        pos = rng.integers(0, LAMOST_NPIX, nbad)
        ivar[pos] = 0.0
        out[pos] += rng.uniform(3.0, 30.0, nbad) * sigma[pos]
    return wave.copy(), out, ivar, snr


# ----------------------------------------------------------------------------------------------------------
# Metadata (ASAS-SN mean V, Gaia EDR3, 2MASS, AllWISE)
# ----------------------------------------------------------------------------------------------------------
def _metadata(s: _Star, d: _Draws, mean_v: float, amp: float) -> tuple[np.ndarray, float]:
    col = _colours(s.teff)
    bprp0, vk0, jk0, hk0, kw10 = col[2], col[3], col[4], col[5], col[6]
    if s.kind in ("M", "SR"):
        jk0 += 0.15 + (d.u(0.4, 1.0) if s.carbon else 0.0)
        hk0 += 0.1 + (0.2 if s.carbon else 0.0)
        bprp0 += 0.3 if s.carbon else 0.0
    av = s.av
    v = s.vref
    x = min(max(bprp0 + (_A_BP - _A_RP) * av, -0.5), 6.0)
    gmag = v + (-0.02704 + 0.01424 * x - 0.2156 * x * x + 0.01426 * x ** 3)  # Gaia EDR3 G - V (Riello 2021)
    g_rp = 0.05 + 0.55 * x - 0.04 * x * x
    rp = gmag - g_rp
    bp = rp + x
    kmag = v - vk0 - (1.0 - _A_K) * av  # V already holds A_V; K holds only A_K
    # 2MASS is one epoch (J, H, K together); WISE another: variability shows up as scatter.
    ep_ir = 0.25 * amp * d.u(-0.5, 0.5)
    jmag = kmag + jk0 + (_A_J - _A_K) * av + 1.1 * ep_ir
    hmag = kmag + hk0 + (_A_H - _A_K) * av + 1.0 * ep_ir
    kmag = kmag + 0.9 * ep_ir
    ep_w = 0.25 * amp * d.u(-0.5, 0.5)
    dust = s.dust
    w1 = kmag - 0.9 * ep_ir - kw10 - (_A_K - _A_W1) * av - dust * d.u(0.1, 0.8) + 0.8 * ep_w
    w2 = w1 - (d.n(0.0, 0.03) + dust * d.u(0.0, 0.6)) - (_A_W1 - _A_W2) * av
    w3 = w2 - (d.n(0.02, 0.03) + dust * d.u(0.3, 1.5)) - (_A_W2 - _A_W3) * av
    w4 = w3 - (d.n(0.0, 0.05) + dust * d.u(0.2, 0.8)) - (_A_W3 - _A_W4) * av
    # Photometric errors: Gaia means include the variability scatter over ~40 epochs.
    vterm = amp / math.sqrt(40.0)
    e_g = math.sqrt(0.0003 ** 2 + (0.0006 * 10 ** (0.4 * (gmag - 16.0))) ** 2 + (0.3 * vterm) ** 2)
    e_bp = math.sqrt(0.001 ** 2 + (0.004 * 10 ** (0.4 * (bp - 16.0))) ** 2 + (0.35 * vterm) ** 2)
    e_rp = math.sqrt(0.001 ** 2 + (0.003 * 10 ** (0.4 * (rp - 16.0))) ** 2 + (0.25 * vterm) ** 2)

    def e2m(mag, lim):
        return 0.018 + 0.012 * 10 ** (0.4 * (mag - lim))

    e_j, e_h, e_k = e2m(jmag, 14.0), e2m(hmag, 13.5), e2m(kmag, 13.0)
    e_w1 = 0.022 + 0.01 * 10 ** (0.4 * (w1 - 13.0))
    e_w2 = 0.02 + 0.012 * 10 ** (0.4 * (w2 - 12.5))
    obs = {
        "phot_g_mean_mag": gmag + d.n(0.0, e_g), "phot_bp_mean_mag": bp + d.n(0.0, e_bp),
        "phot_rp_mean_mag": rp + d.n(0.0, e_rp), "j_mag": jmag + d.n(0.0, e_j), "h_mag": hmag + d.n(0.0, e_h),
        "k_mag": kmag + d.n(0.0, e_k), "w1_mag": w1 + d.n(0.0, e_w1), "w2_mag": w2 + d.n(0.0, e_w2),
    }
    e3 = 0.03 + 0.2 * 10 ** (0.4 * (w3 - 11.5))
    e4 = 0.05 + 0.2 * 10 ** (0.4 * (w4 - 8.0))
    # Faint W3/W4 sources are catalogued at their upper limits.
    obs["w3_mag"] = w3 + d.n(0.0, min(e3, 0.4)) if w3 < 12.3 else d.u(12.0, 12.8)
    obs["w4_mag"] = w4 + d.n(0.0, min(e4, 0.5)) if w4 < 8.8 else d.u(8.5, 9.3)
    # Astrometry (Gaia EDR3-like precision versus G; RUWE near 1, higher for binaries and red giants).
    ruwe = math.exp(d.n(0.0, 0.07))
    if s.binary and d.u() < 0.35:
        ruwe += d.expo(0.4)
    if s.ruwe_extra:
        ruwe += d.expo(s.ruwe_extra)
    if d.u() < 0.05:
        ruwe += d.expo(0.3)
    infl = math.sqrt(max(ruwe, 1.0)) * d.u(0.8, 1.3)
    e_plx = (0.012 + 0.04 * 10 ** (0.3 * (gmag - 16.0))) * infl
    e_pmra = e_plx * d.u(1.0, 1.3)
    e_pmdec = e_plx * d.u(0.8, 1.2)
    plx = 1000.0 / s.dist - 0.017 + d.n(0.0, e_plx)
    pmra = s.pmra_true + d.n(0.0, e_pmra)
    pmdec = s.pmdec_true + d.n(0.0, e_pmdec)
    o = obs
    vals = {
        "mean_vmag": mean_v, "e_phot_g_mean_mag": e_g, "e_phot_bp_mean_mag": e_bp, "e_phot_rp_mean_mag": e_rp,
        "bp_rp": o["phot_bp_mean_mag"] - o["phot_rp_mean_mag"], "parallax": plx, "parallax_error": e_plx,
        "parallax_over_error": plx / e_plx, "pmra": pmra, "pmra_error": e_pmra, "pmdec": pmdec,
        "pmdec_error": e_pmdec, "e_j_mag": e_j, "e_h_mag": e_h, "e_k_mag": e_k, "e_w1_mag": e_w1,
        "e_w2_mag": e_w2, "j_k": o["j_mag"] - o["k_mag"], "w1_w2": o["w1_mag"] - o["w2_mag"],
        "w3_w4": o["w3_mag"] - o["w4_mag"], "pm": math.hypot(pmra, pmdec), "ruwe": ruwe, "l": s.l, "b": s.b,
    }
    vals.update(obs)
    return np.array([vals[c] for c in META_COLUMNS], dtype=np.float64), gmag


# ----------------------------------------------------------------------------------------------------------
# Object ids: Gaia-like (HEALPix level-12 pixel << 35 | running number), unique per (seed, index)
# ----------------------------------------------------------------------------------------------------------
_N_HPX12 = 12 * 4 ** 12


_M64 = (1 << 64) - 1


def _splitmix64_int(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised twin of _splitmix64_int (uint64 arithmetic wraps modulo 2**64 the same way)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def synthetic_object_id(seed: int, index: int) -> int:
    """Gaia-like id of object `index`: a pseudo-random HEALPix level-12 pixel in the high bits (as Gaia source
    ids have) and the index itself in the low 35 bits, so ids are unique for any n < 2**35."""
    pix = _splitmix64_int(index ^ _splitmix64_int(seed & _M64)) % _N_HPX12
    return (pix << 35) | index


def synthetic_object_ids(seed: int, start: int, stop: int) -> np.ndarray:
    """Vectorised synthetic_object_id for start..stop-1 (int64)."""
    i = np.arange(start, stop, dtype=np.uint64)
    h = _splitmix64(i ^ np.uint64(_splitmix64_int(seed & _M64)))
    pix = (h % np.uint64(_N_HPX12)).astype(np.int64)
    return (pix << 35) | i.astype(np.int64)


# ----------------------------------------------------------------------------------------------------------
# The source
# ----------------------------------------------------------------------------------------------------------
def proportional_counts(n: int, weights: Sequence[float]) -> np.ndarray:
    """Integer counts summing to n, proportional to weights (largest remainder; exact when n = sum)."""
    w = np.asarray(weights, dtype=np.float64)
    if n < 0 or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("need n >= 0 and non-negative weights with a positive sum")
    exact = n * w / w.sum()
    base = np.floor(exact + 1e-9).astype(np.int64)
    rest = n - int(base.sum())
    if rest > 0:
        frac = exact - base
        base[np.argsort(-frac, kind="stable")[:rest]] += 1
    return base


class SyntheticSource:
    """Deterministic synthetic AstroM3 survey (see module docstring and docs/generator.md).

    n_objects: number of objects. seed: generator seed (any non-negative int).
    missing_rate: probability per object that one random metadata column is NaN.
    outlier_rate: fraction of light-curve points that are outliers (clouds, hot pixels).
    class_counts: class -> relative weight (mapping by name, or a sequence in CLASS_NAMES order); defaults to
        constants.CLASS_COUNTS, so n = 21440 gives the published counts exactly.
    unseen_fraction: fraction of objects replaced by classes AstroM3 does not have (DCEP, ELL); label -1.
    mislabel_fraction: fraction of objects (among the seen ones) whose label is a plausible wrong class.
    subtypes: Mira C-rich/O-rich and ROT young-active/old-quiet populations (extra["subtype"]); False gives one
        population per class.
    """

    def __init__(self, n_objects: int, seed: int = 0, *, missing_rate: float = 0.003, outlier_rate: float = 0.005,
                 class_counts: Mapping[str, int] | Sequence[int] | None = None, unseen_fraction: float = 0.0,
                 mislabel_fraction: float = 0.0, subtypes: bool = True):
        self.n_objects = operator.index(n_objects)
        self.seed = operator.index(seed)
        if self.n_objects < 0:
            raise ValueError(f"n_objects must be >= 0, got {n_objects}")
        if self.n_objects >= 2 ** 35:
            raise ValueError("n_objects must be < 2**35")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        for name, val in (("missing_rate", missing_rate), ("outlier_rate", outlier_rate),
                          ("unseen_fraction", unseen_fraction), ("mislabel_fraction", mislabel_fraction)):
            if not 0.0 <= float(val) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {val}")
        if unseen_fraction + mislabel_fraction > 1.0:
            raise ValueError("unseen_fraction + mislabel_fraction must not exceed 1")
        self.missing_rate = float(missing_rate)
        self.outlier_rate = float(outlier_rate)
        self.unseen_fraction = float(unseen_fraction)
        self.mislabel_fraction = float(mislabel_fraction)
        self.subtypes = bool(subtypes)
        if class_counts is None:
            weights = [CLASS_COUNTS[c] for c in CLASS_NAMES]
        elif isinstance(class_counts, Mapping):
            unknown = set(class_counts) - set(CLASS_NAMES)
            if unknown:
                raise ValueError(f"unknown classes in class_counts: {sorted(unknown)}")
            weights = [class_counts.get(c, 0) for c in CLASS_NAMES]
        else:
            weights = list(class_counts)
            if len(weights) != N_CLASSES:
                raise ValueError(f"class_counts needs {N_CLASSES} values in CLASS_NAMES order")
        self.class_weights = [int(w) if float(w).is_integer() else float(w) for w in weights]
        self.counts = proportional_counts(self.n_objects, self.class_weights)
        self._codes_cache: np.ndarray | None = None

    # -- protocol -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n_objects

    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES

    def describe(self) -> dict[str, Any]:
        return {
            "generator": GENERATOR_NAME, "version": GENERATOR_VERSION, "seed": self.seed,
            "n_objects": self.n_objects, "missing_rate": self.missing_rate, "outlier_rate": self.outlier_rate,
            "class_counts": {c: int(w) for c, w in zip(CLASS_NAMES, self.class_weights)},
            "drawn_counts": {c: int(k) for c, k in zip(CLASS_NAMES, self.counts)},
            "unseen_fraction": self.unseen_fraction, "unseen_classes": list(UNSEEN_CLASSES),
            "mislabel_fraction": self.mislabel_fraction, "subtypes": self.subtypes,
        }

    def get(self, index: int) -> RawObject:
        i = operator.index(index)
        if not 0 <= i < self.n_objects:
            raise IndexError(f"object index {index} out of range [0, {self.n_objects})")
        kind, label, true_label, mislabeled = self._decode(int(self._codes()[i]))
        rng = np.random.default_rng([self.seed, i])
        d = _Draws(rng)
        s = _draw_star(kind, d, self.subtypes)
        _place(s, d)
        lc, amp, period, lksl, mean_v = _light_curve(s, d, rng, self.outlier_rate)
        meta, gmag = _metadata(s, d, mean_v, amp)
        wave, flux, ivar, snr = _spectrum(s, d, rng, gmag)
        mu = _RFR[kind] * (0.75 if mislabeled else 1.0)
        rfr = float(rng.beta(mu * 20.0, (1.0 - mu) * 20.0))
        if d.u() < self.missing_rate:
            meta[d.int(0, len(META_COLUMNS))] = np.nan
        aux = np.array([amp, period, lksl, rfr], dtype=np.float64)
        extra: dict[str, Any] = {
            "true_class": kind, "true_label": true_label, "mislabeled": mislabeled,
            "teff": s.teff, "teff_spectrum": s.teff_spec, "logg": s.logg, "feh": s.feh, "distance_pc": s.dist,
            "av": s.av, "period_true": s.P, "snr": snr,
        }
        if s.subtype is not None:
            extra["subtype"] = s.subtype
        oid = synthetic_object_id(self.seed, i)
        return RawObject(object_id=oid, label=label, lc=lc, spec_wave=wave, spec_flux=flux, spec_ivar=ivar,
                         meta=meta, aux=aux, source=f"synthetic:seed={self.seed}:index={i}", extra=extra)

    # -- extras (vectorised, no object generation) ----------------------------------------------------------
    def labels(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The labels get() will return for objects start..stop-1 (int64; -1 for unseen classes)."""
        codes = self._codes()[start:stop].astype(np.int64)
        out = codes.copy()
        mis = (codes >= _MIS_BASE) & (codes < _UNSEEN_BASE)
        out[mis] = (codes[mis] - _MIS_BASE) % 10
        out[codes >= _UNSEEN_BASE] = -1
        return out

    def true_labels(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The true class index of objects start..stop-1 (int64; -1 for unseen classes). Mislabelled objects are
        those with labels() != true_labels() and labels() >= 0."""
        codes = self._codes()[start:stop].astype(np.int64)
        out = codes.copy()
        mis = (codes >= _MIS_BASE) & (codes < _UNSEEN_BASE)
        out[mis] = (codes[mis] - _MIS_BASE) // 10
        out[codes >= _UNSEEN_BASE] = -1
        return out

    def true_kinds(self, start: int = 0, stop: int | None = None) -> list[str]:
        """The true class name (incl. DCEP / ELL) of objects start..stop-1."""
        return [self._decode(int(c))[0] for c in self._codes()[start:stop]]

    def object_ids(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.n_objects if stop is None else stop
        return synthetic_object_ids(self.seed, start, stop)

    # -- internals ------------------------------------------------------------------------------------------
    @staticmethod
    def _decode(code: int) -> tuple[str, int, int, bool]:
        """code -> (true kind, shown label, true label, mislabelled?)."""
        if code < _MIS_BASE:
            return CLASS_NAMES[code], code, code, False
        if code < _UNSEEN_BASE:
            true, shown = divmod(code - _MIS_BASE, 10)
            return CLASS_NAMES[true], shown, true, True
        return UNSEEN_CLASSES[code - _UNSEEN_BASE], -1, -1, False

    def _codes(self) -> np.ndarray:
        if self._codes_cache is None:
            n = self.n_objects
            rng = np.random.default_rng([self.seed, 0x5EED, 0xC1A55])  # 3-word key: disjoint from [seed, i]
            codes = np.repeat(np.arange(N_CLASSES, dtype=np.int8), self.counts)
            rng.shuffle(codes)
            k_unseen = int(round(self.unseen_fraction * n))
            if k_unseen:
                pos = rng.choice(n, size=k_unseen, replace=False)
                codes[pos] = (_UNSEEN_BASE + rng.integers(0, len(UNSEEN_CLASSES), k_unseen)).astype(np.int8)
            k_mis = int(round(self.mislabel_fraction * n))
            if k_mis:
                cand = np.flatnonzero(codes < _MIS_BASE)
                k_mis = min(k_mis, len(cand))
                pos = np.sort(rng.choice(cand, size=k_mis, replace=False))
                true = codes[pos].astype(np.int64)
                shown = np.empty_like(true)
                for c, name in enumerate(CLASS_NAMES):
                    sel = np.flatnonzero(true == c)
                    if len(sel):
                        partners = list(_CONFUSION[name])
                        p = np.array([_CONFUSION[name][q] for q in partners])
                        pick = rng.choice(len(partners), size=len(sel), p=p / p.sum())
                        shown[sel] = [_CI[partners[k]] for k in pick]
                codes[pos] = (_MIS_BASE + 10 * true + shown).astype(np.int8)
            self._codes_cache = codes
        return self._codes_cache
