"""`astrom3 collect SWEEP_DIR`: gather the fine-tuning (and pretraining) results of a sweep into tables and a plot.

Reads
    <sweep>/manifest.json                          the task grid (optional: without it, run dirs are found by scan)
    <sweep>/runs/<task>/metrics.json               one fine-tuning result, written atomically on success only
    <sweep>/pretrain/s<seed>/metrics.json          `embedding_eval` of the pretraining run (or embedding_eval.json)
    <sweep>/logs/, <sweep>/jobs.json               scheduler output, for failed and missing tasks
Writes (atomically, into --out, default <sweep>/results)
    results.md  results.csv  results.json  accuracy_vs_fraction.png  per_class_recall.png

A task counts only if its metrics.json parses, has the expected keys and describes that task; a run directory
without one is "failed" (incomplete), a task without a run directory is "missing". Both are listed with their log
files; the collector still exits 0 (a partial sweep is a normal state, not an error of the collector).

The work is split by job: read.py and logs.py (run dirs and scheduler logs), stats.py, render.py,
plots.py, paper.py (the published numbers); this module only puts them together. See docs/collect.md.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TextIO

from ..core.atomic import finishing, write_json, write_text
from .bootstrap import against_baseline
from .logs import _last_line, parse_log_name, read_job_ids  # noqa: F401 - _last_line: tests import it from here
from .paper import PAPER_KNN1, PAPER_RESULTS
from .plots import plot_accuracy_vs_fraction, plot_per_class
from .read import BadMetrics, RunRecord, cell_table, gather, read_metrics
from .render import (nan_to_none, record_json, render_cell_csv, render_csv, render_markdown, stringify_keys,
                     summary_line)
from .stats import aggregate, aggregate_pretrain

# The names callers imported from the one-file collector stay importable from here.
__all__ = ["collect", "gather", "aggregate", "aggregate_pretrain", "render_markdown", "render_csv",
           "plot_accuracy_vs_fraction", "read_metrics", "BadMetrics", "RunRecord", "parse_log_name", "read_job_ids",
           "PAPER_RESULTS", "PAPER_KNN1"]


def collect(sweep_dir: str | Path, out: str | Path | None = None, std: str = "population",
            stream: TextIO | None = None, plot: bool = True) -> dict[str, Any]:
    """Gather, aggregate, write results.{md,csv,json} and (if `plot`) the plot into `out`; print the Markdown to
    `stream`. Returns the results dict (as written to results.json)."""
    if std not in ("population", "sample"):
        raise ValueError(f"std must be 'population' or 'sample', not {std!r}")
    root = Path(sweep_dir)
    out = Path(out) if out is not None else root / "results"
    # Earlier results in an output folder below the root are not runs; an output folder that IS the root is not
    # left out (that would leave out every run).
    below = out.resolve() != root.resolve() and out.resolve().is_relative_to(root.resolve())
    col = gather(root, exclude=out.resolve() if below else None)
    if not col.has_manifest and not col.runs and not col.pretrain:
        # Most likely the wrong folder: empty tables with exit 0 would look like a sweep with nothing done.
        raise ValueError(f"{root}: no runs below it (no manifest.json, and no run directory with metrics.json or "
                         "config.yaml); give a sweep directory or a folder of run directories")
    groups, comps, warn = aggregate(col.runs)
    baseline_rows, baseline_warn = against_baseline(col.runs, root)
    pre, pre_warn = aggregate_pretrain(col.pretrain)
    failures = [r for r in col.runs + col.pretrain if r.status != "complete"]
    res: dict[str, Any] = {
        "sweep": str(root), "generated": time.strftime("%Y-%m-%dT%H:%M:%S"), "has_manifest": col.has_manifest,
        "std": std, "seeds": col.seeds, "grid": [list(p) for p in col.grid],
        "summary": {"tasks": len(col.runs), "complete": sum(r.status == "complete" for r in col.runs),
                    "failed": sum(r.status == "failed" for r in col.runs),
                    "missing": sum(r.status == "missing" for r in col.runs), "line": summary_line(col.runs),
                    "pretrain_runs": len(col.pretrain),
                    "pretrain_complete": sum(r.status == "complete" for r in col.pretrain)},
        "groups": groups, "comparisons": comps, "against_baseline": baseline_rows, "pretrain": pre,
        "paper": {"results": [{"mode": m, "subset": s, "scratch": v["scratch"], "clip": v["clip"], "plus": v["plus"]}
                              for (m, s), v in PAPER_RESULTS.items()], "knn1": PAPER_KNN1},
        "warnings": col.warnings + warn + pre_warn + baseline_warn,
        "failures": [record_json(r) for r in failures],
        "runs": [record_json(r) for r in col.runs],
        "pretrain_runs": [record_json(r) for r in col.pretrain],
        "cell_hparams": cell_table(col.runs, root),
    }
    md = render_markdown({**res, "grid": col.grid, "_records": col.runs, "_pretrain_records": col.pretrain}, std)
    out.mkdir(parents=True, exist_ok=True)
    if plot:  # first, the slow part: stopped there, a collect leaves the previous files as one set
        plot_accuracy_vs_fraction(res, out / "accuracy_vs_fraction.png", std)
        plot_per_class(res, out / "per_class_recall.png")
    tables = {"results.md": md, "results.csv": render_csv(res), "cells.csv": render_cell_csv(res["cell_hparams"])}
    with finishing(f"collect's tables in {out}"):  # one set: a signal between them left old tables beside new
        for name, text in tables.items():
            write_text(out / name, text)
        write_json(out / "results.json", nan_to_none(stringify_keys(res)))
    if stream is not None:
        stream.write(md)
        stream.flush()
    return res
