"""`SyntheticSource`: the class codes of the whole survey (one seeded shuffle) and `get(i)`, which draws object i
from `np.random.default_rng([seed, i])` through the stars, placement, light-curve, metadata and spectrum models."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...core.constants import CLASS_COUNTS, CLASS_NAMES, META_COLUMNS, N_CLASSES
from ..raw import RawObject
from .ids import synthetic_object_id, synthetic_object_ids
from .lightcurve import _light_curve
from .metadata import _metadata
from .placement import _place
from .spectrum import _spectrum
from .stars import _draw_star, _Draws

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

# The catalogue's random-forest "classification probability" (rfr_score): mean of a Beta(20 mu, 20 (1 - mu))
# per true class (x 0.75 for mislabelled objects). Correlated with the class: the label-leak feature.
_RFR = {"EW": 0.92, "SR": 0.82, "EA": 0.90, "RRAB": 0.93, "EB": 0.72, "ROT": 0.65, "RRC": 0.85, "HADS": 0.80,
        "M": 0.95, "DSCT": 0.75, "DCEP": 0.55, "ELL": 0.45}



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
