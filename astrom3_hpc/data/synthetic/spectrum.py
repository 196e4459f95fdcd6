"""The LAMOST LRS spectrum of a drawn star, from the fixed templates."""

from __future__ import annotations

import math

import numpy as np

from .physics import LAMOST_NPIX, _sig
from .stars import _Draws, _Star
from .templates import _CENTRAL, _LOGB_DT, _LOGB_NT, _LOGB_T0, _SPEC_TERMS, _TI, _build_templates


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
