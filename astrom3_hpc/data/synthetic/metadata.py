"""The metadata of a drawn star: ASAS-SN mean V, Gaia EDR3, 2MASS and AllWISE columns."""

from __future__ import annotations

import math

import numpy as np

from ...core.constants import META_COLUMNS
from .physics import _A_BP, _A_H, _A_J, _A_K, _A_RP, _A_W1, _A_W2, _A_W3, _A_W4, _colours
from .stars import _Draws, _Star


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
