"""A sweep task runs `astrom3 finetune` through the library, not through the CLI: same config, same exit codes.

The array task (jobs/sweep_task.py -> orchestration.sweep.run_missing_task) used to call `cli.main` with the task's
argv; it now builds the config with train.jobs.finetune_config and maps errors with train.command.run_command. These
tests pin what must not have changed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from astrom3_hpc.cli import build_parser
from astrom3_hpc.core.errors import EXIT_BAD_INPUT
from astrom3_hpc.orchestration.submission import create_sweep
from astrom3_hpc.orchestration.sweep import run_task
from astrom3_hpc.train import jobs

REPO = Path(__file__).resolve().parents[1]
CFG = str(REPO / "configs" / "paper_finetune.yaml")


def _sweep(tmp_path, store="data/none.zarr"):
    return create_sweep(tmp_path / "sw", seeds=[42], modes=["photo", "all"], subsets=["full", "sub10"],
                        finetune_config=CFG, store=store, sets=["train.epochs=3"])


def test_task_config_is_the_finetune_commands_config(tmp_path, monkeypatch):
    """Catches a sweep task whose config drifts from `astrom3 finetune`'s for the same flags (an override
    applied in another order, the `cells:` entry of the wrong mode/subset, a flag dropped)."""
    sw = _sweep(tmp_path)
    assert len(sw.tasks) == 8
    seen = {}

    def run_finetune(cfg, run_dir, **kw) -> int:
        seen["cfg"] = cfg
        return 0

    monkeypatch.setattr(jobs, "run_finetune", run_finetune)
    for t in sw.tasks:
        args = build_parser().parse_args(sw.task_argv(t))
        assert args.func(args) == 0  # `astrom3 finetune` with these arguments, up to the training itself
        from_cli = seen.pop("cfg")
        assert sw.task_config(t).to_dict() == from_cli.to_dict(), t.name
        assert from_cli.data.store == sw.store and from_cli.train.epochs == 3
    cells = {(t.mode, t.subset): sw.task_config(t).optim.lr for t in sw.tasks}
    assert len(set(cells.values())) > 1, "configs/finetune_cells.yaml gives cells different learning rates"


def _finished(task) -> dict:
    """A metrics.json the collector counts for `task` (a task counts as done only with one)."""
    import numpy as np
    from test_collect import fake_metrics

    return fake_metrics(task.mode, task.subset, task.seed, task.init, 0.8, np.random.default_rng(0))


def _break_config(sw):
    """A sweep-wide override naming no config key: it fails while the task's config is built, before any
    process group exists (a deeper bad input, e.g. a missing pretraining run, would first need a free port)."""
    manifest = json.loads((sw.root / "manifest.json").read_text())
    manifest["sets"].append("train.no_such_key=1")
    (sw.root / "manifest.json").write_text(json.dumps(manifest))


def test_bad_input_in_a_task_is_exit_2_with_one_line(tmp_path, capfd):
    """Catches a sweep task that lets an expected error escape as a traceback (exit 1), which the array's
    bookkeeping cannot tell from a crash, or reports it under another command's name."""
    sw = _sweep(tmp_path)
    _break_config(sw)
    assert run_task(sw.root, 1) == EXIT_BAD_INPUT
    err = capfd.readouterr().err
    assert "astrom3 finetune: error:" in err and "no_such_key" in err and "Traceback" not in err


def test_job_script_exit_codes(tmp_path):
    """Catches jobs/sweep_task.py exit codes changing: out-of-range index and bad input are 2, a task whose run
    directory already holds metrics.json is 0 without running."""
    sw = _sweep(tmp_path)
    script = [sys.executable, str(REPO / "jobs" / "sweep_task.py"), str(sw.root)]
    r = subprocess.run([*script, "99"], capture_output=True, text=True)
    assert r.returncode == 2 and "has tasks 0..7, not 99" in r.stderr
    _break_config(sw)
    r = subprocess.run([*script, "1"], capture_output=True, text=True)
    assert r.returncode == 2 and "astrom3 finetune: error:" in r.stderr and "no_such_key" in r.stderr
    assert "Traceback" not in r.stderr
    done = sw.run_dir(sw.tasks[0])
    done.mkdir(parents=True)
    (done / "metrics.json").write_text(json.dumps(_finished(sw.tasks[0])))
    r = subprocess.run([*script, "0"], capture_output=True, text=True)
    assert r.returncode == 0 and "nothing to do" in r.stderr


