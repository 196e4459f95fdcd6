"""The embedded synthetic survey: ASAS-SN-like light curves, LAMOST-like spectra and Gaia/2MASS/WISE metadata.

`SyntheticSource(n_objects, seed)` is a `RawSource` (see `data/raw.py`) that generates every object on demand from
`(seed, index)` alone, so that MPI ranks can each generate a disjoint index range and together produce exactly
the data one process would. The physical model of every modality and class is documented in
`docs/generator.md`; the numbers in these modules are the same tables.

Determinism contract:
- the class (and the unseen / mislabelled markers) of every object come from one seeded shuffle of an int8
  code array of length n, computed lazily once per source (1 byte per object; ~50 ms for n = 1,000,000);
- everything else about object i comes from `np.random.default_rng([seed, i])`, consumed in a fixed order,
  so `get(i)` is independent of which other objects were generated before it, and in which order.

Modules, in dependency order: `physics` (constants, colour table, extinction ratios), `templates` (spectral and
phase-curve templates), `stars` (per-object draws and the class models), `placement` (position, distance,
extinction, kinematics), `lightcurve`, `spectrum`, `metadata`, `ids` (Gaia-like object ids) and `source`
(`SyntheticSource`, the class codes and the survey-wide draws).
"""

from .ids import synthetic_object_id
from .physics import LAMOST_DLOG, LAMOST_LOG0, LAMOST_NPIX
from .source import GENERATOR_NAME, GENERATOR_VERSION, UNSEEN_CLASSES, SyntheticSource, proportional_counts

__all__ = [
    "GENERATOR_NAME", "GENERATOR_VERSION", "UNSEEN_CLASSES", "SyntheticSource", "proportional_counts",
    "synthetic_object_id", "LAMOST_DLOG", "LAMOST_LOG0", "LAMOST_NPIX",
]
