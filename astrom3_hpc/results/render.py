"""Rendering the collected results: results.md (Markdown tables beside the paper's numbers), results.csv,
cells.csv, and the JSON-ready form of records and numbers."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from ..orchestration.sweep import HPARAM_KEYS
from .paper import (ALPHA, EMBEDDING_NAMES, MODE_NAMES, PAPER_RESULTS, TEST_SET_TITLES, TEST_SETS, not_comparable,
                    paper_value)
from .read import RunRecord


def _fmt(mean: float | None, std: float | None, n: int | None = None, plus: bool = False) -> str:
    if mean is None or not math.isfinite(mean):
        return ""
    if n == 1:
        s = f"{mean:.3f} (1 seed)"
    elif std is None or not math.isfinite(std):
        s = f"{mean:.3f}"
    else:
        s = f"{mean:.3f} ± {std:.3f}"
    return s + (" +" if plus else "")


def _fmt_paper(p: tuple[float, float] | None, plus: bool = False) -> str:
    """A published number as printed in the paper (no padding to more decimals than it has)."""
    return f"{p[0]} ± {p[1]}" + (" +" if plus else "") if p else ""


def _fmt_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return ""
    if p < 1e-3:
        return f"{p:.1e}"
    digits = 3
    while (float(f"{p:.{digits}g}") < ALPHA) != (p < ALPHA):  # 0.04996 printed "0.05" beside a "+"
        digits += 1
    return f"{p:.{digits}g}"


def md_cell(text: str) -> str:
    """A user's string (a survey's class name, `EA|EB`) as one Markdown table cell: a bare `|` split the row."""
    return " ".join(str(text).split()).replace("|", "\\|")


def summary_line(runs: list[RunRecord]) -> str:
    n = len(runs)
    c = sum(r.status == "complete" for r in runs)
    f = sum(r.status == "failed" for r in runs)
    m = sum(r.status == "missing" for r in runs)
    return f"{c} of {n} tasks complete; {f} failed; {m} missing"


def failure_lines(recs: list[RunRecord]) -> list[str]:
    lines = []
    for r in recs:
        if r.status == "complete":
            continue
        lines.append(f"- {r.status.upper()} {r.label()}: {r.reason}")
        lines.append(f"  run dir: {r.run_dir}" + (f" ({', '.join(r.run_files)})" if r.run_files else "")
                     + (f"; last logged epoch {r.last_epoch}" if r.last_epoch is not None else ""))
        lines.append("  logs: " + (", ".join(r.logs) if r.logs else "none found"))
        if r.last_log_line:
            lines.append(f"  last line of {r.last_log_file}: {r.last_log_line}")
    return lines


def render_markdown(res: dict[str, Any], std: str = "population") -> str:
    skey = "std_pop" if std == "population" else "std_sample"
    groups = {(g["mode"], g["subset"], g["init"]): g for g in res["groups"]}
    comps = {(c["mode"], c["subset"], c["test_set"]): c for c in res["comparisons"]}
    sm = res["summary"]
    no_paper = not_comparable(res["groups"])
    pre_line = (f"Pretraining: {sm['pretrain_complete']} of {sm['pretrain_runs']} runs complete "
                f"({res['pretrain']['n_with_eval']} with an embedding evaluation)." if sm["pretrain_runs"] else "")
    out = [f"# AstroM3 fine-tuning results: {res['sweep']}", "",
           f"**{sm['line']}**", *(["", pre_line] if pre_line else []), "",
           f"Test accuracy (%), mean ± {std} std over seeds ({', '.join(map(str, res['seeds'])) or 'none'}); "
           f"n = seeds with a result (no CLIP / CLIP); p = paired t-test CLIP vs no CLIP (two-sided, "
           f"scipy.stats.ttest_rel) over the seeds both have; \"+\" marks p < {ALPHA} with CLIP better. "
           + ("Paper columns: spec section 4 (AJ version, 5 seeds, population std)." if not no_paper else
              "Paper columns empty: these runs' classes are not AstroM3's ten (see Warnings)."), ""]
    for ts in TEST_SETS:
        out += [f"## Test accuracy on the {TEST_SET_TITLES[ts]}", "",
                "| modality | subset | n | no CLIP | CLIP | p | paper no CLIP | paper CLIP | macro-F1 no CLIP "
                "| macro-F1 CLIP |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for mode, subset in res["grid"]:
            s, c = groups.get((mode, subset, "scratch")), groups.get((mode, subset, "clip"))
            comp = comps.get((mode, subset, ts))
            plus = bool(comp and comp["plus"])
            ps, pc = ((None, None) if no_paper else
                      (paper_value(mode, subset, "scratch", ts), paper_value(mode, subset, "clip", ts)))
            paper_plus = bool(pc and PAPER_RESULTS[(mode, subset)]["plus"])
            fusion = {g.get("fusion") for g in (s, c) if g} - {None}
            name = MODE_NAMES.get(mode, mode) + (f" ({'/'.join(sorted(fusion))} fusion)" if fusion else "")

            def cell(g: dict | None, p: bool = False) -> str:
                return _fmt(g[ts]["mean"], g[ts][skey], g["n_seeds"], p) if g else "—"

            def f1(g: dict | None) -> str:
                return f"{g[ts]['macro_f1_mean']:.2f}" if g and math.isfinite(g[ts]["macro_f1_mean"]) else ""

            out.append(f"| {name} | {subset} | {s['n_seeds'] if s else 0}/{c['n_seeds'] if c else 0} | {cell(s)} "
                       f"| {cell(c, plus)} | {_fmt_p(comp['p_value']) if comp else ''} "
                       f"| {_fmt_paper(ps)} | {_fmt_paper(pc, paper_plus)} "
                       f"| {f1(s)} | {f1(c)} |")
        if ts == "test" and any(m == "all" for m, _ in res["grid"]):
            out += ["", "Paper, all three: sub10 used average fusion."]
        if ts == "test_full":
            out += ["", "The paper measured sub-X runs on the sub-X test set only, so its numbers appear here for "
                        "the `full` rows alone (see the table above for the sub-X comparison)."]
        out.append("")
    out += render_per_class(res)
    out += render_against_baseline(res.get("against_baseline") or [])
    pre = res["pretrain"]
    if pre["rows"]:
        out += ["## Frozen CLIP embeddings (pretraining runs, full test set)", "",
                f"Accuracy (%), mean ± {std} std over {pre['n_with_eval']} pretraining run(s): class-centroid and "
                "1-nearest-neighbour classification of test embeddings from train embeddings.", "",
                "| embedding | n | centroid | 1-NN | paper 1-NN |", "|---|---|---|---|---|"]
        for row in pre["rows"]:
            c, k = row["centroid"], row["knn1"]
            out.append(f"| {EMBEDDING_NAMES.get(row['view'], row['view'])} | {k['n_seeds']} "
                       f"| {_fmt(c['mean'], c[skey], c['n_seeds'])} | {_fmt(k['mean'], k[skey], k['n_seeds'])} "
                       f"| {row['paper_knn1'] if row['paper_knn1'] is not None else ''} |")
        out.append("")
    out += render_cell_table(res.get("cell_hparams", []))
    fails = [r for r in res["_records"] if r.status != "complete"]
    pfails = [r for r in res["_pretrain_records"] if r.status != "complete"]
    if fails or pfails:
        out += ["## Failed and missing runs", "", *failure_lines(fails), *failure_lines(pfails), ""]
    if res["warnings"]:
        out += ["## Warnings", "", *[f"- {w}" for w in res["warnings"]], ""]
    out += [f"**{res['summary']['line']}**", ""]
    return "\n".join(out)


CSV_COLUMNS = ("mode", "subset", "init", "test_set", "n_seeds", "mean", "std_pop", "std_sample", "macro_f1_mean",
               "paper_mean", "paper_std", "p_value")


def render_csv(res: dict[str, Any]) -> str:
    import csv
    import io

    comps = {(c["mode"], c["subset"], c["test_set"]): c for c in res["comparisons"]}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)

    def num(x: Any) -> str:
        return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else repr(float(x))

    for g in res["groups"]:
        for ts in TEST_SETS:
            st = g[ts]
            # The test pairs clip with scratch: a baseline or ensemble row beside them has no p-value of its own.
            comp = comps.get((g["mode"], g["subset"], ts)) if g["init"] in ("clip", "scratch") else None
            w.writerow([g["mode"], g["subset"], g["init"], ts, g["n_seeds"], num(st["mean"]), num(st["std_pop"]),
                        num(st["std_sample"]), num(st["macro_f1_mean"]), num(st["paper_mean"]), num(st["paper_std"]),
                        num(comp["p_value"]) if comp else ""])
    return buf.getvalue()


def render_per_class(res: dict[str, Any], ts: str = "test") -> list[str]:
    """Accuracy, macro-F1 and per-class recall of every group, the classical baseline included."""
    groups = res["groups"]
    classes = sorted({c for g in groups for c in g[ts]["per_class_recall"]})
    if not groups:
        return []
    out = [f"## Macro-F1 and per-class recall on the {TEST_SET_TITLES[ts]}", "",
           "Mean over seeds (%); init `baseline` is `astrom3 baseline` (Lomb-Scargle + Fourier + statistics, "
           "gradient boosting) on the same splits; init `ensemble` is `astrom3 ensemble` (averaged class "
           "probabilities of its member runs). Val macro-F1: on the validation split, the one to choose "
           "a model by (blank where the runs report none; marked * where only some seeds do). A class's recall "
           "is marked * where only some seeds' test sets hold the class: the mean over those seeds.", "",
           "| " + " | ".join(["mode", "subset", "init", "n", "accuracy", "val macro-F1", "macro-F1",
                                 *map(md_cell, classes)]) + " |",
           "|---|---|---|---|---|---|---|" + "---|" * len(classes)]
    for g in groups:
        rec, rec_n = g[ts]["per_class_recall"], g[ts].get("per_class_recall_n", {})
        f1 = g[ts]["macro_f1_mean"]
        val = g.get("val_macro_f1_mean")
        val_s = "" if val is None else f"{val:.2f}" + ("*" if g.get("val_macro_f1_n", 0) < g["n_seeds"] else "")
        out.append(f"| {g['mode']} | {g['subset']} | {g['init']} | {g['n_seeds']} "
                   f"| {g[ts]['mean']:.2f} | {val_s} | {f1:.2f} |"
                   + "".join(f" {rec[c]:.1f}{'*' if rec_n.get(c, g['n_seeds']) < g['n_seeds'] else ''} |"
                             if c in rec else "  |" for c in classes))
    return out + [""]


def render_against_baseline(rows: list[dict[str, Any]]) -> list[str]:
    """Each group's macro-F1 minus its baseline's, with the paired bootstrap's 95 % interval (results/bootstrap.py)."""
    if not rows:
        return []

    def cells(b: dict[str, Any] | None) -> str:
        if b is None:
            return " | "
        interval = f"[{100 * b['low']:+.1f}, {100 * b['high']:+.1f}]"
        return f"{100 * b['observed']:+.1f} {interval} | {100 * b['share_ahead']:.0f} %"

    out = ["## Against the classical baseline (paired bootstrap)", "",
           "Macro-F1 of each group minus that of `astrom3 baseline` on the same splits (points, mean over the seeds "
           "both have), with the 95 % interval of a paired bootstrap over the objects (2,000 resamples; the share "
           "of resamples in which the group is not behind). An interval that includes 0 is no ranking; decide on "
           "validation, report test.", "",
           "| mode | subset | init | seeds | val: difference [95 %] | val: not behind | test: difference [95 %] "
           "| test: not behind |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['mode']} | {r['subset']} | {r['init']} | {len(r['seeds'])} | {cells(r.get('val'))} "
                   f"| {cells(r.get('test'))} |")
    return out + [""]


