"""Statistics over seeds: mean and std per (mode, subset, init), the paired t-test CLIP vs scratch, per-class
recall, and the frozen-embedding accuracies of the pretraining runs."""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable

import numpy as np

from .paper import (ALL_INITS, ALPHA, EMBEDDING_VIEWS, PAPER_KNN1, PAPER_RESULTS, TEST_SETS, grid_order,
                    not_comparable, pair_key, paper_value)
from .read import RunRecord, finite_number


def describe(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    n = len(a)
    return {"mean": float(a.mean()) if n else float("nan"),
            "std_pop": float(a.std(ddof=0)) if n else float("nan"),
            "std_sample": float(a.std(ddof=1)) if n > 1 else float("nan")}


def paired_ttest(clip: dict[int, float], scratch: dict[int, float]) -> dict[str, Any]:
    """scipy.stats.ttest_rel (two-sided) of CLIP vs scratch over the seeds both have."""
    seeds = sorted(set(clip) & set(scratch))
    a = np.array([clip[s] for s in seeds], dtype=float)
    b = np.array([scratch[s] for s in seeds], dtype=float)
    # The direction of the test is that of the pairs: a seed run on one side only does not enter it.
    out: dict[str, Any] = {"seeds": seeds, "n_pairs": len(seeds), "t": float("nan"), "p_value": float("nan"),
                           "paired_diff": float((a - b).mean()) if len(seeds) else float("nan")}
    if len(seeds) < 2:
        return out
    from scipy.stats import ttest_rel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ttest_rel(a, b)
    out["t"], out["p_value"] = float(res.statistic), float(res.pvalue)
    return out


# Fine-tuning settings metrics.json records that change what a run measures (use_rfr_score is reported apart).
_SETTINGS = ("fusion", "label_smoothing", "distill", "average_baseline", "modalities", "weighted classes")


def _mixed_settings(rs: list[RunRecord]) -> list[str]:
    out = []
    for key in _SETTINGS:
        if key == "weighted classes":  # the weights themselves follow each seed's train split
            values = {r.metrics.get("class_weights") is not None for r in rs if "class_weights" in r.metrics}
        else:
            values = {repr(r.metrics[key]) for r in rs if key in r.metrics}
        if len(values) > 1:
            out.append(f"{key}: {', '.join(sorted(map(str, values)))}")
    return out


def aggregate(runs: list[RunRecord]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Per (mode, subset, init): per-seed accuracies (%) and their statistics on both test sets; per
    (mode, subset, test set): the paired t-test CLIP vs scratch."""
    warn: list[str] = []
    by_group: dict[tuple[str, str, str], list[RunRecord]] = {}
    for r in runs:
        if r.status == "complete":
            by_group.setdefault((r.mode, r.subset, r.init), []).append(r)
    groups = []
    for (mode, subset, init) in sorted(by_group, key=lambda k: (pair_key(k[0], k[1]), ALL_INITS.index(k[2]))):
        rs = sorted(by_group[(mode, subset, init)], key=lambda r: r.seed)
        g: dict[str, Any] = {"mode": mode, "subset": subset, "init": init, "n_seeds": len(rs),
                             "seeds": [r.seed for r in rs]}
        rfr = {r.metrics.get("use_rfr_score") for r in rs}
        fusion = {r.metrics.get("fusion") for r in rs} - {None}
        g["use_rfr_score"] = rfr.pop() if len(rfr) == 1 else "mixed"
        if g["use_rfr_score"] == "mixed":
            warn.append(f"{mode}/{subset}/{init}: seeds mix use_rfr_score on and off; the mean mixes both")
        if fusion:
            g["fusion"] = fusion.pop() if len(fusion) == 1 else "mixed"
        mixed = _mixed_settings(rs)
        if mixed:
            # A folder of runs has no manifest to hold each run to its task's settings (a sweep's does).
            warn.append(f"{mode}/{subset}/{init}: seeds were run with different settings ({'; '.join(mixed)}); the "
                        f"mean mixes them")
        for ts in TEST_SETS:
            acc = [100.0 * r.metrics[ts]["accuracy"] for r in rs]
            f1 = [100.0 * r.metrics[ts]["macro_f1"] for r in rs if r.metrics[ts].get("macro_f1") is not None]
            paper = paper_value(mode, subset, init, ts)
            g[ts] = {"values": dict(zip(g["seeds"], acc)), **describe(acc),
                     "macro_f1_values": {r.seed: 100.0 * r.metrics[ts]["macro_f1"] for r in rs
                                         if r.metrics[ts].get("macro_f1") is not None},
                     "macro_f1_mean": float(np.mean(f1)) if f1 else float("nan"),
                     "n_objects": {r.seed: r.metrics[ts]["n"] for r in rs},
                     "per_class_recall": _mean_recall(r.metrics[ts] for r in rs),
                     "per_class_recall_n": _recall_seeds(r.metrics[ts] for r in rs),
                     "paper_mean": paper[0] if paper else None, "paper_std": paper[1] if paper else None}
        # The validation split's macro-F1 (runs that report one): what options are chosen by, test left alone.
        val = [100.0 * r.metrics["val"]["macro_f1"] for r in rs
               if isinstance(r.metrics.get("val"), dict) and r.metrics["val"].get("macro_f1") is not None]
        g["val_macro_f1_mean"] = float(np.mean(val)) if val else None
        g["val_macro_f1_n"] = len(val)
        g["class_names"] = sorted({c for r in rs for ts in TEST_SETS
                                   for c in r.metrics[ts].get("class_names") or ()})
        groups.append(g)
    warn += _partial_classes(groups)
    no_paper = not_comparable(groups)
    if no_paper:
        warn.append(f"the paper's columns are left empty: {no_paper}")
        for g in groups:
            for ts in TEST_SETS:
                g[ts]["paper_mean"] = g[ts]["paper_std"] = None
    comps = []
    idx = {(g["mode"], g["subset"], g["init"]): g for g in groups}
    for (mode, subset) in grid_order({(g["mode"], g["subset"]) for g in groups}):
        c, s = idx.get((mode, subset, "clip")), idx.get((mode, subset, "scratch"))
        if not (c and s):
            continue
        for ts in TEST_SETS:
            tt = paired_ttest(c[ts]["values"], s[ts]["values"])
            p = tt["p_value"]
            plus = bool(math.isfinite(p) and p < ALPHA and tt["paired_diff"] > 0)
            paper = PAPER_RESULTS.get((mode, subset))
            comps.append({"mode": mode, "subset": subset, "test_set": ts, **tt,
                          "clip_mean": c[ts]["mean"], "scratch_mean": s[ts]["mean"],
                          "diff": tt["paired_diff"], "plus": plus,
                          "paper_plus": (paper["plus"] if paper and paper_value(mode, subset, "clip", ts)
                                         and not no_paper else None)})
    return groups, comps, warn


def _mean_recall(reports: Iterable[dict]) -> dict[str, float]:
    """Per-class test recall (%), mean over the seeds whose test set has the class."""
    vals: dict[str, list[float]] = {}
    for rep in reports:
        for c, v in (rep.get("per_class_recall") or {}).items():
            vals.setdefault(c, []).append(100.0 * v)
    return {c: float(np.mean(v)) for c, v in vals.items()}


def _recall_seeds(reports: Iterable[dict]) -> dict[str, int]:
    """Per class: how many seeds' test sets hold it (a split of few objects can leave a class out of some)."""
    n: dict[str, int] = {}
    for rep in reports:
        for c in rep.get("per_class_recall") or {}:
            n[c] = n.get(c, 0) + 1
    return n


def _partial_classes(groups: list[dict[str, Any]]) -> list[str]:
    """One warning per test set and class that only some seeds' test sets hold: its recall is the mean over those
    seeds alone, and their macro-F1 counts one class more than the others' (render marks those cells *)."""
    partial: dict[tuple[str, str], set[str]] = {}
    for g in groups:
        for ts in TEST_SETS:
            for c, k in g[ts].get("per_class_recall_n", {}).items():
                if k < g["n_seeds"]:
                    partial.setdefault((ts, c), set()).add(f"{g['mode']}/{g['subset']}/{g['init']}")
    return [f"class {c} is missing from the {ts} set of some seeds in {', '.join(sorted(where))}: its recall is the "
            "mean over the seeds that have it (marked *), and the seeds' macro-F1 values average over different "
            "class sets" for (ts, c), where in sorted(partial.items())]


def aggregate_pretrain(pretrain: list[RunRecord]) -> tuple[dict[str, Any], list[str]]:
    """The embedding table over the pretraining runs with an evaluation, one per seed (the first; later ones of
    the same seed are warned about and left out, as gather_dir does for fine-tuning), and the warnings."""
    rows, warn = [], []
    done: list[RunRecord] = []
    first: dict[Any, str] = {}
    for r in pretrain:
        if not (r.status == "complete" and r.metrics and r.metrics.get("embedding_eval")):
            continue
        if r.seed in first:
            warn.append(f"{r.run_dir}: duplicate pretraining result for s{r.seed} (already have {first[r.seed]}); "
                        "ignored")
            continue
        first[r.seed] = r.run_dir
        done.append(r)
    for view in EMBEDDING_VIEWS:
        row: dict[str, Any] = {"view": view, "paper_knn1": PAPER_KNN1.get(view)}
        for metric in ("centroid", "knn1"):
            vals = {r.seed: 100.0 * r.metrics["embedding_eval"][f"{metric}_{view}"] for r in done
                    if finite_number(r.metrics["embedding_eval"].get(f"{metric}_{view}"))}
            row[metric] = {"values": vals, "n_seeds": len(vals), **describe(list(vals.values()))}
        if row["centroid"]["n_seeds"] or row["knn1"]["n_seeds"]:
            rows.append(row)
    return {"rows": rows, "n_runs": len(pretrain), "n_with_eval": len(done)}, warn
