"""Is run A's test macro-F1 above run B's by more than the test set's sampling noise?

    python benchmarks/paired_bootstrap.py --a RUN_A1 RUN_A2 ... --b RUN_B1 RUN_B2 ... [--resamples 2000]
        [--split val]

A_i and B_i are two models' runs on the same test set (e.g. the periodic preset and `astrom3 baseline` with
split seed 42, then 0, then 66); their predictions.csv must list the same objects (checked as `astrom3 ensemble`
checks its members). Each resample draws every pair's test objects with replacement, the same draw for A and B,
and takes the mean over pairs of macro-F1(A) - macro-F1(B) (classes present in the draw). Prints the observed
mean difference, the 2.5-97.5 % interval of the resampled ones and the share of resamples in which A is not
below B. Test splits of a few hundred objects with two or three members in some classes move macro-F1 by
several points per object (docs/lightcurves_results.md): this says how far apart two rows must be to differ.
`--split val` compares the runs' validation predictions (predictions_val.csv) instead: the comparison to decide
on, leaving test for the final report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astrom3_hpc.train.ensemble import read_same_test_set  # noqa: E402
from astrom3_hpc.train.evaluate import classification_report  # noqa: E402


def labels(run_a: Path, run_b: Path, split: str = "test") -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    names, (ra, rb) = read_same_test_set([run_a, run_b], split)
    idx = {c: i for i, c in enumerate(names)}
    y = np.array([idx[r["true_class"]] for r in ra])
    return names, y, np.array([idx[r["predicted_class"]] for r in ra]), np.array([idx[r["predicted_class"]] for r in rb])


def macro_f1_difference(pairs, draws) -> float:
    d = [classification_report(y[i], a[i], n)["macro_f1"] - classification_report(y[i], b[i], n)["macro_f1"]
         for (n, y, a, b), i in zip(pairs, draws)]
    return float(np.mean(d))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", nargs="+", type=Path, required=True, help="run directories of model A, one per split")
    ap.add_argument("--b", nargs="+", type=Path, required=True, help="model B's runs on the same splits, same order")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=("test", "val"), default="test",
                    help="which predictions to compare: predictions.csv (test) or predictions_val.csv")
    a = ap.parse_args(argv)
    if len(a.a) != len(a.b):
        ap.error(f"--a lists {len(a.a)} runs, --b {len(a.b)}: give one run of each model per split")
    pairs = [labels(x, y, a.split) for x, y in zip(a.a, a.b)]
    observed = macro_f1_difference(pairs, [np.arange(len(p[1])) for p in pairs])
    rng = np.random.default_rng(a.seed)
    diffs = np.array([macro_f1_difference(pairs, [rng.integers(0, len(p[1]), len(p[1])) for p in pairs])
                      for _ in range(a.resamples)])
    lo, hi = np.percentile(diffs, [2.5, 97.5]) * 100
    print(f"{a.split} macro-F1 A - B: {observed * 100:+.1f} points (mean of {len(pairs)} split(s), "
          f"{sum(len(p[1]) for p in pairs)} {a.split} objects); 95 % bootstrap interval [{lo:+.1f}, {hi:+.1f}]; "
          f"A >= B in {np.mean(diffs >= 0) * 100:.0f} % of {a.resamples} resamples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
