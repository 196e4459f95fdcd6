"""Rows of the collector's tables and figures beside the paper's grid: baseline rows in results.csv, pretraining
runs that share a seed, a plain directory collected into a folder of its own, and which groups and error bars
accuracy_vs_fraction.png and per_class_recall.png draw."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from test_collect import embedding_eval, fake_metrics, write_run

from astrom3_hpc.core.atomic import write_json
from astrom3_hpc.orchestration.sweep import Sweep, make_tasks
from astrom3_hpc.results.collect import collect, parse_log_name, read_job_ids


def test_only_clip_and_scratch_rows_carry_the_p_value(tmp_path):
    """Catches results.csv writing the CLIP-vs-scratch p-value on the baseline row of the same (mode, subset),
    where it reads as the baseline's own test."""
    root = tmp_path / "sw"
    tasks = make_tasks(seeds=(42, 0, 66), modes=("photo",), subsets=("sub10",), inits=("clip", "scratch", "baseline"))
    sw = Sweep(root, tasks)
    sw.save()
    rng = np.random.default_rng(0)
    for t in tasks:
        write_run(sw.run_dir(t), fake_metrics(t.mode, t.subset, t.seed, t.init, 0.8, rng, root), t.mode, t.subset,
                  t.seed, t.init)
    collect(root, stream=io.StringIO(), plot=False)
    rows = list(csv.DictReader((root / "results" / "results.csv").open()))
    p = {(r["init"], r["test_set"]): r["p_value"] for r in rows}
    assert {i for i, _ in p} == {"clip", "scratch", "baseline"}
    for ts in ("test", "test_full"):
        assert p[("clip", ts)] != "" and p[("clip", ts)] == p[("scratch", ts)]
        assert p[("baseline", ts)] == ""


def test_pretraining_runs_of_one_seed_keep_the_first_with_a_warning(tmp_path):
    """Catches two pretraining runs of the same seed collapsing without a word in the embedding table (the last one
    read won), where two fine-tunes of one cell are warned about."""
    rng = np.random.default_rng(3)
    evals = {}
    for name in ("pre_a", "pre_b"):
        evals[name] = embedding_eval(rng)
        write_json(tmp_path / name / "metrics.json", {"kind": "pretrain", "seed": 42, "epochs_run": 3, "steps": 10,
                                                      "world_size": 1, "best_epoch": 2, "best_val": {"loss": 1.0},
                                                      "embedding_eval": evals[name],
                                                      "finished": "2025-01-01T00:00:00"})
    res = collect(tmp_path, stream=io.StringIO(), plot=False)
    rows = {r["view"]: r for r in res["pretrain"]["rows"]}
    assert rows["photo"]["knn1"]["values"] == {42: 100.0 * evals["pre_a"]["knn1_photo"]}
    assert res["pretrain"]["n_with_eval"] == 1
    assert [w for w in res["warnings"] if "duplicate" in w] == [
        "pre_b: duplicate pretraining result for s42 (already have pre_a); ignored"]



def test_fine_tunes_of_one_cell_keep_the_first_with_a_warning(tmp_path):
    """Catches a duplicate fine-tune result warned about as ignored but still averaged in: the group counted two
    seeds 42 and its mean moved to the duplicate's."""
    rng = np.random.default_rng(9)
    for name, acc in (("a", 0.80), ("b", 0.40)):
        write_run(tmp_path / name, fake_metrics("photo", "full", 42, "scratch", acc, rng), "photo", "full", 42)
    first = json.loads((tmp_path / "a" / "metrics.json").read_text())["test"]["accuracy"]
    res = collect(tmp_path, out=tmp_path / "o", stream=io.StringIO(), plot=False)
    (g,) = res["groups"]
    assert g["n_seeds"] == 1 and g["test"]["values"] == {42: 100.0 * first}
    assert [w for w in res["warnings"] if "duplicate" in w] == [
        "b: duplicate result for photo/full/s42/scratch (already have a); ignored"]


def test_per_class_recall_is_the_mean_over_the_seeds(tmp_path):
    """Catches a group's per-class recall (results.md's table, per_class_recall.png) taken from one seed alone."""
    rng = np.random.default_rng(10)
    recall = {42: {"A": 0.9, "B": 0.2}, 0: {"A": 0.5, "B": 0.6}, 66: {"A": 0.1, "B": 1.0}}
    for seed, rec in recall.items():
        m = fake_metrics("photo", "full", seed, "scratch", 0.9, rng)
        for key in ("test", "test_full"):
            m[key]["class_names"], m[key]["per_class_recall"] = list(rec), rec
        write_run(tmp_path / "runs" / f"photo-full-s{seed}-scratch", m, seed=seed)
    res = collect(tmp_path / "runs", out=tmp_path / "o", stream=io.StringIO(), plot=False)
    (g,) = res["groups"]
    for ts in ("test", "test_full"):
        assert g[ts]["per_class_recall"] == pytest.approx({"A": 50.0, "B": 60.0})
        assert g[ts]["per_class_recall_n"] == {"A": 3, "B": 3}

