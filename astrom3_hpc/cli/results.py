"""`astrom3 collect`: argument parsing for the results collector (astrom3_hpc.results.collect does the work);
`main(argv)` runs it alone (`python -m astrom3_hpc.cli.results SWEEP_DIR ...`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..results.collect import collect


DESCRIPTION = ("Read every fine-tuning run of a sweep (manifest or plain directory of run dirs), aggregate test "
               "accuracy over seeds per (mode, subset, init) with a paired t-test CLIP vs scratch, and write "
               "results.md/.csv/.json, accuracy_vs_fraction.png next to the paper's numbers and "
               "per_class_recall.png (every group's per-class recall and macro-F1, the baseline's included). "
               "Failed and missing tasks are listed with their log files; the exit code is 0 all the same.")


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep_dir", help="sweep directory (with manifest.json) or any directory of run directories")
    p.add_argument("--out", help="output directory (default SWEEP_DIR/results)")
    p.add_argument("--std", choices=["population", "sample"], default="population",
                   help="std shown in results.md and the plot: population (ddof=0, the paper's; default) or sample "
                        "(ddof=1); results.csv/json carry both")
    p.set_defaults(func=cmd_collect)


def add_parser(sub) -> argparse.ArgumentParser:
    """Register `collect` on an argparse subparsers object (cli/__init__.py's build_parser)."""
    p = sub.add_parser("collect", help="collect a sweep's results into tables and a plot next to the paper's",
                       description=DESCRIPTION)
    _add_args(p)
    return p


def cmd_collect(args) -> int:
    try:
        res = collect(args.sweep_dir, getattr(args, "out", None), getattr(args, "std", "population"),
                      stream=sys.stdout)
    except (FileNotFoundError, ValueError) as e:  # a folder that is not there or holds no run
        print(f"astrom3 collect: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if getattr(args, "out", None) else Path(args.sweep_dir) / "results"
    figures = [f for f in ("accuracy_vs_fraction.png", "per_class_recall.png") if (out / f).exists()]
    print(f"wrote {out}/results.md, results.csv, results.json" + "".join(f", {f}" for f in figures), file=sys.stderr)
    print(res["summary"]["line"], file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m astrom3_hpc.cli.results SWEEP_DIR [--out DIR] [--std ...]`."""
    p = argparse.ArgumentParser(prog="astrom3 collect", description=DESCRIPTION)
    _add_args(p)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
