"""One job at a time writes a run directory (`<run dir>/.lock`, train/rundir.py `writing`): a second job started
while the first runs is refused at once (exit 6, one line) and the first finishes untouched; a lock left by a job
killed with SIGKILL blocks nothing; the ranks of one job do not refuse each other, and a refusal reaches them all.
Real jobs on the tiny store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from dist_helpers import child_env
from lightcurve_tables import private_copy
from test_train import ROOT, _cmd, run_job

from astrom3_hpc.cli import main
from astrom3_hpc.core.atomic import atomic_path
from astrom3_hpc.train import rundir
from astrom3_hpc.train.rundir import LOCK_NAME, RunDirBusy, writing

BUSY = "another job is writing it now"


def start(run: Path, store: Path, sets: list[str]) -> subprocess.Popen:
    """A fine-tune in the background, once it holds the run dir (its pid recorded in the lock file; its train.log
    begun, a later sign, for a job that takes no lock)."""
    p = subprocess.Popen(_cmd("finetune", run, store, 1, "single", sets=sets), env=child_env(), cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        try:
            if json.loads((run / LOCK_NAME).read_text()).get("pid") == p.pid:
                return p
        except (OSError, ValueError):
            if (run / "train.log").exists():
                return p
        time.sleep(0.1)
    p.kill()
    raise AssertionError(f"the first job never held {run / LOCK_NAME}: {p.communicate()[1][-3000:]}")


def epochs_logged(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.timeout(300)
def test_a_second_finetune_into_a_run_dir_in_use_is_refused_and_the_first_finishes(tiny_store, tmp_path):
    """Two fine-tunes of different settings on one empty run dir both used to exit 0, leaving one's metrics.json
    under the other's config.yaml and identity.json, and both runs' rows in metrics.jsonl."""
    run = tmp_path / "run"
    first = start(run, tiny_store, ["train.epochs=3"])
    first.send_signal(signal.SIGSTOP)  # it holds the lock, and stays in the middle of its job while the second runs
    try:
        r = run_job("finetune", run, tiny_store, sets=["train.epochs=2", "optim.lr=0.02"], check=False)
    finally:
        first.send_signal(signal.SIGCONT)
    assert r.returncode == 6, r.stderr[-3000:]
    assert r.stderr.strip().splitlines() == [
        f"astrom3 finetune: error: run dir {run}: another job is writing it now (pid {first.pid} on "
        f"{os.uname().nodename}); wait for it to end, or use another --run-dir"], r.stderr
    _, err = first.communicate(timeout=240)
    assert first.returncode == 0, err[-3000:]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["optim"]["lr"] == 0.001 and cfg["train"]["epochs"] == 3  # the first job's, not the refused one's
    assert json.loads((run / "identity.json").read_text())["config"]["optim.lr"] == 0.001
    assert epochs_logged(run) == [0, 1, 2]
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 3
    log = (run / "train.log").read_text()
    assert BUSY not in log and "optim.lr" not in log  # the refusal is the refused job's, not this run's


@pytest.mark.timeout(300)
def test_a_lock_left_by_a_killed_job_does_not_block_the_rerun(tiny_store, tmp_path):
    run = tmp_path / "run"
    sets = ["train.epochs=3", "train.checkpoint_every_epochs=1"]
    p = start(run, tiny_store, sets)
    deadline = time.time() + 200
    while time.time() < deadline and p.poll() is None and not (run / "checkpoints" / "latest.json").exists():
        time.sleep(0.1)
    p.kill()  # SIGKILL: no handler runs, the lock file stays behind
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == p.pid
    done = json.loads((run / "checkpoints" / "latest.json").read_text())["epoch"]
    run_job("finetune", run, tiny_store, sets=sets)
    assert "resumed from" in (run / "train.log").read_text()
    assert epochs_logged(run) == [0, 1, 2] and done >= 1
    assert (run / "metrics.json").exists()


@pytest.mark.timeout(300)
def test_every_rank_of_a_refused_job_stops_and_the_ranks_of_one_job_share_the_dir(tiny_store, tmp_path):
    """Only rank 0 takes the lock; its verdict reaches the other ranks, which would otherwise wait for it in
    their first collective."""
    run = tmp_path / "run"
    with writing(run):
        t0 = time.monotonic()
        r = run_job("finetune", run, tiny_store, world=2, launcher="torchrun", check=False, timeout=200)
        assert r.returncode != 0 and time.monotonic() - t0 < 120
        assert r.stderr.count(BUSY) == 1, r.stderr[-3000:]
        assert "rank 0: error: run dir" in r.stderr
        assert not (run / "train.log").exists() and not (run / "run.json").exists()
    run_job("finetune", run, tiny_store, world=2, launcher="torchrun", timeout=200)
    assert (run / "metrics.json").exists()


def test_a_baseline_into_a_run_dir_in_use_is_refused_before_writing_anything(feat_store, tmp_path, capsys):
    store, _ = private_copy(feat_store, tmp_path)
    out = tmp_path / "bl"
    with writing(out):  # as a job writing there holds it (flock: another open file conflicts, same process or not)
        assert main(["baseline", str(store), "--seed", "42", "--out", str(out)]) == 6
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [
            f"astrom3 baseline: error: run dir {out}: {BUSY} (pid {os.getpid()} on {os.uname().nodename}); wait "
            f"for it to end, or use another --out"], err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    assert main(["baseline", str(store), "--seed", "42", "--out", str(out)]) == 0  # the holder gone, it runs
    assert (out / "metrics.json").exists()


def test_a_requeued_job_waits_for_the_lock_of_its_own_earlier_attempt(tmp_path, monkeypatch):
    """After a node failure the file server may keep the dead node's lock for a while: the same SLURM job,
    restarted, waits for it; any other job is refused at once."""
    run = tmp_path / "run"
    monkeypatch.setattr(rundir, "REQUEUE_POLL_S", 0.05)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    released = threading.Event()

    def earlier_attempt(seconds: float) -> threading.Thread:
        ready = threading.Event()

        def hold():
            with writing(run):  # records job 77, restart 0
                ready.set()
                time.sleep(seconds)
                released.set()

        t = threading.Thread(target=hold)
        t.start()
        ready.wait(10)
        return t

    t = earlier_attempt(0.5)
    with pytest.raises(RunDirBusy, match="SLURM job 77"):  # not restarted: another job of the same id (srun steps)
        with writing(run):
            pass
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with writing(run):
        assert released.is_set()  # it waited for the earlier attempt
    t.join()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    released.clear()
    t = earlier_attempt(5)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    monkeypatch.setattr(rundir, "REQUEUE_WAIT_S", 0.2)
    with pytest.raises(RunDirBusy, match=BUSY):  # not for ever: a lock that outlives the wait is refused
        with writing(run):
            pass
    assert not released.is_set()
    t.join()


def test_temporary_files_a_killed_write_left_are_removed_once_the_lock_is_held(tmp_path, monkeypatch):
    """A SIGKILL inside an atomic write leaves its temporary file (best_model.pt's is the model's size); the next
    job to hold the run dir removes such files, and a job refused the lock leaves the holder's own alone."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    run = tmp_path / "run"
    # Entered and never left (each kept referenced: a collected one would clean up): what a SIGKILL leaves.
    writes = [atomic_path(run / "best_model.pt"), atomic_path(run / "checkpoints" / "latest.json")]
    stale = [w.__enter__() for w in writes]
    for p in stale:
        p.write_bytes(b"\0" * 1000)
    kept = [run / "notes.tmp", run / ".best_model.pt.tmp", run / "metrics.json", run / "checkpoints" / "x.tmp"]
    for p in kept:
        p.write_text("mine")
    (run / ".embeddings.tmp-abcdefgh").mkdir()
    with writing(run):
        assert not any(p.exists() for p in stale)
        writes.append(atomic_path(run / "metrics.json"))
        live = writes[-1].__enter__()  # the holder's write in progress
        with pytest.raises(RunDirBusy, match=BUSY):
            with writing(run):
                pass
        assert live.exists()
    assert all(p.read_text() == "mine" for p in kept) and (run / ".embeddings.tmp-abcdefgh").is_dir()