def test_a_bad_array_index_or_a_damaged_manifest_is_one_line(tmp_path, capsys, monkeypatch):
    """Catches SLURM_ARRAY_TASK_ID=x and a truncated or reshaped manifest.json ending in tracebacks (exit 1, which
    the array's bookkeeping cannot tell from a crash); `sweep status` on such a manifest did the same."""
    from astrom3_hpc.cli import main
    from astrom3_hpc.cli.orchestration import sweep_task_main

    sw = _sweep(tmp_path)
    with monkeypatch.context() as m:  # a test run inside an array job keeps its own index
        m.setenv("SLURM_ARRAY_TASK_ID", "x")
        assert sweep_task_main([str(sw.root)]) == 2
    assert "SLURM_ARRAY_TASK_ID='x' is not a task index" in capsys.readouterr().err
    manifest = sw.root / "manifest.json"
    for damaged in (manifest.read_text()[:50], "[]", '{"tasks": [{"mode": "photo"}]}'):
        manifest.write_text(damaged)
        assert sweep_task_main([str(sw.root), "0"]) == 2
        assert f"sweep_task.py: error: {manifest} is damaged" in capsys.readouterr().err
        assert main(["sweep", "status", str(sw.root)]) == 2
        assert f"{manifest} is damaged" in capsys.readouterr().err