def test_a_plain_directory_collected_into_itself_keeps_its_runs(tmp_path, capsys):
    """Catches `astrom3 collect DIR --out DIR` leaving out the root as if it were the output folder below it: every
    run was excluded and the command reported "no runs below it" (exit 2)."""
    from astrom3_hpc.cli import build_parser

    rng = np.random.default_rng(4)
    for seed in (42, 0):
        write_run(tmp_path / f"photo-full-s{seed}-scratch", fake_metrics("photo", "full", seed, "scratch", 0.8, rng),
                  "photo", "full", seed, "scratch")
    args = build_parser().parse_args(["collect", str(tmp_path), "--out", str(tmp_path)])
    assert args.func(args) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["summary"]["complete"] == 2 and (tmp_path / "results.csv").exists()


def test_the_plus_and_the_difference_follow_the_paired_seeds(tmp_path):
    """CLIP under scratch on every seed both ran, and one scratch-only seed far lower: the "+" (and `diff`) came
    from the means over all seeds, so the table marked CLIP significantly better where the paired test says the
    opposite."""
    root = tmp_path / "sw"
    tasks = make_tasks(seeds=(42, 0, 66, 12), modes=("photo",), subsets=("full",), inits=("clip", "scratch"))
    sw = Sweep(root, tasks)
    sw.save()
    acc = {("clip", 42): 0.80, ("clip", 0): 0.81, ("clip", 66): 0.82,
           ("scratch", 42): 0.85, ("scratch", 0): 0.861, ("scratch", 66): 0.872, ("scratch", 12): 0.10}
    rng = np.random.default_rng(0)
    for t in tasks:
        if (t.init, t.seed) in acc:  # CLIP's seed 12 never ran
            write_run(sw.run_dir(t), fake_metrics(t.mode, t.subset, t.seed, t.init, acc[t.init, t.seed], rng, root),
                      t.mode, t.subset, t.seed, t.init)
    collect(root, stream=io.StringIO(), plot=False)
    res = json.loads((root / "results" / "results.json").read_text())
    comp = next(c for c in res["comparisons"] if c["test_set"] == "test")
    assert comp["n_pairs"] == 3 and comp["p_value"] < 0.05 and comp["clip_mean"] > comp["scratch_mean"]
    assert comp["diff"] == comp["paired_diff"] < -4 and comp["plus"] is False


def test_a_p_value_is_never_rounded_across_the_threshold_and_tables_keep_their_columns():
    """0.04996 was printed "0.05" beside a "+" (which says p < 0.05); and with no per-class recall in any run the
    macro-F1 table's header had one cell more than its separator, which Markdown renders as text."""
    from astrom3_hpc.results.render import _fmt_p, render_per_class

    assert _fmt_p(0.04996) == "0.04996" and _fmt_p(0.0504) == "0.0504" and _fmt_p(0.0123456) == "0.0123"
    assert _fmt_p(0.05) == "0.05" and _fmt_p(2e-4) == "2.0e-04"
    group = {"mode": "photo", "subset": "full", "init": "scratch", "n_seeds": 1,
             "test": {"per_class_recall": {}, "macro_f1_mean": 80.0, "mean": 81.0}}
    lines = render_per_class({"groups": [group]}, "test")
    table = [line for line in lines if line.startswith("|")]
    assert len({line.count("|") for line in table}) == 1, table


def _drawn(monkeypatch, plot, *args, **kwargs):
    """The axes `plot` (one of results.plots' functions) drew, instead of a PNG."""
    from astrom3_hpc.results import plots

    figs = []
    monkeypatch.setattr(plots, "save", lambda fig, path, dpi=110: figs.append(fig))
    plot(*args, **kwargs)
    axes = figs[0].axes
    plots.pyplot().close(figs[0])
    return axes


def _photo_full_runs(tmp_path, accuracy: dict) -> dict:
    """collect's result over photo/full runs of the given (init, seed) -> accuracy, no figures."""
    rng = np.random.default_rng(7)
    for (init, seed), acc in accuracy.items():
        write_run(tmp_path / "runs" / f"photo-full-s{seed}-{init}", fake_metrics("photo", "full", seed, init, acc, rng),
                  "photo", "full", seed, init)
    return collect(tmp_path / "runs", out=tmp_path / "o", stream=io.StringIO(), plot=False)


