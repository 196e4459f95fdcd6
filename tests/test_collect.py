"""The metrics collector (`astrom3 collect`) on fake but well-formed sweeps: no training, no torch."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ttest_rel

from astrom3_hpc.core.atomic import write_json, write_text
from astrom3_hpc.cli.results import add_parser
from astrom3_hpc.results.collect import PAPER_KNN1, PAPER_RESULTS, BadMetrics, collect, read_metrics
from astrom3_hpc.core.constants import CLASS_NAMES
from astrom3_hpc.train.evaluate import classification_report
from astrom3_hpc.orchestration.sweep import Sweep, make_tasks

SEEDS = (42, 0, 66)
JOB = "777"
# Mean accuracy (fraction) by (mode, subset, init); each seed adds its own noise.
BASE = {("photo", "full", "clip"): 0.91, ("photo", "full", "scratch"): 0.90,
        ("photo", "sub10", "clip"): 0.91, ("photo", "sub10", "scratch"): 0.84,
        ("spectra", "full", "clip"): 0.77, ("spectra", "full", "scratch"): 0.76,
        ("spectra", "sub10", "clip"): 0.61, ("spectra", "sub10", "scratch"): 0.47}


# ------------------------------------------------------------------------------------------------ fake runs

def fake_report(rng: np.random.Generator, n: int, accuracy: float) -> dict:
    """A classification report (the real function) of `n` predictions with about `accuracy` right."""
    y_true = rng.integers(0, len(CLASS_NAMES), n)
    y_pred = y_true.copy()
    wrong = rng.choice(n, int(round((1 - accuracy) * n)), replace=False)
    y_pred[wrong] = (y_true[wrong] + rng.integers(1, len(CLASS_NAMES), len(wrong))) % len(CLASS_NAMES)
    rep = classification_report(y_true, y_pred, CLASS_NAMES)
    rep["loss"] = float(rng.uniform(0.2, 1.5))
    return rep


def fake_metrics(mode: str, subset: str, seed: int, init: str, accuracy: float, rng: np.random.Generator,
                 sweep_root: Path | None = None) -> dict:
    """Exactly what Finetuner.finish returns, plus RunDir.finish's "finished"."""
    out = {"kind": "finetune", "mode": mode, "subset": subset, "seed": seed, "init": init,
           "init_dir": None if init == "scratch" else str((sweep_root or Path("/x")) / "pretrain" / f"s{seed}"),
           "use_rfr_score": True, "best_val": {"epoch": 7, "loss": 0.41, "accuracy": accuracy},
           "epochs_run": 12, "world_size": 1}
    sets = [("test", subset)] + ([("test_full", "full")] if subset != "full" else [])
    for key, s in sets:
        rep = fake_report(rng, 400 if s == subset and subset != "full" else 2225, accuracy + rng.normal(0, 0.01))
        out[key] = rep
        out[f"{key}_accuracy"] = rep["accuracy"]
    if "test_full" not in out:
        out["test_full"], out["test_full_accuracy"] = out["test"], out["test_accuracy"]
    out["finished"] = "2025-01-01T00:00:00"
    return out


