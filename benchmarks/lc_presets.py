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
execution's, both measured in this run.
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
NO_INFORMER = ("model.periodic_tokens=false", "model.periodic_views=[fold_full]")
EXECUTIONS = {
    "preset": ("periodic_finetune.yaml", ()),
    "preset-no-informer": ("periodic_finetune.yaml", NO_INFORMER),
    "large": ("periodic_finetune_large.yaml", ()),
    "large-fast": ("periodic_finetune_large_fast.yaml", ()),
}


def run_once(name: str, store: str, epochs: int, threads: int, work: Path, extra: list[str]) -> tuple[float, float]:
    """(median s/epoch after the first, wall seconds) of one fine-tune."""
    config, sets = EXECUTIONS[name]
    run_dir = work / f"{name}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "astrom3_hpc.cli", "finetune", "--config", str(ROOT / "configs" / config),
           "--run-dir", str(run_dir), "--set", f"data.store={store}", "data.seed=42", f"train.epochs={epochs}",
           "train.early_stop_patience=0", f"train.threads={threads}", *sets, *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
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
    per_epoch: dict[str, list[float]] = {n: [] for n in names}
    walls: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="lc-presets-") as tmp:
        for _ in range(args.rounds):
            for n in names:
                s, w = run_once(n, store, args.epochs, args.threads, Path(tmp), args.set)
                per_epoch[n].append(s)
                walls[n].append(w)
    base = statistics.median(per_epoch["preset"])
    print(f"store {args.store}, {args.epochs} epochs per run, {args.rounds} round(s), train.threads={args.threads}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'execution':20s} {'s/epoch':>8s} {'preset / it':>12s} {'run wall s':>11s}")
    for n in names:
        s = statistics.median(per_epoch[n])
        print(f"{n:20s} {s:8.3f} {base / s:11.1f}x {statistics.median(walls[n]):11.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
