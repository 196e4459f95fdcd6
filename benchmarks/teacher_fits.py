"""The distillation teacher's five cross-fitted baseline fits: one process against several (train/baseline.py).

    python benchmarks/teacher_fits.py STORE [--seed 42] [--subset full] [--workers 2] [--rounds 1]

What `finetune.distill: baseline` fits once per split (cross_fitted_probabilities on the train split's Lomb-Scargle
features, the store's cached ones): first in this process, one fold after another, then shared out over --workers
processes of one OpenMP thread each, the two alternating for --rounds. The probabilities are compared bit for bit;
the ratio is the one-process time over the shared-out time (worker start-up included), both from this run. Nothing
is written to the store but its feature cache, where that is missing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from astrom3_hpc.data.store import Store  # noqa: E402
from astrom3_hpc.train.baseline import baseline_features, cross_fitted_probabilities  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", help="a light-curve store (astrom3 ingest lightcurves)")
    ap.add_argument("--seed", type=int, default=42, help="split seed")
    ap.add_argument("--subset", default="full")
    ap.add_argument("--workers", type=int, default=2, help="processes of the shared-out fits (at most 5 are used)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args(argv)
    if args.workers < 2 or args.rounds < 1:
        ap.error("--workers must be at least 2 and --rounds at least 1")
    store = Store(args.store)
    rows = np.sort(store.split(args.seed, args.subset, "train"))
    y = store.labels[rows]
    t0 = time.perf_counter()
    x = baseline_features(store, rows, "ls")
    print(f"{args.store}: {len(rows)} training objects (seed {args.seed}, {args.subset}), {x.shape[1]} features "
          f"({time.perf_counter() - t0:.1f} s to read or compute them); load average {os.getloadavg()[0]:.2f}",
          flush=True)
    n_classes = len(store.class_names)
    times: dict[int, list[float]] = {1: [], args.workers: []}
    probs: dict[int, np.ndarray] = {}
    for r in range(args.rounds):
        for threads in (1, args.workers):
            t0 = time.perf_counter()
            probs[threads] = cross_fitted_probabilities(x, y, n_classes, seed=args.seed, threads=threads)
            times[threads].append(time.perf_counter() - t0)
            print(f"round {r + 1}/{args.rounds}: {threads} process(es) {times[threads][-1]:6.1f} s", flush=True)
    same = np.array_equal(probs[1], probs[args.workers])
    one, many = statistics.median(times[1]), statistics.median(times[args.workers])
    print(f"five fits: one process {one:.1f} s, {args.workers} processes {many:.1f} s: {one / many:.2f}x; "
          f"probabilities {'identical' if same else 'DIFFER'}; load average {os.getloadavg()[0]:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