def write_run(run_dir: Path, metrics: dict | None, mode="photo", subset="full", seed=42, init="scratch",
              slurm: dict | None = None) -> None:
    """A run directory as the trainer leaves it: config.yaml, run.json, metrics.jsonl (+ metrics.json on success)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    write_text(run_dir / "config.yaml", f"data:\n  subset: {subset}\n  seed: {seed}\nfinetune:\n  mode: {mode}\n"
                                        f"  init: {'scratch' if init == 'scratch' else '/sweep/pretrain'}\n")
    write_json(run_dir / "run.json", {"kind": "finetune", "world_size": 1, **(slurm or {})})
    write_text(run_dir / "metrics.jsonl", "".join(json.dumps({"epoch": e, "val_loss": 1.0 / (e + 1)}) + "\n"
                                                  for e in range(4)))
    if metrics is not None:
        write_json(run_dir / "metrics.json", metrics)


def embedding_eval(rng) -> dict:
    out = {"n_train": 17063, "n_test": 2225}
    for view, acc in (("photo", 0.86), ("spectra", 0.72), ("meta", 0.80), ("average", 0.88)):
        out[f"centroid_{view}"] = acc - 0.05 + rng.normal(0, 0.01)
        out[f"knn1_{view}"] = acc + rng.normal(0, 0.01)
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """24 tasks: 3 seeds x (photo, spectra) x (full, sub10) x (clip, scratch). One task failed (run dir, log with a
    Traceback, no metrics.json), one is missing, one has a truncated metrics.json; pretraining for seeds 42 and 0."""
    root = tmp_path_factory.mktemp("sweep") / "sw"
    tasks = make_tasks(seeds=SEEDS, modes=("photo", "spectra"), subsets=("full", "sub10"))
    sw = Sweep(root, tasks)
    sw.save()
    write_json(root / "jobs.json", {"pretrain": {"job_id": "700"}, "finetune": [{"array_job_id": JOB}]})
    rng = np.random.default_rng(1)
    pick = {t.name: t for t in tasks}
    failed = pick["photo-sub10-s66-scratch"]
    missing = pick["spectra-full-s0-clip"]
    corrupt = pick["spectra-sub10-s42-clip"]
    logs = root / "logs"
    for t in tasks:
        if t is missing:
            continue
        m = fake_metrics(t.mode, t.subset, t.seed, t.init, BASE[(t.mode, t.subset, t.init)], rng, root)
        slurm = {"SLURM_ARRAY_JOB_ID": JOB, "SLURM_ARRAY_TASK_ID": str(t.index), "SLURM_JOB_ID": str(900 + t.index)}
        write_run(sw.run_dir(t), None if t is failed else m, t.mode, t.subset, t.seed, t.init, slurm)
        if t is corrupt:
            text = (sw.run_dir(t) / "metrics.json").read_text()
            (sw.run_dir(t) / "metrics.json").write_text(text[: len(text) // 2])
        write_text(logs / f"ft_{JOB}_{t.index}.out", f"task {t.index} started\n")
    write_text(logs / f"ft_{JOB}_{failed.index}.err",
               "Traceback (most recent call last):\n  File \"train.py\", line 1, in <module>\n"
               "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\n\n")
    write_text(logs / f"{JOB}_{missing.index}_0_log.err", "srun: error: node17: task 0: Killed\n")
    # Decoys: another sweep's job with the same index, and a Submitit file whose *rank* is the failed index.
    write_text(logs / f"ft_555_{failed.index}.err", "from an older job\n")
    write_text(logs / f"{JOB}_{missing.index + 1}_{failed.index}_log.out", "rank file\n")
    # Pretraining: seeds 42 and 0 finished with an embedding evaluation; seed 66 never ran.
    pre = {}
    for s in (42, 0):
        pre[s] = embedding_eval(rng)
        d = root / "pretrain" / f"s{s}"
        d.mkdir(parents=True)
        write_json(d / "metrics.json", {"kind": "pretrain", "seed": s, "epochs_run": 30, "steps": 1000,
                                        "world_size": 4, "best_epoch": 20, "best_val": {"loss": 1.0},
                                        "embedding_eval": pre[s], "finished": "2025-01-01T00:00:00"})
    # Reference per-seed accuracies (%) of the runs that count, straight from the written files.
    ref: dict = {}
    for t in tasks:
        if t in (failed, missing, corrupt):
            continue
        m = json.loads((sw.run_dir(t) / "metrics.json").read_text())
        for ts in ("test", "test_full"):
            ref.setdefault((t.mode, t.subset, t.init, ts), {})[t.seed] = (100 * m[ts]["accuracy"],
                                                                          100 * m[ts]["macro_f1"])
    stdout = io.StringIO()
    res = collect(root, stream=stdout)
    return {"root": root, "sw": sw, "res": res, "stdout": stdout.getvalue(), "ref": ref, "pre": pre,
            "failed": failed, "missing": missing, "corrupt": corrupt, "out": root / "results"}


def _group(res, mode, subset, init):
    (g,) = [g for g in res["groups"] if (g["mode"], g["subset"], g["init"]) == (mode, subset, init)]
    return g


# ------------------------------------------------------------------------------------------------ tests

def test_aggregation_matches_numpy(sweep):
    res, ref = sweep["res"], sweep["ref"]
    assert len(res["groups"]) == 8
    for (mode, subset, init, ts), per_seed in ref.items():
        g = _group(res, mode, subset, init)
        seeds = sorted(per_seed)
        acc = np.array([per_seed[s][0] for s in seeds])
        f1 = np.array([per_seed[s][1] for s in seeds])
        assert g["n_seeds"] == len(seeds) and sorted(g["seeds"]) == seeds
        st = g[ts]
        assert st["mean"] == pytest.approx(acc.mean(), abs=1e-9)
        assert st["std_pop"] == pytest.approx(acc.std(ddof=0), abs=1e-9)
        assert st["std_sample"] == pytest.approx(acc.std(ddof=1), abs=1e-9)
        assert st["macro_f1_mean"] == pytest.approx(f1.mean(), abs=1e-9)
        assert {int(k): v for k, v in st["values"].items()} == pytest.approx(dict(zip(seeds, acc)))
    # The failed and corrupt tasks leave two seeds in their groups; everything else has three.
    assert _group(res, "photo", "sub10", "scratch")["n_seeds"] == 2
    assert _group(res, "spectra", "sub10", "clip")["n_seeds"] == 2
    assert _group(res, "spectra", "full", "clip")["n_seeds"] == 2
    assert _group(res, "photo", "full", "clip")["n_seeds"] == 3
    # On a full-data task the full test set is the test set.
    g = _group(res, "photo", "full", "clip")
    assert g["test"]["mean"] == g["test_full"]["mean"]


def test_paired_ttest_matches_scipy(sweep):
    res, ref = sweep["res"], sweep["ref"]
    comps = {(c["mode"], c["subset"], c["test_set"]): c for c in res["comparisons"]}
    assert len(comps) == 8
    for (mode, subset, ts), c in comps.items():
        clip, scratch = ref[(mode, subset, "clip", ts)], ref[(mode, subset, "scratch", ts)]
        seeds = sorted(set(clip) & set(scratch))
        assert c["seeds"] == seeds
        expect = ttest_rel([clip[s][0] for s in seeds], [scratch[s][0] for s in seeds])
        assert c["p_value"] == pytest.approx(float(expect.pvalue), rel=1e-9)
        assert c["plus"] == (expect.pvalue < 0.05 and np.mean([clip[s][0] for s in clip])
                             > np.mean([scratch[s][0] for s in scratch]))
    # photo sub10: CLIP 91 vs scratch 84 with 1% noise on 2 paired seeds: sub-X table marks it.
    assert comps[("photo", "sub10", "test")]["seeds"] == [0, 42]


def test_markdown_has_results_and_paper_numbers(sweep):
    md = (sweep["out"] / "results.md").read_text()
    assert md == sweep["stdout"]
    assert "21 of 24 tasks complete; 2 failed; 1 missing" in md
    assert "sub-X test set" in md and "full test set" in md
    for key in (("photo", "sub10"), ("photo", "full"), ("spectra", "sub10"), ("spectra", "full")):
        for init in ("scratch", "clip"):
            mean, std = PAPER_RESULTS[key][init]
            assert f"{mean} ± {std}" in md
    assert "91.264 ± 0.974 +" in md  # the paper's own marker
    g = _group(sweep["res"], "photo", "full", "clip")
    assert f"{g['test']['mean']:.3f} ± {g['test']['std_pop']:.3f}" in md
    lines = [ln for ln in md.splitlines() if ln.startswith("| photometry | sub10 |")]
    assert len(lines) == 2  # sub-X and full test set tables
    sub_x, full = lines
    assert "84.527" in sub_x and "84.527" not in full  # the paper measured sub10 on the sub10 test set only
    # Embedding table with the paper's 1-NN numbers.
    assert "Frozen CLIP embeddings" in md
    for v in PAPER_KNN1.values():
        assert f"| {v} |" in md


def test_failed_and_missing_reported_with_logs(sweep):
    res, failed, missing, corrupt = sweep["res"], sweep["failed"], sweep["missing"], sweep["corrupt"]
    assert res["summary"]["tasks"] == 24 and res["summary"]["complete"] == 21
    assert res["summary"]["failed"] == 2 and res["summary"]["missing"] == 1
    fails = {f["index"]: f for f in res["failures"] if f["kind"] == "finetune"}
    assert set(fails) == {failed.index, missing.index, corrupt.index}
    f = fails[failed.index]
    assert f["status"] == "failed" and "no metrics.json" in f["reason"]
    assert sorted(f["logs"]) == sorted([f"logs/ft_{JOB}_{failed.index}.err", f"logs/ft_{JOB}_{failed.index}.out"])
    assert f["last_log_line"].startswith("RuntimeError: CUDA out of memory")
    assert f["last_log_file"] == f"logs/ft_{JOB}_{failed.index}.err"
    assert "config.yaml" in f["run_files"] and "metrics.json" not in f["run_files"]
    assert f["last_epoch"] == 3
    m = fails[missing.index]
    assert m["status"] == "missing" and m["logs"] == [f"logs/{JOB}_{missing.index}_0_log.err"]
    assert m["last_log_line"] == "srun: error: node17: task 0: Killed"
    c = fails[corrupt.index]
    assert c["status"] == "failed" and "does not parse" in c["reason"]
    md = sweep["stdout"]
    assert f"FAILED task {failed.index} photo/sub10/s66/scratch" in md
    assert f"MISSING task {missing.index} spectra/full/s0/clip" in md
    assert f"logs/ft_{JOB}_{failed.index}.err" in md
    assert "RuntimeError: CUDA out of memory" in md
    # The missing pretraining run of seed 66 is reported too, apart from the task count.
    pre = {r["seed"]: r for r in res["pretrain_runs"]}
    assert pre[42]["status"] == pre[0]["status"] == "complete" and pre[66]["status"] == "missing"
    # The complete runs of the failed tasks' groups are kept.
    assert {int(s) for s in _group(res, "photo", "sub10", "scratch")["test"]["values"]} == {42, 0}


def test_pretrain_embedding_table(sweep):
    rows = {r["view"]: r for r in sweep["res"]["pretrain"]["rows"]}
    assert set(rows) == {"photo", "spectra", "meta", "average"}
    for view, row in rows.items():
        vals = [100 * sweep["pre"][s][f"knn1_{view}"] for s in (42, 0)]
        assert row["knn1"]["mean"] == pytest.approx(np.mean(vals))
        assert row["knn1"]["std_pop"] == pytest.approx(np.std(vals))
        assert row["paper_knn1"] == PAPER_KNN1[view]


def test_per_class_bars_keep_a_large_sweep_readable(sweep):
    from astrom3_hpc.results.plots import MAX_BAR_GROUPS, bar_groups

    groups = sweep["res"]["groups"]
    assert bar_groups(groups) == (groups, "")  # this sweep: 8 groups, all shown
    many = [dict(g, init=f"{g['init']}{k}") for k in range(3) for g in groups]  # 24 groups, 12 of them full
    kept, note = bar_groups(many)
    full = [g for g in many if g["subset"] == "full"]
    left = ", ".join(f"{g['mode']} full {g['init']}" for g in full[MAX_BAR_GROUPS:])  # named, not silently dropped
    assert kept == full[:MAX_BAR_GROUPS] and note == f" ({len(kept)} of 24 groups: the full subset's; left out: {left})"


def test_outputs_written(sweep):
    out = sweep["out"]
    for name in ("accuracy_vs_fraction.png", "per_class_recall.png"):
        png = out / name
        assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 16  # 8 groups x 2 test sets
    assert set(rows[0]) == {"mode", "subset", "init", "test_set", "n_seeds", "mean", "std_pop", "std_sample",
                            "macro_f1_mean", "paper_mean", "paper_std", "p_value"}
    by = {(r["mode"], r["subset"], r["init"], r["test_set"]): r for r in rows}
    g = _group(sweep["res"], "spectra", "sub10", "scratch")
    r = by[("spectra", "sub10", "scratch", "test")]
    assert float(r["mean"]) == pytest.approx(g["test"]["mean"]) and int(r["n_seeds"]) == 3
    assert float(r["paper_mean"]) == 46.677 and float(r["paper_std"]) == 3.486
    assert by[("spectra", "sub10", "scratch", "test_full")]["paper_mean"] == ""
    assert by[("spectra", "full", "scratch", "test_full")]["paper_mean"] == "76.278"
    assert float(r["p_value"]) == pytest.approx(
        [c for c in sweep["res"]["comparisons"] if (c["mode"], c["subset"], c["test_set"])
         == ("spectra", "sub10", "test")][0]["p_value"])
    js = json.loads((out / "results.json").read_text())
    assert js["summary"]["line"] == "21 of 24 tasks complete; 2 failed; 1 missing"
    assert len(js["runs"]) == 24 and len(js["failures"]) == 4  # 3 tasks + the missing pretraining run
    assert not list(out.glob(".*.tmp"))  # atomic writes left no temporaries


def test_metrics_validation(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "metrics.json"
    good = fake_metrics("photo", "sub10", 42, "clip", 0.9, rng)
    write_json(p, good)
    assert read_metrics(p)["test"]["accuracy"] == good["test"]["accuracy"]
    for broken in ({**good, "kind": "pretrain"}, {k: v for k, v in good.items() if k != "test_full"},
                   {**good, "test": {**good["test"], "accuracy": float("nan")}}, {**good, "init": "clip-ish"}):
        write_text(p, json.dumps(broken))
        with pytest.raises(BadMetrics):
            read_metrics(p)
    write_text(p, "")
    with pytest.raises(BadMetrics, match="does not parse"):
        read_metrics(p)


def test_metrics_of_another_task_is_not_a_result(tmp_path):
    root = tmp_path / "sw"
    tasks = make_tasks(seeds=(42,), modes=("meta",), subsets=("full",))
    sw = Sweep(root, tasks)
    sw.save()
    rng = np.random.default_rng(2)
    for t in tasks:  # the clip run dir holds a result for seed 0 (copied by hand?)
        write_run(sw.run_dir(t), fake_metrics("meta", "full", 0 if t.init == "clip" else 42, t.init, 0.85, rng))
    res = collect(root, out=tmp_path / "res", plot=False)
    assert res["summary"]["line"] == "1 of 2 tasks complete; 1 failed; 0 missing"
    (f,) = [f for f in res["failures"] if f["kind"] == "finetune"]
    assert "meta/full/0/clip" in f["reason"] and f["init"] == "clip"
    assert res["comparisons"] == []  # nothing to pair: no p-value, no marker
    md = (tmp_path / "res" / "results.md").read_text()
    assert "| metadata | full | 1/0 |" in md and "(1 seed)" in md


def test_plain_directory_without_manifest(sweep, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(sweep["root"] / "runs", plain / "runs")
    shutil.copytree(sweep["root"] / "pretrain", plain / "pretrain")
    shutil.copytree(sweep["root"] / "logs", plain / "logs")
    res = collect(plain, out=tmp_path / "out", plot=False)
    assert not res["has_manifest"]
    assert res["summary"]["line"] == "21 of 23 tasks complete; 2 failed; 0 missing"
    assert len(res["groups"]) == 8
    for key in (("photo", "sub10", "clip", "test"), ("spectra", "full", "scratch", "test_full")):
        g = _group(res, *key[:3])
        assert g[key[3]]["mean"] == pytest.approx(_group(sweep["res"], *key[:3])[key[3]]["mean"])
    fails = {f["run_dir"]: f for f in res["failures"] if f["kind"] == "finetune"}
    f = fails[f"runs/{sweep['failed'].name}"]
    # No manifest: the run's own run.json (SLURM ids) still finds its logs, not the decoys.
    assert (f["mode"], f["subset"], f["seed"], f["init"]) == ("photo", "sub10", 66, "scratch")
    assert sorted(f["logs"]) == sorted([f"logs/ft_{JOB}_{sweep['failed'].index}.err",
                                        f"logs/ft_{JOB}_{sweep['failed'].index}.out"])
    assert {r["seed"] for r in res["pretrain_runs"] if r["status"] == "complete"} == {42, 0}


def test_cli(sweep, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="astrom3")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["collect", str(sweep["root"]), "--out", str(tmp_path / "o"), "--std", "sample"])
    assert args.func(args) == 0
    out = capsys.readouterr()
    assert "21 of 24 tasks complete; 2 failed; 1 missing" in out.out and "sample std" in out.out
    g = _group(sweep["res"], "photo", "full", "clip")
    assert f"{g['test']['mean']:.3f} ± {g['test']['std_sample']:.3f}" in out.out
    assert (tmp_path / "o" / "results.csv").exists()
    args = parser.parse_args(["collect", str(tmp_path / "nowhere")])
    assert args.func(args) == 2
    # A folder without any run (the wrong one, most likely): an error naming it, no empty tables written.
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    args = parser.parse_args(["collect", str(tmp_path / "empty")])
    assert args.func(args) == 2
    assert f"{tmp_path / 'empty'}: no runs below it" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "results").exists()


def test_module_main(sweep, tmp_path, capsys):
    """`python -m astrom3_hpc.cli.results SWEEP_DIR ...` runs its main (tested in-process: no second interpreter)."""
    from astrom3_hpc.cli.results import main

    assert main([str(sweep["root"]), "--out", str(tmp_path / "m")]) == 0
    assert "| photometry | sub10 |" in capsys.readouterr().out
    assert (tmp_path / "m" / "accuracy_vs_fraction.png").stat().st_size > 0


def test_per_class_table_lists_every_group_with_recall(sweep):
    md = (sweep["out"] / "results.md").read_text()
    assert "## Macro-F1 and per-class recall" in md
    g = _group(sweep["res"], "photo", "full", "clip")
    rows = [ln for ln in md.splitlines() if ln.startswith("| photo | full | clip |")]
    assert len(rows) == 1 and f"| {g['test']['mean']:.2f} |" in rows[0]
    assert g["test"]["per_class_recall"]  # mean recall per class over the seeds


def test_paper_columns_only_for_astrom3s_ten_classes(tmp_path):
    """Runs on another survey's classes (or on a subset of AstroM3's) get no paper numbers beside them: those were
    measured on ASAS-SN's ten classes. The same runs renamed to the ten classes get them back."""
    rng = np.random.default_rng(5)

    def runs(root: Path, names: list[str]) -> None:
        for seed in (42, 0):
            m = fake_metrics("photo", "full", seed, "scratch", 0.9, rng)
            for key in ("test", "test_full"):
                rep = m[key]
                rep["class_names"] = names
                rep["per_class_recall"] = dict(zip(names, rep["per_class_recall"].values()))
            write_run(root / "runs" / f"photo-full-s{seed}-scratch", m, seed=seed)

    survey = [f"C{i}" for i in range(10)]
    runs(tmp_path / "survey", survey)
    res = collect(tmp_path / "survey", out=tmp_path / "o1", plot=False)
    g = _group(res, "photo", "full", "scratch")
    assert g["test"]["paper_mean"] is None and g["class_names"] == survey
    assert any("not AstroM3's ten classes" in w for w in res["warnings"])
    md = (tmp_path / "o1" / "results.md").read_text()
    assert "Paper columns empty" in md and "90.724" not in md
    runs(tmp_path / "ten", list(CLASS_NAMES))
    res = collect(tmp_path / "ten", out=tmp_path / "o2", plot=False)
    assert _group(res, "photo", "full", "scratch")["test"]["paper_mean"] == 90.724
    assert "90.724 ± 1.464" in (tmp_path / "o2" / "results.md").read_text()
    from astrom3_hpc.results.paper import not_comparable

    two = {"class_names": ["RRAB", "RRC"], "test": {"per_class_recall": {}}, "test_full": {"per_class_recall": {}}}
    assert not_comparable([two]) == "these runs classify 2 of AstroM3's ten classes (RRAB, RRC)"
    odd = {**two, "class_names": ['Cep, "I"', "RR Lyr", "007"]}  # one class, not "Cep" and "I"
    assert not_comparable([odd]) == """these runs classify 007, 'Cep, "I"', 'RR Lyr', not AstroM3's ten classes"""


