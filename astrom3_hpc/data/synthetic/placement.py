"""Galactic position, distance, extinction and kinematics of a drawn star; the survey's photometric noise."""

from __future__ import annotations

import bisect
import math

import numpy as np

from .physics import ZP_MJY
from .stars import _Draws, _Star


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
