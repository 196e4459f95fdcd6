"""Physical constants, survey geometry, the intrinsic colour table and extinction ratios of the generator."""

from __future__ import annotations

import bisect
import math

import numpy as np

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