def test_a_class_only_some_seeds_test_sets_hold_is_marked_and_warned(tmp_path):
    """Catches a class's recall averaged over only the seeds whose test set holds it, unmarked, beside a macro-F1
    that averages a 3-class score with a 2-class one: nothing told the reader."""
    rng = np.random.default_rng(7)
    for seed, names in ((42, ["A", "B", "C"]), (0, ["A", "B"])):
        m = fake_metrics("photo", "full", seed, "scratch", 0.9, rng)
        for key in ("test", "test_full"):
            m[key]["class_names"] = names
            m[key]["per_class_recall"] = dict(zip(names, [0.9, 0.8, 1.0]))
        write_run(tmp_path / "runs" / f"photo-full-s{seed}-scratch", m, seed=seed)
    res = collect(tmp_path, out=tmp_path / "o", plot=False)
    g = _group(res, "photo", "full", "scratch")
    assert g["test"]["per_class_recall_n"] == {"A": 2, "B": 2, "C": 1}
    assert any("class C is missing from the test set of some seeds in photo/full/scratch" in w
               for w in res["warnings"])
    md = (tmp_path / "o" / "results.md").read_text()
    (row,) = [ln for ln in md[md.index("## Macro-F1 and per-class recall"):].splitlines()
              if ln.startswith("| photo | full | scratch |")]
    assert row.endswith("| 90.0 | 80.0 | 100.0* |"), row


