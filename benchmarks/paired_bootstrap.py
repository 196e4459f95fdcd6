"""Is run A's test macro-F1 above run B's by more than the test set's sampling noise?

    python benchmarks/paired_bootstrap.py --a RUN_A1 RUN_A2 ... --b RUN_B1 RUN_B2 ... [--resamples 2000]
        [--split val]

A_i and B_i are two models' runs on the same split (e.g. the periodic preset and `astrom3 baseline` with
split seed 42, then 0, then 66). Prints the observed mean difference of macro-F1, the 95 % interval of the
paired bootstrap (astrom3_hpc/results/bootstrap.py says how it resamples) and the share of resamples in which A is
not below B. `--split val` compares the runs' validation predictions (predictions_val.csv) instead: the
comparison to decide on, leaving test for the final report. `astrom3 collect` runs the same comparison for every
group of a sweep against its baseline runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astrom3_hpc.results.bootstrap import RESAMPLES, paired_bootstrap, prediction_pair  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", nargs="+", type=Path, required=True, help="run directories of model A, one per split")
    ap.add_argument("--b", nargs="+", type=Path, required=True, help="model B's runs on the same splits, same order")
    ap.add_argument("--resamples", type=int, default=RESAMPLES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=("test", "val"), default="test",
                    help="which predictions to compare: predictions.csv (test) or predictions_val.csv")
    a = ap.parse_args(argv)
    if len(a.a) != len(a.b):
        ap.error(f"--a lists {len(a.a)} runs, --b {len(a.b)}: give one run of each model per split")
    try:
        pairs = [prediction_pair(x, y, a.split) for x, y in zip(a.a, a.b)]
    except (OSError, ValueError) as e:  # a missing run or predictions file, runs on different test sets
        ap.exit(2, f"paired_bootstrap.py: {e}\n")
    r = paired_bootstrap(pairs, a.resamples, a.seed)
    print(f"{a.split} macro-F1 A - B: {r['observed'] * 100:+.1f} points (mean of {r['pairs']} split(s), "
          f"{r['objects']} {a.split} objects); 95 % bootstrap interval "
          f"[{r['low'] * 100:+.1f}, {r['high'] * 100:+.1f}]; A >= B in {r['share_ahead'] * 100:.0f} % of "
          f"{a.resamples} resamples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
