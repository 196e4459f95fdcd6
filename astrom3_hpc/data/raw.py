"""The one record every raw source yields, before any preprocessing.

Sources (the synthetic generator, the AstroM3 raw-layout reader, the ZTF/Stripe 82/LAMOST readers) all
produce `RawObject`s; ingestion turns them into store rows. Units are the surveys' own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class BadInputError(ValueError):
    """An object's raw input cannot be used. The message names the object id and the file or key."""

    def __init__(self, object_id: Any, source: str, reason: str):
        self.object_id = object_id
        self.source = source
        self.reason = reason
        super().__init__(f"object {object_id} ({source}): {reason}")


class InputFileError(ValueError):
    """A whole input file is unusable (a missing column, a band it does not hold, not UTF-8, a split file naming
    unknown objects). The message names the file; ingestion reports it without a traceback."""


@dataclass
class RawObject:
    object_id: int  # Gaia EDR3 source id for real data; a unique integer for synthetic data
    label: int  # index into constants.CLASS_NAMES; -1 when unknown or a class AstroM3 does not have
    lc: np.ndarray  # (n, 3) float64: time (HJD or MJD, days), flux, flux_err; ragged, unsorted, may repeat
    spec_wave: np.ndarray  # (m,) float64, Angstrom (vacuum/air as the survey gives it)
    spec_flux: np.ndarray  # (m,) float64
    spec_ivar: np.ndarray  # (m,) float64 inverse variance; 0 marks masked pixels
    meta: np.ndarray  # (34,) float64 raw metadata in constants.META_COLUMNS order; l, b in degrees; NaN = missing
    aux: np.ndarray  # (4,) float64 raw amplitude (mag), period (days), lksl_statistic, rfr_score
    source: str = ""  # file(s) the object came from, for error messages and provenance
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. synthetic sub-type, VSX type; not stored as features


class RawSource(Protocol):
    """Anything ingestion can read: a known length and random access by position, so MPI ranks can each take
    a contiguous range without reading the others'."""

    def __len__(self) -> int: ...

    def get(self, index: int) -> RawObject:
        """Return object `index`; raise BadInputError (naming id and file) for unusable input."""
        ...

    def describe(self) -> dict[str, Any]:
        """Provenance written into the store's attributes (generator seed and version, or source files)."""
        ...

    def class_names(self) -> tuple[str, ...]: ...

    # Optional: `select(lo, hi)`, called by ingest before a process reads objects lo..hi-1 and no others, so a
    # source that parses one shared file per process can keep only those objects' data (lightcurves.py).