def test_class_names_are_drawn_and_tabled_as_written(tmp_path):
    """A survey's class names are any text: `EA|EB` (VSX's either-or types) split collect's Markdown row, and a
    `$` pair was parsed as math, which crashed a finished run's confusion matrix (and its metrics) when it did
    not parse and drew another name when it did."""
    import re

    from astrom3_hpc.train.evaluate import plot_confusion

    names = ["EA|EB", "$\\undefinedcmd$", "$\\alpha$ Cyg", *[f"C{i}" for i in range(7)]]
    rng = np.random.default_rng(3)
    for seed in (42, 0):
        m = fake_metrics("photo", "full", seed, "scratch", 0.9, rng)
        for key in ("test", "test_full"):
            m[key]["class_names"] = names
            m[key]["per_class_recall"] = dict(zip(names, m[key]["per_class_recall"].values()))
        write_run(tmp_path / "runs" / f"photo-full-s{seed}-scratch", m, seed=seed)
    collect(tmp_path, out=tmp_path / "o", plot=True)
    assert (tmp_path / "o" / "per_class_recall.png").stat().st_size > 1000
    md = (tmp_path / "o" / "results.md").read_text()
    table = [ln for ln in md[md.index("## Macro-F1 and per-class recall"):].splitlines()[1:] if ln.startswith("|")]
    assert "EA\\|EB" in table[0]
    assert len({len(re.findall(r"(?<!\\)\|", line)) for line in table}) == 1, table
    y = np.arange(10)
    plot_confusion(classification_report(y, y, names), tmp_path / "cm.png", "odd names")
    assert (tmp_path / "cm.png").stat().st_size > 1000