def record_json(r: RunRecord) -> dict[str, Any]:
    d = asdict(r)
    m = d.pop("metrics")
    if m and r.kind == "finetune":
        d.update({"test_accuracy": 100.0 * m["test"]["accuracy"],
                  "test_full_accuracy": 100.0 * m["test_full"]["accuracy"],
                  "test_macro_f1": None if m["test"].get("macro_f1") is None else 100.0 * m["test"]["macro_f1"],
                  "test_full_macro_f1": (None if m["test_full"].get("macro_f1") is None
                                         else 100.0 * m["test_full"]["macro_f1"]),
                  "n_test": m["test"]["n"], "n_test_full": m["test_full"]["n"],
                  **{k: m.get(k) for k in ("use_rfr_score", "fusion", "best_val", "epochs_run", "world_size",
                                           "init_dir", "finished")}})
    elif m and r.kind == "pretrain":
        d.update({k: m.get(k) for k in ("embedding_eval", "best_val", "epochs_run", "best_epoch", "finished")})
    return d


def render_cell_csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(("mode", "subset", "inits", "n_runs", *HPARAM_KEYS, "cells"))
    for r in rows:
        w.writerow((r["mode"], r["subset"], " ".join(r["inits"]), r["n_runs"],
                    *(" ".join(map(repr, r[k])) if k == "dropout" else repr(r[k]) for k in HPARAM_KEYS),
                    r["cells"] or ""))
    return buf.getvalue()


