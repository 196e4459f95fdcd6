"""A sweep counts as done only what `astrom3 collect` counts, and what it cannot count it runs again or names:
a damaged metrics.json, a pretraining of other settings than the manifest's or made again since, a sweep moved while
a CLIP task was half done, and the debug executor's (absent) task logs.

One tiny pretraining for the module (configs/test.yaml, two steps); the fine-tunes train two steps each.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from astrom3_hpc.orchestration.status import format_status, sweep_status
from astrom3_hpc.orchestration.submission import create_sweep, plan
from astrom3_hpc.orchestration.sweep import Sweep, run_missing_task

REPO = Path(__file__).resolve().parents[1]
CFG = str(REPO / "configs" / "test.yaml")
FAST = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=16"]


def _create(root: Path, store: Path, inits=("clip",), pretrain_sets=()) -> Sweep:
    return create_sweep(root, seeds=[42], modes=["photo"], subsets=["full"], inits=list(inits), finetune_config=CFG,
                        pretrain_config=CFG, store=str(store), sets=FAST, pretrain_sets=[*FAST, *pretrain_sets])


@pytest.fixture(scope="module")
def pretrained(tiny_store, tmp_path_factory) -> Path:
    """A one-task CLIP sweep whose seed's pretraining has finished (its task not started)."""
    from astrom3_hpc.train.jobs import pretrain_config, run_pretrain

    sw = _create(tmp_path_factory.mktemp("pretrained") / "sw", tiny_store)
    assert run_pretrain(pretrain_config(sw.pretrain_config, sw.pretrain_overrides(42)), sw.pretrain_dir(42)) == 0
    return sw.root


@pytest.fixture(scope="module")
def finished(pretrained, tmp_path_factory) -> Path:
    """`pretrained` with its task finished by the array task's own entry point."""
    root = tmp_path_factory.mktemp("finished") / "sw"
    shutil.copytree(pretrained, root)
    assert run_missing_task(Sweep.load(root), 0) == 0
    return root


def _copy(src: Path, dst: Path) -> Sweep:
    shutil.copytree(src, dst)
    return Sweep.load(dst)


def test_a_damaged_metrics_json_is_missing_and_its_task_writes_it_again(finished, tmp_path, capsys):
    """Catches a truncated metrics.json counted as done by `sweep status`, `--resume-missing` and the array task
    ("already has metrics.json: nothing to do") while collect reported the task failed: no command reran it."""
    from astrom3_hpc.results.read import gather

    sw = _copy(finished, tmp_path / "sw")  # a copy resumes as a moved sweep does (the next tests)
    (task,) = sw.tasks
    metrics = sw.run_dir(task) / "metrics.json"
    good = json.loads(metrics.read_text())
    metrics.write_text(metrics.read_text()[:100])
    assert not sw.done(task) and sw.missing() == [task]
    st = sweep_status(sw.root)
    assert st["done"] == 0 and st["seeds"][42]["missing"] == [0] and st["seeds"][42]["other_settings"] == []
    assert plan(sw, resume_missing=True)[42]["tasks"] == [0]
    (rec,) = gather(sw.root).runs
    assert rec.status == "failed" and "does not parse" in rec.reason
    # The array task resumes the run's last checkpoint and writes the same result again.
    assert run_missing_task(sw, 0) == 0 and sw.done(task)
    assert json.loads(metrics.read_text())["test"] == good["test"]
    # Without a checkpoint to write it from, the task says what to do instead of "its results stand".
    shutil.rmtree(sw.run_dir(task) / "checkpoints")
    metrics.write_text("{")
    capsys.readouterr()
    assert run_missing_task(sw, 0) == 6
    err = capsys.readouterr().err
    assert f"{metrics} does not count" in err and "holds no checkpoint" in err and "move" in err