def test_a_collect_stopped_while_plotting_leaves_the_previous_set_whole(tmp_path, monkeypatch):
    """Catches the tables written before the figures: stopped while plotting (the slow part), a collect left new
    tables beside the previous collect's figures, which described other runs."""
    from astrom3_hpc.results import collect as collect_module

    rng = np.random.default_rng(4)
    write_run(tmp_path / "runs" / "photo-full-s42-scratch", fake_metrics("photo", "full", 42, "scratch", 0.9, rng))
    collect(tmp_path, out=tmp_path / "o", plot=True)
    before = {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()}
    write_run(tmp_path / "runs" / "photo-full-s0-scratch", fake_metrics("photo", "full", 0, "scratch", 0.8, rng),
              seed=0)

    def stopped(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(collect_module, "plot_accuracy_vs_fraction", stopped)
    with pytest.raises(KeyboardInterrupt):
        collect(tmp_path, out=tmp_path / "o", plot=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()} == before


def test_a_signal_between_the_tables_waits_until_the_set_is_written(tmp_path, monkeypatch, caplog):
    """Catches collect writing results.md, results.csv, cells.csv and results.json one by one with signals live: a
    job signal after the first left a new results.md beside the previous collect's csv and json."""
    import os
    import signal

    from astrom3_hpc.results import collect as collect_module

    rng = np.random.default_rng(5)
    write_run(tmp_path / "runs" / "photo-full-s42-scratch", fake_metrics("photo", "full", 42, "scratch", 0.9, rng))
    collect(tmp_path, out=tmp_path / "o", plot=False)
    write_run(tmp_path / "runs" / "photo-full-s0-scratch", fake_metrics("photo", "full", 0, "scratch", 0.8, rng),
              seed=0)
    write_text = collect_module.write_text

    def signalled(path, text):
        write_text(path, text)
        if path.name == "results.md":
            os.kill(os.getpid(), signal.SIGTERM)

    def stop(signum, frame):  # as a job's handler acts on it: the command stops where it is
        raise KeyboardInterrupt

    before = {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()}
    monkeypatch.setattr(collect_module, "write_text", signalled)
    old = signal.signal(signal.SIGTERM, stop)
    try:
        with caplog.at_level(logging.WARNING, logger="astrom3"):
            res = collect(tmp_path, out=tmp_path / "o", plot=False)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert res["summary"]["complete"] == 2
    assert json.loads((tmp_path / "o" / "results.json").read_text())["summary"]["complete"] == 2
    assert all((tmp_path / "o" / n).read_bytes() != before[n] for n in ("results.md", "results.csv"))
    assert any("SIGTERM arrived" in r.getMessage() for r in caplog.records)


def test_a_folder_of_runs_mixing_settings_in_a_group_is_warned_about(tmp_path):
    """Catches collect averaging runs of different fine-tuning settings into one row without a word: a folder of
    runs has no manifest holding each run to its task (only use_rfr_score was compared)."""
    rng = np.random.default_rng(5)
    plain = fake_metrics("photo", "full", 42, "scratch", 0.9, rng)
    smoothed = {**fake_metrics("photo", "full", 0, "scratch", 0.8, rng), "label_smoothing": 0.3,
                "class_weights": [0.5, 2.0]}
    write_run(tmp_path / "runs" / "photo-full-s42-scratch", {**plain, "label_smoothing": 0.0, "class_weights": None})
    write_run(tmp_path / "runs" / "photo-full-s0-scratch", smoothed, seed=0)
    res = collect(tmp_path, out=tmp_path / "o", plot=False)
    (w,) = [w for w in res["warnings"] if "different settings" in w]
    assert w == ("photo/full/scratch: seeds were run with different settings (label_smoothing: 0.0, 0.3; weighted "
                 "classes: False, True); the mean mixes them")
    assert "different settings" in (tmp_path / "o" / "results.md").read_text()
