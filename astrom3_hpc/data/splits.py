"""Train/val/test splits per seed and the label-fraction subsets (spec section 1)."""

from __future__ import annotations

import numpy as np

from ..core.constants import SPLIT_FRACTIONS, SUBSET_FACTORS


def split_indices(labels: np.ndarray, valid: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """80/10/10 split of the valid objects, stratified by class: each class's objects are shared out by rounding,
    so a class of 8 or more objects appears in every split and a smaller one misses val or test
    (`classes_missing_from_splits` names them; ingestion warns).

    Returns sorted row indices (sorted so the loader reads chunk-aligned runs).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    rows = np.flatnonzero(valid)
    for c in np.unique(labels[rows]):
        idx = rows[labels[rows] == c]
        idx = idx[rng.permutation(len(idx))]
        n_train = int(round(SPLIT_FRACTIONS[0] * len(idx)))
        n_val = int(round(SPLIT_FRACTIONS[1] * len(idx)))
        out["train"].append(idx[:n_train])
        out["val"].append(idx[n_train:n_train + n_val])
        out["test"].append(idx[n_train + n_val:])
    return {k: np.sort(np.concatenate(v)) if v else np.zeros(0, np.int64) for k, v in out.items()}


def classes_missing_from_splits(sets_per_seed: dict[int, dict[str, dict[str, np.ndarray]]], labels: np.ndarray
                                ) -> dict[int, int]:
    """{label: objects in the seed's full split} for each class absent from the full val or test split of some
    seed: its recall cannot be measured there, and early stopping never sees it."""
    missing: dict[int, int] = {}
    for sets in sets_per_seed.values():
        full = sets["full"]
        everywhere = [set(np.unique(labels[full[s]]).tolist()) for s in ("val", "test")]
        counts = np.bincount(labels[np.concatenate([full[s] for s in ("train", "val", "test")])])
        for c in np.flatnonzero(counts).tolist():
            if not all(c in e for e in everywhere):
                missing[c] = int(counts[c])
    return dict(sorted(missing.items()))


def subset_threshold(class_counts: list[int] | np.ndarray, factor: int) -> int:
    """Water-filling cap T: the per-class maximum that leaves about len(split) // factor objects.

    Follows the reference exactly, including its floor division (T may fall below the smallest class).
    """
    counts = np.sort(np.asarray(class_counts, dtype=np.int64))
    k = len(counts)
    goal = int(counts.sum()) // factor
    count = k * int(counts[0])
    i = 1
    while i < k and count + (k - i) * int(counts[i] - counts[i - 1]) < goal:
        count += (k - i) * int(counts[i] - counts[i - 1])
        i += 1
    # k == i only with a single class (a tiny split): the cap is then the goal itself.
    return (goal - count) // max(k - i, 1) + int(counts[i - 1])


def subset_indices(idx: np.ndarray, labels: np.ndarray, factor: int, seed: int) -> np.ndarray:
    """Cap every class of the split `idx` at the water-filling threshold by seeded random down-sampling."""
    if factor == 1 or len(idx) == 0:
        return np.sort(idx)
    lab = labels[idx]
    classes, counts = np.unique(lab, return_counts=True)
    # On tiny splits (a few objects per class) the cap can reach 0 or below; keep one object per class
    # rather than an empty split. Stores of the paper's size never get near this.
    t = max(subset_threshold(counts, factor), 1)
    rng = np.random.default_rng([seed, factor])
    keep = []
    for c in classes:
        members = idx[lab == c]
        if len(members) > t:
            members = members[np.sort(rng.choice(len(members), size=t, replace=False))]
        keep.append(members)
    return np.sort(np.concatenate(keep))


def given_splits(given: dict[str, dict[str, np.ndarray]], labels: np.ndarray, valid: np.ndarray, seed: int
                 ) -> dict[str, dict[str, np.ndarray]]:
    """A user's own splits of one seed ({subset: {split: rows}}, e.g. from split files), every subset.

    Rows that ingestion skipped or left unlabelled are dropped; subsets the user did not give are derived
    from their full split by the same capping as generated ones (split_files.resolve_splits).
    """
    if "full" not in given:
        raise ValueError(f"split seed {seed}: the given splits have subsets {sorted(given)} but no 'full'")
    keep = valid & (labels >= 0)
    out = {sub: {k: np.sort(v[keep[v]]) for k, v in parts.items()} for sub, parts in given.items()}
    for name, f in SUBSET_FACTORS.items():
        if name not in out:
            out[name] = {k: subset_indices(v, labels, f, seed) for k, v in out["full"].items()}
    return out
