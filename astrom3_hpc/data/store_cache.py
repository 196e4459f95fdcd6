"""Arrays derived from a store's light curves (per object, or per split: distillation's teacher), computed once and
kept beside the store's arrays.

`STORE/cache/<name>-<fingerprint>-v<version>.npy`, written to a temporary file and renamed: the loader of every
rank and every split, and the baseline, read it instead of recomputing per job. The name carries the store's
content fingerprint (data/checksums.py) and the code's version, so a rebuilt store or changed code never reads a
stale file; older files of the same name are removed when a new one is written. `astrom3 verify` ignores the
folder (it holds no array of the store).

Jobs that need the same array at the same time (the tasks of a sweep's array, the ranks of one job) take turns on
a lock file beside it (`cache/.<name>.lock`): the first computes it, on the cores allotted to it, while the others
wait and then read it, instead of each computing it on a share of the cores. Where the file system offers no
locks, each computes it as before.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.atomic import atomic_path
from ..core.locks import held
from ..core.processes import allotted_cores, map_in_processes
from ..core.progress import Progress
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


def _load(path: Path | None, shape: tuple[int, ...], what: str) -> np.ndarray | None:
    if path is None or not path.exists():
        return None
    arr = np.load(path)
    if arr.shape == shape:
        return arr
    log.warning("%s: cached %s have shape %s, expected %s; recomputing", path, what, arr.shape, shape)
    return None


def _turn(path: Path | None, name: str, what: str):
    """Hold the lock file of the store's cached `name` array at `path`, waiting (with a log line) while another
    process computes it (its own log shows its progress)."""
    return nullcontext() if path is None else held(path.parent / f".{name}.lock",
                                                   wait=f"another process is computing the {what}")


def cached(store: Store, name: str, version: int, shape: tuple[int, ...], compute: Callable[[], np.ndarray],
           what: str) -> np.ndarray:
    """The store's `name` array: read from the cache when present with this shape, else `compute()` (float32)
    and written there (an unwritable store only costs the recomputation)."""
    path = cache_path(store, name, version)
    arr = _load(path, shape, what)
    if arr is not None:
        return arr
    with _turn(path, name, what):
        arr = _load(path, shape, what)  # written while this process waited its turn
        if arr is not None:
            return arr
        arr = np.asarray(compute(), dtype=np.float32)  # no copy of an array already float32
        if path is not None:
            _write(path, name, arr, what)
    return arr


def _write(path: Path, name: str, arr: np.ndarray, what: str) -> None:
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


def cached_per_object(store: Store, name: str, version: int, row_shape: tuple[int, ...],
                      compute: Callable[[Store, np.ndarray], np.ndarray], what: str, workers: int = 0) -> np.ndarray:
    """(n_objects, *row_shape) float32: `compute(store, rows)` for the rows with a light curve, NaN elsewhere,
    cached; computed by `per_object` on up to `workers` processes (0: every core allotted to this process)."""
    shape = (store.n_objects, *row_shape)

    def every_row() -> np.ndarray:
        # The result outlives the chunks it came from (its name is the checksum table's fingerprint, which a
        # damaged chunk does not change): hash what it reads once, before computing.
        store.check_arrays([a for a in ("lc/values", "lc/offsets", "lc/stats", "aux", "present", "lc/period_search")
                            if a in store.root])
        rows = np.flatnonzero(store.root["present"][:, 0].astype(bool))
        arr = np.full(shape, np.nan, np.float32)
        if len(rows):
            log.info("%s: computing %s for %d objects (once per store)", store.path, what, len(rows))
            arr[rows] = per_object(store, rows, compute, workers or allotted_cores(), what)
        return arr

    return cached(store, name, version, shape, every_row, what)


# Work estimated (from the first PROBE_ROWS objects) to take less than this stays in this process: starting the
# workers, each importing numpy, scipy and torch, costs a few seconds.
PARALLEL_AFTER_S = 5.0
PROBE_ROWS = 16


def per_object(store: Store, rows: np.ndarray, compute: Callable[[Store, np.ndarray], np.ndarray], workers: int,
               what: str) -> np.ndarray:
    """compute(store, rows) as float32, with a progress bar, the rows shared out over `workers` processes when the
    first rows' time says the whole would take over PARALLEL_AFTER_S. `compute` must pickle (a module-level function
    or a functools.partial of one) and compute each row from that object alone, so the result is the same however
    the rows are shared out (a Lomb-Scargle search of 700 points on a 200,000-frequency grid is 85 ms: 20,000 such
    objects are half an hour on one core)."""
    with Progress(len(rows), f"{store.path.name}: {what}") as bar:
        t0 = time.perf_counter()
        parts = [_rows(store, compute, rows[:PROBE_ROWS])]
        bar.update(len(parts[0]))
        rest = rows[PROBE_ROWS:]
        if len(rest):
            per_row = (time.perf_counter() - t0) / PROBE_ROWS
            parallel = workers > 1 and len(rest) > 1 and per_row * len(rest) > PARALLEL_AFTER_S
            pieces = np.array_split(rest, min(len(rest), max(4 * workers if parallel else 1, -(-len(rest) // 256))))
            if parallel:
                log.info("%s: %s of %d more objects in %d processes", store.path, what, len(rest), workers)
                fn, args = _rows_in_worker, [(str(store.path), compute, p) for p in pieces]
            else:
                fn, args = partial(_rows, store, compute), [(p,) for p in pieces]
            parts += map_in_processes(fn, args, workers if parallel else 1, lambda i: bar.update(len(pieces[i])))
    return np.concatenate(parts)


def _rows(store: Store, compute: Callable[[Store, np.ndarray], np.ndarray], rows: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(compute(store, rows), dtype=np.float32)


def _rows_in_worker(path: str, compute: Callable[[Store, np.ndarray], np.ndarray], rows: np.ndarray) -> np.ndarray:
    # The parent has checked the store and said what there was to say of it (an older store's missing checksum
    # table, say): not again from each worker.
    log.setLevel(logging.ERROR)
    return _rows(Store(path, check_chunks=False), compute, rows)