def test_a_light_curve_sweep_fits_the_baseline_beside_its_networks(tmp_path):
    """Catches a sweep that cannot hold the classical baseline (so a cluster user's table lacks the score its
    networks must beat), a baseline task that runs anything but `astrom3 baseline` on its split, and a baseline
    asked of a sweep without light curves."""
    import pytest

    from lightcurve_tables import lc_store

    from astrom3_hpc.cli import main
    from astrom3_hpc.cli.results import main as collect_main

    store = lc_store(tmp_path / "tables")
    sw = create_sweep(tmp_path / "lc", seeds=[42], modes=["photo"], subsets=["full"],
                      inits=["scratch", "baseline"], finetune_config=str(REPO / "configs" / "periodic_finetune.yaml"),
                      store=str(store), sets=["train.epochs=1", "train.batch_size=8", "model.d_model=16",
                                              "model.n_layers=1", "model.n_heads=2", "model.d_ff=32"])
    assert [(t.mode, t.init) for t in sw.tasks] == [("photo", "scratch"), ("photo", "baseline")]
    base = sw.tasks[1]
    assert base.hparams is None and sw.run_dir(base).name == "photo-full-s42-baseline"
    assert sw.task_argv(base) == ["baseline", str(store), "--seed", "42", "--subset", "full", "--out",
                                  str(sw.run_dir(base))]
    # Through the array task's own entry point, as sbatch and Submitit start it.
    script = [sys.executable, str(REPO / "jobs" / "sweep_task.py"), str(sw.root)]
    for index in (1, 0):
        r = subprocess.run([*script, str(index)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
    by_hand = tmp_path / "by-hand"
    assert main(["baseline", str(store), "--seed", "42", "--out", str(by_hand)]) == 0
    task_m, hand_m = (json.loads((d / "metrics.json").read_text()) for d in (sw.run_dir(base), by_hand))
    assert task_m["init"] == "baseline" and task_m["test"] == hand_m["test"] and task_m["val"] == hand_m["val"]
    assert collect_main([str(sw.root), "--out", str(tmp_path / "res")]) == 0
    md = (tmp_path / "res" / "results.md").read_text()
    assert "| photo | full | scratch | 1 |" in md
    # Beside the test scores, the validation macro-F1 a model is to be chosen by.
    t, v = task_m["test"], task_m["val"]
    assert (f"| photo | full | baseline | 1 | {100 * t['accuracy']:.2f} | {100 * v['macro_f1']:.2f} | "
            f"{100 * t['macro_f1']:.2f} |") in md
    # Each network group against the baseline on the same splits, with the paired bootstrap's interval.
    net_m = json.loads((sw.run_dir(sw.tasks[0]) / "metrics.json").read_text())
    row = next(r for r in json.loads((tmp_path / "res" / "results.json").read_text())["against_baseline"])
    assert (row["init"], row["seeds"]) == ("scratch", [42])
    for split in ("val", "test"):
        diff = net_m[split]["macro_f1"] - task_m[split]["macro_f1"]
        assert abs(row[split]["observed"] - diff) < 1e-9 and row[split]["low"] <= diff <= row[split]["high"]
    assert f"| photo | full | scratch | 1 | {100 * row['val']['observed']:+.1f} [" in md
    with pytest.raises(ValueError, match="needs mode photo"):
        create_sweep(tmp_path / "bad", seeds=[42], modes=["meta"], subsets=["full"], inits=["baseline"],
                     store=str(store))


def test_sweep_create_refuses_the_keys_it_sets_itself_in_overrides(tmp_path):
    """Catches `--store A --set data.store=B` pretraining on A and fine-tuning on B: the launch paths apply --set
    before (astrom3 pretrain, the demo) or after (array tasks, Submitit, the create-time check) the sweep's own
    store and seed. `sweep create` now refuses those keys, naming the flag to use, and writes no manifest."""
    import pytest

    cases = [(dict(sets=["data.store=data/b.zarr"]), "--set data.store=data/b.zarr: .*use --store"),
             (dict(pretrain_sets=["data.store=data/b.zarr"]), "--pretrain-set data.store=.*use --store"),
             (dict(sets=["data={seed: 3}"]), "--set data={seed: 3}: a sweep sets data.seed itself; use --seeds"),
             (dict(pretrain_sets=[" data.seed=3"]), "--pretrain-set  data.seed=3: .*use --seeds"),
             # The grid's own keys, silently overruled in every task (and a pretraining on a subset failed late).
             (dict(sets=["finetune.mode=spectra"]), "--set finetune.mode=spectra: .*use --modes"),
             (dict(sets=["finetune={init: scratch}"]), "a sweep sets finetune.init itself; use --inits"),
             (dict(pretrain_sets=["data.subset=sub10"]), "--pretrain-set data.subset=sub10: .*use --subsets")]
    for i, (kw, msg) in enumerate(cases):
        with pytest.raises(ValueError, match=msg):
            create_sweep(tmp_path / f"sw{i}", seeds=[42], modes=["photo"], subsets=["full"],
                         finetune_config=CFG, store="data/a.zarr", **kw)
        assert not (tmp_path / f"sw{i}" / "manifest.json").exists()
    # other data.* keys stay allowed
    sw = create_sweep(tmp_path / "ok", seeds=[42], modes=["photo"], subsets=["full"], finetune_config=CFG,
                      store="data/a.zarr", sets=["data.buffer_chunks=2"], pretrain_sets=["data.streams=4"])
    assert sw.sets == ["data.buffer_chunks=2"] and sw.pretrain_sets == ["data.streams=4"]


def test_a_finished_run_of_other_settings_is_not_the_tasks(tiny_store, tmp_path):
    """Catches a sweep created again over its runs with other --set values (as the damaged-manifest message
    advises) counting the old runs as done: --resume-missing skipped them and collect averaged both settings into
    one row without a word. The same settings still count as done."""
    from astrom3_hpc.orchestration.status import format_status, sweep_status
    from astrom3_hpc.orchestration.sweep import Sweep
    from astrom3_hpc.results.read import gather

    sets = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=16"]
    grid = dict(seeds=[42], modes=["meta"], subsets=["full"], inits=["scratch"], store=str(tiny_store))
    sw = create_sweep(tmp_path / "sw", sets=sets, **grid)
    script = [sys.executable, str(REPO / "jobs" / "sweep_task.py"), str(sw.root), "0"]
    r = subprocess.run(script, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert Sweep.load(sw.root).done(sw.tasks[0])  # its own settings: done (a relative store, cells resolved)
    (sw.root / "manifest.json").unlink()
    sw = create_sweep(tmp_path / "sw", sets=[*sets, "finetune.label_smoothing=0.3"], **grid)
    task = sw.tasks[0]
    assert not sw.done(task)
    diff = "finetune.label_smoothing: 0.0 in the run dir, 0.3 in the sweep's task"
    assert sw.other_settings(task) == [diff]
    status = format_status(sweep_status(sw.root))
    assert "tasks 0: their run directories hold finished runs of other settings" in status
    # Resubmitting alone would only see the task refuse again.
    assert "move the runs of other settings aside, then resubmit the missing tasks" in status
    (rec,) = gather(sw.root).runs
    assert rec.status == "failed" and diff in rec.reason
    # The task's job refuses the run dir, naming the difference, rather than counting it done (exit 0).
    r = subprocess.run(script, capture_output=True, text=True, timeout=300)
    assert r.returncode == 6 and "finetune.label_smoothing: 0.0 in the run dir, 0.3 now" in r.stderr, r.stderr[-3000:]


def test_a_clip_tasks_run_is_compared_with_its_pretrainings_architecture(tiny_store, tmp_path):
    """A CLIP task trains its pretraining's architecture (finetune --init keeps only the fine-tuning dropouts), and
    its run records that: compared with the fine-tuning config's own model section, every such run of a sweep whose
    configs differ there would count as a run of other settings."""
    from astrom3_hpc.core.config import dump_config, load_config
    from astrom3_hpc.data.store import Store
    from astrom3_hpc.train.fingerprint import run_identity, write_identity

    sw = create_sweep(tmp_path / "sw", seeds=[42], modes=["meta"], subsets=["full"], inits=["clip"],
                      store=str(tiny_store), sets=["model.d_model=48", "model.meta_dropout=0.3"])
    (task,) = sw.tasks
    pre = sw.pretrain_dir(42)
    pre.mkdir(parents=True)
    dump_config(load_config(None, [f"data.store={tiny_store}", "model.d_model=32"]), pre / "config.yaml")
    trained = sw.task_config(task)
    trained.model.d_model = 32  # what finetune --init builds: the pretraining's width, the task's dropouts
    run = sw.run_dir(task)
    run.mkdir(parents=True)
    write_identity(run, run_identity(trained, Store(tiny_store), 1, kind="finetune"))
    (run / "metrics.json").write_text(json.dumps(_finished(task)))
    assert sw.other_settings(task) == [] and sw.done(task)
    trained.model.meta_dropout = 0.1  # a dropout is the task's own: a run of another one is another run
    write_identity(run, run_identity(trained, Store(tiny_store), 1, kind="finetune"))
    assert sw.other_settings(task) == ["model.meta_dropout: 0.1 in the run dir, 0.3 in the sweep's task"]
    # A pretraining config.yaml damaged since: which architecture the run trained cannot be told, and status and
    # collect go on (they ended in a YAML traceback), the run counted as it was before the check existed.
    (pre / "config.yaml").write_text("model:\n  d_model: [16\n")
    assert sw.other_settings(task) == [] and sw.done(task)
    from astrom3_hpc.train.rundir import read_run_config

    with pytest.raises(ValueError, match=f"^{pre / 'config.yaml'} is damaged: not readable YAML"):
        read_run_config(pre)


def test_relative_cells_file_and_store_still_to_build_reach_a_task_run_elsewhere(tiny_store, tmp_path):
    """Catches `sweep create --set cells=mycells.yaml --store later.zarr` keeping both relative in the manifest
    (the store because it did not exist yet): the array task, which cd's to the repository, then looked for both
    there and exited 2. Both are made absolute against the directory `sweep create` ran in."""
    import shutil

    import yaml

    from dist_helpers import child_env

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    (work / "mycells.yaml").write_text(yaml.safe_dump({"cells": {"meta": {"full": {"optim": {"lr": 0.00123}}}}}))
    r = subprocess.run([str(Path(sys.executable).parent / "astrom3"), "sweep", "create", "sw", "--seeds", "42",
                        "--modes", "meta", "--subsets", "full", "--inits", "scratch", "--store", "later.zarr",
                        "--set", "cells=mycells.yaml", "train.epochs=1", "train.max_steps_per_epoch=2",
                        "train.batch_size=16", "--pretrain-set", "cells=mycells.yaml"],
                       cwd=work, env=child_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((work / "sw" / "manifest.json").read_text())
    cells = json.dumps(str((work / "mycells.yaml").resolve()))
    assert manifest["store"] == str((work / "later.zarr").resolve())
    assert manifest["sets"][0] == f"cells={cells}" and manifest["pretrain_sets"] == [f"cells={cells}"]
    shutil.copytree(tiny_store, work / "later.zarr")  # built after the sweep was created, where the user is
    r = subprocess.run([sys.executable, str(REPO / "jobs" / "sweep_task.py"), str(work / "sw"), "0"], cwd=elsewhere,
                       env=child_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run = work / "sw" / "runs" / "meta-full-s42-scratch"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["optim"]["lr"] == 0.00123 and config["data"]["store"] == manifest["store"]