def test_a_pretraining_of_other_settings_is_not_complete_nor_its_clip_runs_done(finished, tmp_path, capsys):
    """Catches a manifest created again with another --pretrain-set over finished runs: status said "pretraining
    complete" and the CLIP fine-tunes made from the old pretraining done, collect tabled them, and
    --resume-missing submitted nothing."""
    from astrom3_hpc.results.read import gather

    shutil.copytree(finished, tmp_path / "sw")
    (tmp_path / "sw" / "manifest.json").rename(tmp_path / "manifest.first")
    # How it ran (threads, device, bf16, compile, ...) does not make another pretraining; what it trained does.
    how = ["train.threads=2", "train.precision=bf16", "train.kernels=plain", "train.compile=true"]
    sw = _create(tmp_path / "sw", Path(Sweep.load(finished).store), pretrain_sets=["optim.lr=0.05", *how])
    (task,) = sw.tasks
    assert sw.pretrain_other_settings(42) == ["optim.lr: 0.001 in the run dir, 0.05 in the sweep's manifest"]
    assert not sw.pretrain_done(42) and not sw.done(task) and sw.other_settings(task) == []
    st = sweep_status(sw.root)
    assert st["seeds"][42]["pretrain"] == "of other settings" and st["seeds"][42]["missing"] == [0]
    out = format_status(st)
    assert "pretrain/s42 was made with other settings" in out and "optim.lr: 0.001" in out
    assert "move the runs of other settings aside, then resubmit" in out
    with pytest.raises(ValueError, match=r"pretrain/s42 holds a pretraining of other settings .*optim.lr"):
        plan(sw, resume_missing=True)
    col = gather(sw.root)
    assert col.pretrain[0].status == "failed" and "optim.lr: 0.001" in col.pretrain[0].reason
    assert col.runs[0].status == "failed" and "pretraining of other settings" in col.runs[0].reason
    capsys.readouterr()
    assert run_missing_task(sw, 0) == 6  # it would have resumed the finished fine-tune and called it done
    assert "was made with other settings than the sweep's manifest (optim.lr" in capsys.readouterr().err
    # The manifest's own settings again: all counts as before.
    (tmp_path / "manifest.first").replace(sw.root / "manifest.json")
    sw = Sweep.load(sw.root)
    assert sw.pretrain_done(42) and sw.done(task) and not plan(sw, resume_missing=True)


def test_a_damaged_pretraining_metrics_json_is_submitted_again(finished, tmp_path):
    """A pretraining whose metrics.json collect reports failed was "complete" for status and --resume-missing."""
    sw = _copy(finished, tmp_path / "sw")
    p = sw.pretrain_dir(42) / "metrics.json"
    p.write_text(p.read_text()[:50])
    assert not sw.pretrain_done(42) and sw.pretrain_other_settings(42) == []
    assert sweep_status(sw.root)["seeds"][42]["pretrain"].startswith("damaged")
    assert plan(sw, resume_missing=False)[42]["submit_pretrain"]


def test_a_moved_sweeps_half_done_clip_task_resumes(pretrained, tmp_path):
    """Catches a CLIP task preempted before its sweep directory was moved (`mv`) refused for ever (exit 6,
    "finetune.init: '<old>/pretrain/s42' in the run dir, '<new>/pretrain/s42' now") while status advised a
    resubmission."""
    from astrom3_hpc.core.errors import EXIT_PREEMPTED
    from astrom3_hpc.train.jobs import run_finetune

    sw = _copy(pretrained, tmp_path / "sw")
    (task,) = sw.tasks
    assert run_finetune(sw.task_config(task), sw.run_dir(task), stop_after_steps=1) == EXIT_PREEMPTED
    (tmp_path / "sw").rename(tmp_path / "moved")
    sw = Sweep.load(tmp_path / "moved")
    assert run_missing_task(sw, 0) == 0 and sw.done(task)
    m = json.loads((sw.run_dir(task) / "metrics.json").read_text())
    assert m["init_dir"] == str(sw.pretrain_dir(42))


def _pretrain_again(sw: Sweep) -> None:
    """What moving pretrain/s42 aside and running it again leaves: other weights under the same path (a rerun that
    trains bit for bit the same weights is the same pretraining, and its hash says so)."""
    import torch

    best = sw.pretrain_dir(42) / "best_model.pt"
    ckpt = torch.load(best, weights_only=False)
    name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][name] = ckpt["state_dict"][name] + 0.01
    torch.save(ckpt, best)