def render_cell_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    cells = sorted({str(r["cells"]) for r in rows if r.get("cells")})
    out = ["## Fine-tuning values per cell", "",
           "From each run's resolved config.yaml" + (f" (cells file: {', '.join(cells)})" if cells else
                                                     " (no cells file: one config for every cell)") +
           ". dropout: of the encoder(s) the mode uses (photometry, spectra, metadata); clip 0: no clipping.", "",
           "| modality | subset | inits | runs | lr | betas | weight decay | dropout | plateau factor / patience "
           "| warm-up | clip | epochs | batch | early stop |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {MODE_NAMES.get(r['mode'], r['mode'])} | {r['subset']} | {', '.join(r['inits'])} "
                   f"| {r['n_runs']} | {r['lr']:.3g} | {r['beta1']:.3g}, {r['beta2']:.3g} | {r['weight_decay']:.3g} "
                   f"| {' / '.join(f'{x:.3g}' for x in r['dropout'])} | {r['plateau_factor']:.3g} / "
                   f"{r['plateau_patience']} | {r['warmup_epochs']} | {r['grad_clip']:g} | {r['epochs']} "
                   f"| {r['batch_size']} | {r['early_stop_patience']} |")
    return out + [""]


def nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [nan_to_none(v) for v in x]
    return x


def stringify_keys(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): stringify_keys(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [stringify_keys(v) for v in x]
    return x
