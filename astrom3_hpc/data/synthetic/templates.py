"""Fixed templates: spectral terms on the LAMOST grid (built once per process) and phase-curve shapes."""

from __future__ import annotations

import math

import numpy as np

from .physics import C2_AK, LAMOST_DLOG, LAMOST_LOG0, LAMOST_NPIX, R_LAMOST

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