def _save_again(sw: Sweep) -> None:
    import os

    import torch

    best = sw.pretrain_dir(42) / "best_model.pt"
    before = best.read_bytes()
    torch.save(torch.load(best, weights_only=False), best.with_name("resaved.pt"))
    os.replace(best.with_name("resaved.pt"), best)
    assert best.read_bytes() != before


def test_a_clip_run_from_a_pretraining_made_again_is_neither_done_nor_resumed(finished, pretrained, tmp_path,
                                                                                capsys):
    """Catches a CLIP fine-tune counted done (status, --resume-missing, collect) after its seed's pretraining was
    moved aside and run again: the path, the one thing fine-tunes recorded of it, was the same. A half-done one
    resumed its checkpoint, made from the old weights, as a fine-tune of the new."""
    from astrom3_hpc.core.errors import EXIT_PREEMPTED
    from astrom3_hpc.results.read import gather
    from astrom3_hpc.train.jobs import run_finetune

    sw = _copy(finished, tmp_path / "done")
    (task,) = sw.tasks
    assert sw.done(task)
    _save_again(sw)  # torch.save names its archive after the file: other bytes, the same tensors
    assert sw.done(task)
    _pretrain_again(sw)
    assert not sw.done(task) and sw.missing() == [task]
    (line,) = sw.other_settings(task)
    assert line.startswith("init_weights: started from pretrained weights of sha256") and "pretrained again" in line
    assert sweep_status(sw.root)["seeds"][42]["other_settings"] == [0]
    (rec,) = gather(sw.root).runs
    assert rec.status == "failed" and "init_weights" in rec.reason
    capsys.readouterr()
    assert run_missing_task(sw, 0) == 6 and "init_weights: started from" in capsys.readouterr().err
    # A fine-tune recorded before the hash was: nothing to tell its pretraining by, so it stands as before.
    ident = sw.run_dir(task) / "identity.json"
    ident.write_text(json.dumps({k: v for k, v in json.loads(ident.read_text()).items() if k != "init_weights"}))
    assert sw.done(task)

    sw = _copy(pretrained, tmp_path / "half")
    assert run_finetune(sw.task_config(task), sw.run_dir(task), stop_after_steps=1) == EXIT_PREEMPTED
    _pretrain_again(sw)
    capsys.readouterr()
    assert run_missing_task(sw, 0) == 6 and "init_weights: started from" in capsys.readouterr().err


def test_only_a_sweeps_own_pretraining_of_the_seed_stands_for_a_moved_one(tmp_path):
    """The moved sweep's pretraining is taken for the recorded one only where both are a sweep's pretraining of the
    run's seed and the recorded one is gone or a copy: another pretraining still there stays refused."""
    from astrom3_hpc.core.config import RunConfig
    from astrom3_hpc.train.fingerprint import OtherRunError, _flatten, check_run_dir, write_identity

    config = _flatten(RunConfig().to_dict())
    old_root, root = tmp_path / "old", tmp_path / "new"
    run = root / "runs" / "photo-full-s42-clip"
    run.mkdir(parents=True)
    (root / "manifest.json").write_text("{}")
    (root / "pretrain" / "s42").mkdir(parents=True)
    (root / "pretrain" / "s42" / "metrics.json").write_text('{"kind": "pretrain", "finished": "1"}')

    def recorded(init):
        write_identity(run, {"config": {**config, "data.seed": 42, "finetune.init": str(init)}, "seed": 42})

    now = {"config": {**config, "data.seed": 42, "finetune.init": str(root / "pretrain" / "s42")}, "seed": 42}
    recorded(old_root / "pretrain" / "s42")
    check_run_dir(run, now, resume=True)  # moved: the old one is gone
    (old_root / "pretrain" / "s42").mkdir(parents=True)
    shutil.copy(root / "pretrain" / "s42" / "metrics.json", old_root / "pretrain" / "s42")
    check_run_dir(run, now, resume=True)  # copied: the old one is the same run
    (old_root / "pretrain" / "s42" / "metrics.json").write_text('{"kind": "pretrain", "finished": "2"}')
    with pytest.raises(OtherRunError, match="finetune.init: '.*/old/pretrain/s42' in the run dir"):
        check_run_dir(run, now, resume=True)  # another pretraining, still there
    for other in (tmp_path / "gone" / "pretrain" / "s0", tmp_path / "gone" / "p42"):
        recorded(other)  # another seed's pretraining, or no sweep's
        with pytest.raises(OtherRunError, match="finetune.init:"):
            check_run_dir(run, now, resume=True)
    recorded(old_root / "pretrain" / "s42")
    (root / "manifest.json").unlink()  # not in a sweep: paths alone say nothing
    shutil.rmtree(old_root)
    with pytest.raises(OtherRunError, match="finetune.init:"):
        check_run_dir(run, now, resume=True)


