"""Figures of `astrom3 collect` (matplotlib, Agg): accuracy against label fraction, the paper's points beside the
sweep's; per-class recall and macro-F1 of every group (networks, baseline, ensembles) side by side."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from ..core.figures import pyplot, save
from ..orchestration.sweep import MODES
from .paper import LABEL_FRACTION, MODE_NAMES, PAPER_RESULTS, SUBSET_ORDER, not_comparable


# Every init's colour, marker, legend name and x offset (in label-fraction points, so that series at one fraction do
# not hide each other), in legend order. The paper published CLIP and no CLIP only: no paper points for the rest.
SERIES = {"scratch": ("tab:orange", "o", "no CLIP", -1.0), "clip": ("tab:blue", "o", "CLIP", 1.0),
          "baseline": ("tab:green", "D", "baseline", -0.4), "ensemble": ("tab:purple", "^", "ensemble", 0.4)}


# The paper's std is the population std over its 5 split seeds (paper.py). Under `--std sample` the y label calls every
# bar a sample std, so the paper's are scaled to theirs: sqrt(n / (n - 1)) over 5 seeds.
PAPER_SEEDS = 5


def plot_accuracy_vs_fraction(res: dict[str, Any], path: str | Path, std: str = "population") -> None:
    plt = pyplot()

    skey = "std_pop" if std == "population" else "std_sample"
    paper_scale = 1.0 if std == "population" else float(np.sqrt(PAPER_SEEDS / (PAPER_SEEDS - 1)))
    groups = {(g["mode"], g["subset"], g["init"]): g for g in res["groups"]}
    no_paper = not_comparable(res["groups"])  # another survey's classes: the paper's points are no yardstick
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2), sharex=True)
    for ax, mode in zip(axes, MODES):
        any_data = False
        for init, (colour, marker, label, offset) in SERIES.items():
            for ts, style in (("test", "-"), ("test_full", "--")):
                pts = [(LABEL_FRACTION[s], groups[(mode, s, init)]) for s in SUBSET_ORDER if (mode, s, init) in groups]
                if not pts:
                    continue
                any_data = True
                x = np.array([p[0] for p in pts], dtype=float) + offset * (1.0 if ts == "test" else 1.6)
                y = np.array([p[1][ts]["mean"] for p in pts])
                e = np.nan_to_num(np.array([p[1][ts][skey] for p in pts], dtype=float))
                ax.errorbar(x, y, yerr=e, fmt=marker + style, color=colour, capsize=3, ms=5,
                            lw=1.6 if ts == "test" else 1.0, alpha=1.0 if ts == "test" else 0.55,
                            label=f"{label} ({'sub-X test' if ts == 'test' else 'full test'})")
            pp = [(LABEL_FRACTION[s], PAPER_RESULTS[(mode, s)][init]) for s in SUBSET_ORDER
                  if init in PAPER_RESULTS.get((mode, s), ()) and not no_paper]
            if pp:
                ax.errorbar([p[0] + offset * 2.2 for p in pp], [p[1][0] for p in pp],
                            yerr=[p[1][1] * paper_scale for p in pp], fmt="s", mfc="none", mec=colour, ecolor=colour,
                            ms=7, capsize=2, lw=0.8, alpha=0.8, label=f"{label} (paper)")
        if not any_data:
            ax.text(0.5, 0.5, "no completed runs", transform=ax.transAxes, ha="center", va="center", color="grey")
        ax.set_title(MODE_NAMES[mode])
        ax.set_xticks([10, 25, 50, 100], ["10%", "25%", "50%", "100%"])
        ax.set_xlim(0, 110)
        ax.set_xlabel("label fraction")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"test accuracy % (mean ± {std} std)")
    handles, labs = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labs:
                handles.append(h)
                labs.append(lab)
    if handles:
        fig.legend(handles, labs, loc="lower center", ncol=min(len(labs), 6), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.05, right=0.99, top=0.92, bottom=0.25, wspace=0.22)  # tight_layout is slow
    save(fig, path)


MAX_BAR_GROUPS = 8


def group_name(g: dict[str, Any]) -> str:
    return f"{g['mode']} {g['subset']} {g['init']}"


def bar_groups(groups: list[dict[str, Any]], ts: str = "test") -> tuple[list[dict[str, Any]], str]:
    """The groups per_class_recall.png shows, and a title note when some are left out: a whole paper sweep's 32
    groups would be unreadable bars, so past MAX_BAR_GROUPS only the full subset's (the comparable ones) stay, and
    the first MAX_BAR_GROUPS of those; the note names the full groups that did not fit (a baseline or ensemble init
    pushes the all-three models out), which "the full subset's" alone would claim are shown."""
    groups = [g for g in groups if g[ts]["per_class_recall"]]
    if len(groups) <= MAX_BAR_GROUPS:
        return groups, ""
    full = [g for g in groups if g["subset"] == "full"]
    if not full:
        return groups[:MAX_BAR_GROUPS], f" ({MAX_BAR_GROUPS} of {len(groups)} groups: the first)"
    kept, left = full[:MAX_BAR_GROUPS], full[MAX_BAR_GROUPS:]
    return kept, (f" ({len(kept)} of {len(groups)} groups: the full subset's"
                  + (f"; left out: {', '.join(map(group_name, left))})" if left else ")"))


def plot_per_class(res: dict[str, Any], path: str | Path, ts: str = "test") -> bool:
    """Grouped bars: one group of bars per class (and macro-F1), one bar per (mode, subset, init) group, mean over
    seeds. Where the accuracy table hides which classes a model gives up, this shows it. False when no group has
    per-class recalls: then no figure, and none left from an earlier collect beside the fresh tables."""
    groups, note = bar_groups(res["groups"], ts)
    if not groups:
        Path(path).unlink(missing_ok=True)
        return False
    plt = pyplot()

    classes = sorted({c for g in groups for c in g[ts]["per_class_recall"]})
    cols = classes + ["macro-F1"]
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(3.0 + max(4.0, 0.8 * len(cols) * max(1.0, len(groups) / 3)), 4.0))
    for k, g in enumerate(groups):
        rec = g[ts]["per_class_recall"]
        y = [rec.get(c, np.nan) for c in classes] + [g[ts]["macro_f1_mean"]]
        x = np.arange(len(cols)) - 0.4 + width * (k + 0.5)
        # A class absent from the group's test sets has no bar: a zero would read as a class it never finds.
        ax.bar(x, np.array(y, dtype=float), width, label=f"{group_name(g)} (n={g['n_seeds']})")
    ax.axvline(len(classes) - 0.5, color="grey", lw=0.8)
    ax.set_xticks(np.arange(len(cols)), cols, rotation=30 if len(cols) > 8 else 0, ha="right" if len(cols) > 8
                  else "center")
    ax.set_ylim(0, 105)
    ax.set_ylabel("% (mean over seeds)")
    title = "per-class recall on the " + ("sub-X test set" if ts == "test" else "full test set") + note
    # Wrapped to the bars' width (the legend takes 3 inches; about 10 characters an inch at the title's 12 pt), so a
    # long list of left-out groups stays in view rather than running past the figure's edges.
    ax.set_title(textwrap.fill(title, max(40, int(10 * (fig.get_figwidth() - 3.0)))))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    save(fig, path)
    return True
