"""The paper's published numbers and the collector's vocabulary: modes, subsets, test sets, inits, display order.

Shared by reading (which values a metrics.json may hold), statistics (the paper's number beside each group),
rendering and plotting.
"""

from __future__ import annotations

import re

from typing import Any, Iterable

from ..core.constants import CLASS_NAMES
from ..orchestration.sweep import MODES
from ..train.metrics_file import RUN_INITS


MODE_NAMES = {"photo": "photometry", "spectra": "spectra", "meta": "metadata", "all": "all three"}
SUBSET_ORDER = ("sub10", "sub25", "sub50", "full")
LABEL_FRACTION = {"sub10": 10, "sub25": 25, "sub50": 50, "full": 100}  # percent of the labels
TEST_SETS = ("test", "test_full")
TEST_SET_TITLES = {"test": "sub-X test set (comparable to the paper)", "test_full": "full test set"}

# Spec section 4: published (AJ) test accuracy %, mean and population std over the 5 split seeds, measured on the
# sub-X test set; "plus" = the paper's paired t-test p < 0.05. The all-three sub10 row used average fusion.
PAPER_RESULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("photo", "sub10"): {"scratch": (84.527, 2.655), "clip": (91.264, 0.974), "plus": True},
    ("photo", "sub25"): {"scratch": (78.382, 2.359), "clip": (88.58, 0.948), "plus": True},
    ("photo", "sub50"): {"scratch": (85.197, 6.209), "clip": (89.572, 0.652), "plus": False},
    ("photo", "full"): {"scratch": (90.724, 1.464), "clip": (91.101, 0.589), "plus": False},
    ("spectra", "sub10"): {"scratch": (46.677, 3.486), "clip": (60.963, 2.584), "plus": True},
    ("spectra", "full"): {"scratch": (76.278, 0.931), "clip": (77.056, 1.033), "plus": False},
    ("meta", "sub10"): {"scratch": (74.888, 1.856), "clip": (77.161, 1.476), "plus": True},
    ("meta", "full"): {"scratch": (85.667, 0.858), "clip": (85.864, 0.739), "plus": False},
    ("all", "sub10"): {"scratch": (88.261, 1.248), "clip": (89.9, 2.0), "plus": False},
    ("all", "full"): {"scratch": (94.127, 0.24), "clip": (93.501, 0.737), "plus": False},
}
# Frozen CLIP embeddings, full data, 1-nearest-neighbour on train embeddings (spec section 4).
PAPER_KNN1 = {"photo": 87.0, "spectra": 72.6, "meta": 81.5, "average": 88.8}
EMBEDDING_VIEWS = ("photo", "spectra", "meta", "average")
EMBEDDING_NAMES = {"photo": "photometry", "spectra": "spectra", "meta": "metadata", "average": "averaged"}

ALPHA = 0.05
# "baseline": `astrom3 baseline`, the classical light-curve classifier; "ensemble": `astrom3 ensemble`'s average of
# runs (weight seeds, or a network and the baseline)
ALL_INITS = RUN_INITS  # the inits a metrics.json may hold (train/metrics_file.py), in display order


def paper_value(mode: str, subset: str, init: str, test_set: str) -> tuple[float, float] | None:
    """The paper's (mean, std) for a group, where comparable: the paper measured sub-X runs on the sub-X test set,
    so on the full test set only the `full` rows have a published counterpart."""
    p = PAPER_RESULTS.get((mode, subset))
    if p is None or init not in p or (test_set == "test_full" and subset != "full"):
        return None
    return p[init]


def _shown(name: str) -> str:
    """A class name in a comma-separated list: quoted where it holds a comma, a space or a quote ("Cep, I")."""
    return name if re.fullmatch(r"[^,\s'\"]+", name) else repr(name)


def not_comparable(groups: Iterable[dict[str, Any]]) -> str | None:
    """Why the paper's numbers, measured on ASAS-SN's ten classes, are no yardstick for these groups (a survey
    ingested with `ingest lightcurves`, or a subset of the classes), or None when they are."""
    names: set[str] = set()
    for g in groups:
        names |= set(g.get("class_names") or ()) or {c for ts in TEST_SETS for c in g[ts]["per_class_recall"]}
    if not names or names == set(CLASS_NAMES):
        return None
    foreign = sorted(names - set(CLASS_NAMES))
    if foreign:
        more = " ..." if len(foreign) > 6 else ""
        return f"these runs classify {', '.join(map(_shown, foreign[:6]))}{more}, not AstroM3's ten classes"
    return f"these runs classify {len(names)} of AstroM3's ten classes ({', '.join(sorted(names))})"


def pair_key(mode: str, subset: str) -> tuple[int, int]:
    return (MODES.index(mode) if mode in MODES else 99, SUBSET_ORDER.index(subset) if subset in SUBSET_ORDER else 99)


def grid_order(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    pairs = set(pairs)
    return sorted(pairs, key=lambda p: pair_key(*p))
