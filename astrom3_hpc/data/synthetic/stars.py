"""Per-object random numbers (pooled scalar draws in a fixed order) and the class models: period, amplitude,
shape, Teff, luminosity, population."""

from __future__ import annotations

import math

import numpy as np

from .physics import _colours
from .templates import _COS2, _COS4, _DPH0, _PHASE, _SIN2, _norm_shape, _sawtooth_shape


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