def test_the_debug_executor_links_no_logs_it_does_not_write(tiny_store, tmp_path):
    """Catches logs/ft_DEBUG_<task>.* links into submitit/ files the debug executor never writes (jobs.json
    announced them, collect found none), every debug array recorded as "DEBUG" (a later submission replaced the
    links), and a failed task pointing at "this job's log"."""
    from astrom3_hpc.orchestration.submission import read_jobs
    from astrom3_hpc.orchestration.submitit_launch import job_exception, launch_sweep

    sw = _create(tmp_path / "sw", tiny_store, inits=("scratch",))
    manifest = json.loads((sw.root / "manifest.json").read_text())
    manifest["sets"].append("train.no_such_key=1")  # the task fails at once, before any training
    (sw.root / "manifest.json").write_text(json.dumps(manifest))
    sw = Sweep.load(sw.root)
    first, second = launch_sweep(sw, cluster="debug"), launch_sweep(sw, cluster="debug")
    (job,) = second["_jobs"]["finetune"][42]
    assert "its error is printed above" in str(job_exception(job))
    assert not (sw.root / "submitit").exists() and list((sw.root / "logs").iterdir()) == []
    arrays = [a for s in read_jobs(sw.root)["submissions"] for a in s["finetune"]]
    assert len({a["array_job_id"] for a in arrays}) == 2 and all("submitit" not in a["logs"] for a in arrays)
    assert first["finetune"][0]["array_job_id"] != second["finetune"][0]["array_job_id"]


def test_prune_frees_finished_runs_checkpoints_and_leaves_them_done(finished, tmp_path, capsys):
    """`sweep prune` deletes checkpoints/ of the finished pretraining and task (most of a sweep's bytes), passes
    over a run a live job holds, and leaves status, collect and --init as they were."""
    import json

    from astrom3_hpc.cli import main
    from astrom3_hpc.core.locks import held
    from astrom3_hpc.results.read import gather

    sw = _copy(finished, tmp_path / "sw")
    (task,) = sw.tasks
    pre, run = sw.pretrain_dir(42), sw.run_dir(task)
    assert (pre / "checkpoints").is_dir() and (run / "checkpoints").is_dir()
    capsys.readouterr()
    assert main(["sweep", "prune", str(sw.root), "--dry-run"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["runs_pruned"] == 2 and dry["bytes_freed"] > 0 and (run / "checkpoints").is_dir()
    with held(run / ".lock"):  # a job writing the task's run now
        assert main(["sweep", "prune", str(sw.root)]) == 0
    busy = json.loads(capsys.readouterr().out)
    assert busy["busy"] == [str(run)] and not (pre / "checkpoints").exists() and (run / "checkpoints").is_dir()
    (run / ".checkpoints.pruning-0000").mkdir()  # an earlier prune stopped halfway
    assert main(["sweep", "prune", str(sw.root)]) == 0
    assert json.loads(capsys.readouterr().out)["runs_pruned"] == 1
    assert not [p for p in run.iterdir() if "checkpoints" in p.name]
    assert (pre / "best_model.pt").is_file() and sw.done(task) and sw.pretrain_done(42) and not sw.missing()
    col = gather(sw.root)
    assert [r.status for r in col.runs] == ["complete"] and len(col.pretrain) == 1 and not col.warnings