def test_baseline_and_ensemble_runs_are_drawn_against_the_label_fraction(tmp_path, monkeypatch):
    """Catches accuracy_vs_fraction.png drawing only CLIP and no-CLIP runs: a mode with only baseline and ensemble
    runs (the baseline being the score to beat) showed the paper's points and "no completed runs"."""
    from astrom3_hpc.results.plots import plot_accuracy_vs_fraction

    res = _photo_full_runs(tmp_path, {("baseline", 42): 0.85, ("baseline", 0): 0.87, ("ensemble", 42): 0.90})
    photo, spectra = _drawn(monkeypatch, plot_accuracy_vs_fraction, res, tmp_path / "a.png")[:2]
    means = {g["init"]: g["test"]["mean"] for g in res["groups"]}
    drawn = {c.get_label(): c.lines[0].get_ydata() for c in photo.containers}
    assert list(drawn["baseline (sub-X test)"]) == [means["baseline"]]
    assert list(drawn["ensemble (sub-X test)"]) == [means["ensemble"]]
    assert [t.get_text() for t in photo.texts] == []
    assert [t.get_text() for t in spectra.texts] == ["no completed runs"]


def test_per_class_recall_names_the_full_groups_it_leaves_out(tmp_path, monkeypatch):
    """Catches per_class_recall.png keeping the first 8 of 9 full-subset groups under the title "(8 of 9 groups: the
    full subset's)": a sweep with a baseline init lost its all-three models without a word."""
    from astrom3_hpc.results.plots import plot_per_class

    rng = np.random.default_rng(8)
    runs = [(m, i) for m in ("photo", "spectra", "meta", "all") for i in ("clip", "scratch")] + [("photo", "baseline")]
    for mode, init in runs:
        write_run(tmp_path / "runs" / f"{mode}-full-s42-{init}", fake_metrics(mode, "full", 42, init, 0.9, rng),
                  mode, "full", 42, init)
    res = collect(tmp_path / "runs", out=tmp_path / "o", stream=io.StringIO(), plot=False)
    ax = _drawn(monkeypatch, plot_per_class, res, tmp_path / "p.png")[0]
    shown = [t.get_text().rsplit(" (n=", 1)[0] for t in ax.get_legend().get_texts()]
    title = " ".join(ax.get_title().split())
    assert len(shown) == 8 and "all full scratch" not in shown
    assert title.endswith("(8 of 9 groups: the full subset's; left out: all full scratch)"), title


def test_the_papers_error_bars_are_the_std_the_y_label_names(tmp_path, monkeypatch):
    """Catches `collect --std sample` labelling every bar "sample std" while the paper's stayed its population std
    over 5 seeds: sqrt(5/4) too narrow beside the sweep's own sample std."""
    from astrom3_hpc.results.paper import PAPER_RESULTS
    from astrom3_hpc.results.plots import plot_accuracy_vs_fraction

    res = _photo_full_runs(tmp_path, {("clip", 42): 0.90, ("clip", 0): 0.92})
    paper = [PAPER_RESULTS[("photo", s)]["clip"][1] for s in ("sub10", "sub25", "sub50", "full")]
    for std, scale in (("population", 1.0), ("sample", np.sqrt(5 / 4))):
        photo = _drawn(monkeypatch, plot_accuracy_vs_fraction, res, tmp_path / "a.png", std=std)[0]
        bars = next(c for c in photo.containers if c.get_label() == "CLIP (paper)").lines[2][0].get_segments()
        assert photo.get_ylabel() == f"test accuracy % (mean ± {std} std)"
        np.testing.assert_allclose([(b[1][1] - b[0][1]) / 2 for b in bars], np.array(paper) * scale, rtol=1e-9)


def test_log_name_parsing_and_jobs_json(tmp_path):
    assert parse_log_name("ft_123_7.out") == ("123", 7)
    assert parse_log_name("ft_123_7.err") == ("123", 7)
    assert parse_log_name("123_7_log.err") == ("123", 7)
    assert parse_log_name("123_7_0_log.out") == ("123", 7)  # Submitit array: job, index, rank
    assert parse_log_name("slurm-123_7.out") == ("123", 7)
    assert parse_log_name("worker_7.out") == (None, 7)
    assert parse_log_name("notes.txt") is None and parse_log_name("slurmd.log") is None
    for data, ids in (([123, "124_3"], {"123", "124"}), ({"job_ids": ["5"]}, {"5"}),
                      ({"jobs": [{"job_id": 9, "kind": "finetune"}]}, {"9"}),
                      ({"finetune": {"array_job_id": "11"}, "n_tasks": 40}, {"11"})):
        write_json(tmp_path / "jobs.json", data)
        assert read_job_ids(tmp_path) == ids
