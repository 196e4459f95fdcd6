"""Arrays derived from a store's light curves (per object, or per split: distillation's teacher), computed once and
kept beside the store's arrays.

`STORE/cache/<name>-<fingerprint>-v<version>.npy`, written to a temporary file and renamed: the loader of every
rank and every split, and the baseline, read it instead of recomputing per job. The name carries the store's
content fingerprint (data/checksums.py) and the code's version, so a rebuilt store or changed code never reads a
stale file; older files of the same name are removed when a new one is written. `astrom3 verify` ignores the
folder (it holds no array of the store).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.atomic import atomic_path
from .store import Store

log = logging.getLogger("astrom3")

CACHE_DIR = "cache"


def cache_path(store: Store, name: str, version: int) -> Path | None:
    """Where the store's `name` array is kept; None for a store without a content fingerprint (nothing would
    tell a stale file from a current one)."""
    fp = store.fingerprint
    if fp is None:
        return None
    return store.path / CACHE_DIR / f"{name}-{fp[:20]}-v{version}.npy"


def cache_contents(store: Store) -> dict[str, tuple[int, int]]:
    """{kind: (files, bytes)} of the store's cache, the kind being a file name up to its first dash
    (lc_features, lc_fold_resampled, distill_teacher, ...)."""
    out: dict[str, tuple[int, int]] = {}
    folder = store.path / CACHE_DIR
    for p in sorted(folder.glob("*.npy")) if folder.is_dir() else ():
        kind = p.name.split("-")[0]
        files, size = out.get(kind, (0, 0))
        out[kind] = (files + 1, size + p.stat().st_size)
    return out


def cached(store: Store, name: str, version: int, shape: tuple[int, ...], compute: Callable[[], np.ndarray],
           what: str) -> np.ndarray:
    """The store's `name` array: read from the cache when present with this shape, else `compute()` (float32)
    and written there (concurrent ranks each write a complete file and the last rename wins; an unwritable store
    only costs the recomputation)."""
    path = cache_path(store, name, version)
    if path is not None and path.exists():
        arr = np.load(path)
        if arr.shape == shape:
            return arr
        log.warning("%s: cached %s have shape %s, expected %s; recomputing", path, what, arr.shape, shape)
    arr = np.asarray(compute(), dtype=np.float32)  # no copy of an array already float32
    if path is None:
        return arr
    try:
        for old in path.parent.glob(f"{name}-*.npy") if path.parent.is_dir() else ():
            if old != path:
                old.unlink(missing_ok=True)  # a previous build's or older code's array
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr)
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        log.warning("%s: cannot cache the %s (%s); they are recomputed by every job", path, what, e)
    return arr


def cached_per_object(store: Store, name: str, version: int, row_shape: tuple[int, ...],
                      compute: Callable[[np.ndarray], np.ndarray], what: str) -> np.ndarray:
    """(n_objects, *row_shape) float32: `compute(rows)` for the rows with a light curve, NaN elsewhere, cached."""
    shape = (store.n_objects, *row_shape)

    def every_row() -> np.ndarray:
        rows = np.flatnonzero(store.root["present"][:, 0].astype(bool))
        arr = np.full(shape, np.nan, np.float32)
        if len(rows):
            log.info("%s: computing %s for %d objects (once per store)", store.path, what, len(rows))
            with np.errstate(all="ignore"):
                arr[rows] = compute(rows).astype(np.float32)
        return arr

    return cached(store, name, version, shape, every_row, what)
