"""Time to compute a store's per-object caches in one process against several (data/store_cache.py `per_object`).

    python benchmarks/store_cache.py STORE [--rows N] [--workers 2] [--only features folds]

Each cache is computed for the store's first N objects with a light curve (default all) in this process, then
shared out over --workers processes (default: the cores allotted to this process), and the two arrays are compared
bit for bit. Nothing is written to the store. The ratio is the one-process time over the shared-out time, both
measured in this run; the shared-out time includes starting the workers.

  features  Lomb-Scargle search (where the store holds none) and classical features: the baseline's input
  folds     every point folded at the store's period (the periodic encoder's full-curve fold)
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from astrom3_hpc.core.processes import allotted_cores  # noqa: E402
from astrom3_hpc.data import lc_features, lc_folds, store_cache  # noqa: E402
from astrom3_hpc.data.store import Store, StoreError  # noqa: E402

CACHES = {
    "features": partial(lc_features.store_features, period_source="ls"),
    "folds": lc_folds.store_folds,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store")
    ap.add_argument("--rows", type=int, default=0, help="objects to compute (default: every one with a light curve)")
    ap.add_argument("--workers", type=int, default=0, help="processes of the shared-out run (default: allotted cores)")
    ap.add_argument("--only", nargs="+", choices=sorted(CACHES), default=sorted(CACHES))
    args = ap.parse_args(argv)
    try:
        store = Store(args.store)
    except (OSError, StoreError) as e:
        ap.exit(2, f"store_cache.py: {e}\n")
    rows = np.flatnonzero(store.root["present"][:, 0].astype(bool))
    rows = rows[:args.rows] if args.rows > 0 else rows
    workers = args.workers or allotted_cores()
    searched = "lc/period_search" in store.root and np.isfinite(store.root["lc/period_search"][:]).all()
    print(f"store {store.path}: {len(rows)} objects, period search {'stored' if searched else 'computed here'}, "
          f"{workers} workers")
    store_cache.PARALLEL_AFTER_S = 0.0  # always share out, to measure it
    for name in args.only:
        t0 = time.perf_counter()
        alone = store_cache.per_object(store, rows, CACHES[name], 1, name)
        t1 = time.perf_counter()
        shared = store_cache.per_object(store, rows, CACHES[name], workers, name)
        t2 = time.perf_counter()
        same = np.array_equal(alone, shared, equal_nan=True)
        print(f"{name:9s} one process {t1 - t0:7.2f} s   {workers} processes {t2 - t1:7.2f} s   "
              f"{(t1 - t0) / (t2 - t1):5.2f}x   identical: {same}")
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
