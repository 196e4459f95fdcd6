"""Fine-tuning time per epoch of the light-curve configs on one store, as ratios against the `periodic` preset.

    python benchmarks/lc_presets.py STORE [--epochs 4] [--rounds 1] [--threads 2] [--only NAME ...] [--set K=V ...]

Each execution fine-tunes photometry from scratch (split seed 42) for --epochs epochs in a process of its own, one
at a time, the executions alternating for --rounds rounds because the machine may be shared:

  preset              configs/periodic_finetune.yaml
  preset-no-informer  the same with model.periodic_tokens=false, model.periodic_views=[fold_full]
  large               configs/periodic_finetune_large.yaml
  large-fast          configs/periodic_finetune_large_fast.yaml (no Informer, five members)

s/epoch is the median over each run's epochs after the first (metrics.jsonl `seconds`: training and validation);
the run's wall time also holds the once-per-run work (start-up; the store's caches and distillation's five baseline
fits, both paid by the first run on a store or split only). The ratio is the preset's s/epoch over each
execution's, both measured in this run; with --rounds > 1 the per-round ratios show the spread. A store whose train
split is too small for distillation's cross-fitting (large, large-fast) is refused before any run; a run that fails
later still leaves the table of what ran.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Cross-fitting's folds (train/baseline.py cross_fitted_probabilities): the teacher needs this many per class.
DISTILL_FOLDS = 5
NO_INFORMER = ("model.periodic_tokens=false", "model.periodic_views=[fold_full]")
EXECUTIONS = {
    "preset": ("periodic_finetune.yaml", ()),
    "preset-no-informer": ("periodic_finetune.yaml", NO_INFORMER),
    "large": ("periodic_finetune_large.yaml", ()),
    "large-fast": ("periodic_finetune_large_fast.yaml", ()),
}


def overrides(name: str, store: str, epochs: int, threads: int, extra: list[str]) -> list[str]:
    return [f"data.store={store}", "data.seed=42", f"train.epochs={epochs}", "train.early_stop_patience=0",
            f"train.threads={threads}", *EXECUTIONS[name][1], *extra]


def check_distillation(names: list[str], store: str, extra: list[str]) -> str | None:
    """Why the store cannot run the executions that distil from the baseline (large, large-fast), or None: their
    cross-fitting needs DISTILL_FOLDS training objects per class, and used to fail only after the other configs
    had run for minutes."""
    import numpy as np

    from astrom3_hpc.core.config import load_config
    from astrom3_hpc.data.store import Store

    distilling = []
    for n in names:
        cfg = load_config(ROOT / "configs" / EXECUTIONS[n][0], overrides(n, store, 2, 1, extra))
        if cfg.finetune.distill == "baseline":
            distilling.append(n)
    if not distilling:
        return None
    s = Store(store)
    counts = np.bincount(s.labels[s.split(cfg.data.seed, cfg.data.subset, "train")], minlength=len(s.class_names))
    few = [f"{s.class_names[c]} {counts[c]}" for c in np.flatnonzero((counts > 0) & (counts < DISTILL_FOLDS))]
    if not few:
        return None
    return (f"{', '.join(distilling)} distil from the baseline, whose cross-fitting needs {DISTILL_FOLDS} training "
            f"objects per class; the train split (seed {cfg.data.seed}, {cfg.data.subset}) holds {', '.join(few)}: "
            f"leave them out with --only, or --set finetune.distill=none")


def run_once(name: str, store: str, epochs: int, threads: int, work: Path, extra: list[str]) -> tuple[float, float]:
    """(median s/epoch after the first, wall seconds) of one fine-tune."""
    run_dir = work / f"{name}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "astrom3_hpc.cli", "finetune", "--config", str(ROOT / "configs" / EXECUTIONS[name][0]),
           "--run-dir", str(run_dir), "--set", *overrides(name, store, epochs, threads, extra)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"]
                                                     if os.environ.get("PYTHONPATH") else "")}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{name}: finetune exited {r.returncode}\n{r.stderr[-3000:]}")
    seconds = [json.loads(line)["seconds"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(seconds[1:] or seconds), wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", help="a light-curve store (astrom3 ingest lightcurves)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is not timed)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="train.threads of every run")
    ap.add_argument("--only", nargs="+", choices=list(EXECUTIONS), help="executions to run (preset always runs)")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="config overrides for every execution, after the benchmark's own")
    args = ap.parse_args(argv)
    if args.epochs < 2:
        ap.error("--epochs must be at least 2: the first epoch is not timed")
    names = ["preset", *[n for n in (args.only or EXECUTIONS) if n != "preset"]]
    store = str(Path(args.store).resolve())
    why = check_distillation(names, store, args.set)
    if why:
        ap.error(why)
    per_epoch: dict[str, list[float]] = {n: [] for n in names}
    walls: dict[str, list[float]] = {n: [] for n in names}
    failed, current = None, None
    with tempfile.TemporaryDirectory(prefix="lc-presets-") as tmp:
        try:
            for _ in range(args.rounds):
                for n in names:
                    current = n
                    s, w = run_once(n, store, args.epochs, args.threads, Path(tmp), args.set)
                    per_epoch[n].append(s)
                    walls[n].append(w)
        except SystemExit as e:  # a run failed: still show what the others measured
            failed = e
    loads = os.getloadavg()[0]
    print(f"store {args.store}, {args.epochs} epochs per run, {args.rounds} round(s), train.threads={args.threads}, "
          f"load average {loads:.2f}")
    print(f"{'execution':20s} {'s/epoch':>8s} {'preset / it':>12s} {'run wall s':>11s}  s/epoch per round")
    base = statistics.median(per_epoch["preset"]) if per_epoch["preset"] else None
    for n in names:
        if not per_epoch[n]:
            print(f"{n:20s} {'-':>8s} {'-':>12s} {'-':>11s}  ({'failed, below' if n == current else 'not run'})")
            continue
        s = statistics.median(per_epoch[n])
        ratio = f"{base / s:11.1f}x" if base else f"{'-':>12s}"
        rounds = " / ".join(f"{x:.2f}" for x in per_epoch[n])
        print(f"{n:20s} {s:8.3f} {ratio} {statistics.median(walls[n]):11.1f}  {rounds}")
    if len(per_epoch["preset"]) > 1:
        print("preset / it per round (the spread is the noise): " + "; ".join(
            f"{n} " + " / ".join(f"{p / x:.2f}x" for p, x in zip(per_epoch["preset"], per_epoch[n]))
            for n in names[1:] if per_epoch[n]))
    if failed is not None:
        raise failed
    return 0


if __name__ == "__main__":
    sys.exit(main())
