"""Ground truth for stores built from the synthetic generator.

The store keeps only the (possibly wrong) labels. Its `provenance.source` attributes record the generator, its
seed and options, so the generator can be re-created and asked, per store row (= generator index), for the true
class, whether the label was planted wrong, whether the class is unseen in training, and the hidden sub-type.
Classes and markers come from one vectorised code array (no object generation); sub-types need `get(i)` for the
rows asked (a few ms each).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("astrom3")


@dataclass
class Truth:
    source: Any  # the re-created SyntheticSource
    true_class: np.ndarray  # (n_objects,) str: true class name, incl. the unseen classes (DCEP, ELL)
    mislabeled: np.ndarray  # (n_objects,) bool: the stored label is a planted wrong class
    unseen: np.ndarray  # (n_objects,) bool: a class the model never saw labelled (label -1)

    def subtypes(self, rows) -> np.ndarray:
        """Hidden sub-type (str, '' when the class has none) of the given store rows; generates those objects."""
        return np.array([self.source.get(int(r)).extra.get("subtype") or "" for r in rows], dtype=object)


def synthetic_truth(store_attrs: dict, labels: np.ndarray | None = None, rows: np.ndarray | None = None
                    ) -> Truth | None:
    """Truth for a store built by `astrom3 ingest synthetic`; None for real data (or an unknown generator).

    `store_attrs`: the store's attributes (or any dict with its "provenance"). `labels`: stored labels of the
    store rows `rows` (default: all rows); the re-created generator must reproduce them exactly (else the
    provenance does not describe this store, and no truth is returned). Arrays of the result are indexed by
    store row.
    """
    from ..data.synthetic import GENERATOR_NAME, GENERATOR_VERSION, SyntheticSource

    src = (store_attrs.get("provenance") or {}).get("source") or {}
    if src.get("generator") != GENERATOR_NAME:
        return None
    if src.get("version") != GENERATOR_VERSION:
        log.warning("store made by generator version %s, this code has %s: checking that labels still match",
                    src.get("version"), GENERATOR_VERSION)
    try:
        source = SyntheticSource(int(src["n_objects"]), seed=int(src["seed"]),
                                 missing_rate=float(src.get("missing_rate", 0.003)),
                                 outlier_rate=float(src.get("outlier_rate", 0.005)),
                                 class_counts=src.get("class_counts"),
                                 unseen_fraction=float(src.get("unseen_fraction", 0.0)),
                                 mislabel_fraction=float(src.get("mislabel_fraction", 0.0)),
                                 subtypes=bool(src.get("subtypes", True)))
    except (KeyError, TypeError, ValueError) as e:
        log.warning("store provenance does not describe a generator run (%s): no ground truth", e)
        return None
    gen_labels = source.labels()
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        rows = np.arange(len(labels)) if rows is None else np.asarray(rows, dtype=np.int64)
        ok = (len(rows) == len(labels) and (len(rows) == 0 or (rows.min() >= 0 and rows.max() < len(gen_labels)))
              and bool(np.all(gen_labels[rows] == labels)))
        if not ok:
            log.warning("the re-created generator does not reproduce the store's labels: no ground truth")
            return None
    kinds = np.array(source.true_kinds(), dtype=object)
    from ..data.synthetic import UNSEEN_CLASSES

    unseen = np.isin(kinds, list(UNSEEN_CLASSES))
    from ..core.constants import CLASS_NAMES

    true_label = np.array([CLASS_NAMES.index(k) if k in CLASS_NAMES else -1 for k in kinds], dtype=np.int64)
    mislabeled = (~unseen) & (true_label != gen_labels)
    return Truth(source=source, true_class=kinds, mislabeled=mislabeled, unseen=unseen)
