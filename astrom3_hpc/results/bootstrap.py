"""Is one model's macro-F1 above another's by more than the test set's sampling noise? The paired bootstrap.

Two models' runs on the same split (same store, split seed and subset: their predictions files list the same
objects, checked as `astrom3 ensemble` checks its members) form a pair. Each resample draws every pair's objects
with replacement, the same draw for both models, and takes the mean over pairs of macro-F1(A) - macro-F1(B)
(classes present in the draw). The 2.5-97.5 % range of the resampled differences is the interval; the share of
resamples with A >= B says how often A is not behind. Test splits of a few hundred objects, with two or three
members in some classes, move macro-F1 by several points per object (docs/lightcurves_results.md): this is how
far apart two rows must be to differ. benchmarks/paired_bootstrap.py runs it on any runs; `astrom3 collect` on
every group of a sweep against its classical baseline (init "baseline").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..train.ensemble import read_same_test_set
from ..train.evaluate import classification_report
from .read import RunRecord

RESAMPLES = 2000

Pair = tuple[list[str], np.ndarray, np.ndarray, np.ndarray]  # class names, truth, A's and B's predicted classes


def prediction_pair(run_a: Path, run_b: Path, split: str = "test") -> Pair:
    """The two runs' predictions of one set ("test": predictions.csv, "val": predictions_val.csv) as indices."""
    names, (ra, rb) = read_same_test_set([run_a, run_b], split)
    idx = {c: i for i, c in enumerate(names)}
    y = np.array([idx[r["true_class"]] for r in ra])
    return names, y, np.array([idx[r["predicted_class"]] for r in ra]), np.array([idx[r["predicted_class"]]
                                                                                   for r in rb])


def macro_f1_difference(pairs: list[Pair], draws: list[np.ndarray]) -> float:
    d = [classification_report(y[i], a[i], n)["macro_f1"] - classification_report(y[i], b[i], n)["macro_f1"]
         for (n, y, a, b), i in zip(pairs, draws)]
    return float(np.mean(d))


def _content_key(pair: Pair) -> tuple:
    names, y, a, b = pair
    return (len(y), tuple(names), y.tobytes(), a.tobytes(), b.tobytes())


def paired_bootstrap(pairs: list[Pair], resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Observed mean difference of macro-F1 (A - B, fractions), its 95 % interval and the share of resamples
    with A >= B. The pairs take their draws in an order fixed by their contents, so the same runs listed in
    another order (collect sorts by seed, a user lists them as they like) get the same draws and interval."""
    pairs = sorted(pairs, key=_content_key)
    observed = macro_f1_difference(pairs, [np.arange(len(p[1])) for p in pairs])
    rng = np.random.default_rng(seed)
    diffs = np.array([macro_f1_difference(pairs, [rng.integers(0, len(p[1]), len(p[1])) for p in pairs])
                      for _ in range(resamples)])
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"observed": observed, "low": float(low), "high": float(high),
            "share_ahead": float(np.mean(diffs >= 0)), "resamples": resamples, "pairs": len(pairs),
            "objects": sum(len(p[1]) for p in pairs)}


def against_baseline(runs: list[RunRecord], root: Path,
                     resamples: int = RESAMPLES) -> tuple[list[dict[str, Any]], list[str]]:
    """Per (mode, subset) that has baseline runs: every other init's runs against them, paired by split seed, on
    the test and the validation predictions. Returns the rows and warnings for pairs that could not be read."""
    by_group: dict[tuple[str, str, str], dict[int, RunRecord]] = {}
    for r in runs:
        if r.status == "complete":
            by_group.setdefault((r.mode, r.subset, r.init), {})[r.seed] = r
    rows, warn = [], []
    for (mode, subset, init), mine in sorted(by_group.items(), key=lambda kv: str(kv[0])):
        base = by_group.get((mode, subset, "baseline"))
        seeds = sorted(set(mine) & set(base or ()))
        if init == "baseline" or not seeds:
            continue
        row: dict[str, Any] = {"mode": mode, "subset": subset, "init": init, "seeds": seeds}
        for split in ("test", "val"):
            try:
                pairs = [prediction_pair(root / mine[s].run_dir, root / base[s].run_dir, split) for s in seeds]
            except (OSError, ValueError, KeyError) as e:
                row[split] = None
                warn.append(f"{mode}/{subset}/{init} against the baseline, {split}: not compared ({e})")
                continue
            row[split] = paired_bootstrap(pairs, resamples)
        rows.append(row)
    return rows, warn
