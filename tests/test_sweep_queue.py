"""What the duplicate-submission guard and `astrom3 sweep status` conclude from the scheduler: a fake `squeue` on
PATH (no SLURM needed) that fails like a busy controller, or says the recorded jobs are purged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from astrom3_hpc.orchestration.status import format_status, sweep_status
from astrom3_hpc.orchestration.submission import check_not_running, record_submission
from astrom3_hpc.orchestration.sweep import Sweep, make_tasks


def _sweep(root: Path) -> Sweep:
    sw = Sweep(root, make_tasks(seeds=(42,), modes=("photo",), subsets=("full",), inits=("clip", "scratch")))
    sw.save()
    record_submission(root, {"backend": "sbatch", "cluster": "slurm", "pretrain": [{"seed": 42, "job_id": "1001"}],
                             "finetune": [{"seed": 42, "array_job_id": "1002"}]})
    return sw


def _fake_squeue(tmp_path: Path, monkeypatch, body: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "squeue"
    script.write_text("#!/bin/bash\n" + body + "\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


BUSY = ('echo "slurm_load_jobs error: Socket timed out on send/recv operation" >&2; exit 1')


def test_failed_squeue_refuses_a_resubmission_unless_forced(tmp_path, monkeypatch):
    """Catches a busy controller reading as "nothing queued": squeue's failure returned [], and the guard let a
    second submission into run directories whose jobs may still be running."""
    sw = _sweep(tmp_path / "sw")
    _fake_squeue(tmp_path, monkeypatch, BUSY)
    with pytest.raises(RuntimeError) as e:
        check_not_running(sw, force=False)
    msg = str(e.value)
    assert "cannot tell" in msg and "Socket timed out" in msg and "--force" in msg and str(sw.root) in msg
    check_not_running(sw, force=True)  # the user knows better: no error
    # Only "Invalid job id specified" (the jobs finished long ago and were purged) is an answer: nothing queued.
    _fake_squeue(tmp_path, monkeypatch, 'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1')
    check_not_running(sw, force=False)


def test_failed_squeue_makes_status_say_it_could_not_tell(tmp_path, monkeypatch):
    sw = _sweep(tmp_path / "sw")
    _fake_squeue(tmp_path, monkeypatch, BUSY)
    st = sweep_status(sw.root)
    assert st["queued"] is None and "Socket timed out" in st["queue_unknown"]
    out = format_status(st)
    assert "could not tell" in out and "nothing queued" not in out
    _fake_squeue(tmp_path, monkeypatch, 'echo 1002_3; echo 1002_4')
    assert "still queued/running: 1002" in format_status(sweep_status(sw.root))


def _local_sweep(root: Path, pids: list[int], host: str | None = None) -> Sweep:
    """A sweep whose tasks were started by the local executor: its recorded job ids are process ids."""
    import socket

    sw = Sweep(root, make_tasks(seeds=(42,), modes=("photo",), subsets=("full",), inits=("scratch",)))
    sw.save()
    record_submission(root, {"backend": "submitit", "cluster": "local", "host": host or socket.gethostname(),
                             "pids": [str(p) for p in pids], "pretrain": [],
                             "finetune": [{"seed": 42, "array_job_id": str(pids[0]), "tasks": [0]}]})
    return sw


def test_a_running_local_sweep_blocks_resubmission_and_shows_in_status(tmp_path):
    """Catches local-executor sweeps being invisible to the duplicate guard and to `sweep status`: their pids went
    to squeue (absent or blind to them), so status said "nothing queued: resubmit" and --resume-missing started
    the same task again in the same run directory while the first still trained."""
    import subprocess
    import sys

    from astrom3_hpc.orchestration.submitit_launch import launch_sweep

    # Stands in for Submitit's local controller (`python -m submitit.local._local FOLDER`).
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "submitit.local._local"])
    try:
        sw = _local_sweep(tmp_path / "sw", [proc.pid])
        with pytest.raises(RuntimeError, match=f"jobs pid {proc.pid} of sweep .* still queued or running"):
            launch_sweep(sw, cluster="local", resume_missing=True)
        assert f"still queued/running: pid {proc.pid}" in format_status(sweep_status(sw.root))
    finally:
        proc.kill()
        proc.wait()
    check_not_running(sw, force=False)  # the process has ended: resubmission allowed
    assert "nothing queued: resubmit" in format_status(sweep_status(sw.root))


def test_status_asks_sacct_only_about_slurm_jobs(tmp_path, monkeypatch):
    """Catches `sweep status` passing a local sweep's process ids to sacct, which reported the states of whatever
    SLURM jobs carry those numbers (another user's, or a purged one's) as this sweep's."""
    sw = _local_sweep(tmp_path / "sw", [4242424, 4242425])
    record_submission(sw.root, {"backend": "sbatch", "cluster": "slurm", "pretrain": [],
                                "finetune": [{"seed": 42, "array_job_id": "1002"}]})
    asked = tmp_path / "sacct_args"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text(f'#!/bin/bash\necho "$@" > {asked}\necho "1002|COMPLETED"\n'
                                  '[[ "$*" == *4242424* ]] && echo "4242424|FAILED"\ntrue\n')
    (bin_dir / "sacct").chmod(0o755)
    _fake_squeue(tmp_path, monkeypatch, "true")
    st = sweep_status(sw.root)
    assert asked.read_text().split()[-1] == "1002"
    assert "4242424" in st["job_ids"] and "4242424" not in st["job_states"]
    assert "jobs (sacct): COMPLETED 1" in format_status(st)


def test_local_jobs_recorded_on_another_host_are_unknown(tmp_path):
    sw = _local_sweep(tmp_path / "sw", [os.getpid()], host="some-other-node")
    with pytest.raises(RuntimeError, match="ran on host some-other-node.*--force"):
        check_not_running(sw, force=False)
    assert "could not tell" in format_status(sweep_status(sw.root))


def test_local_launch_records_every_task_process(tmp_path, monkeypatch):
    """Each task of a local array is its own process: jobs.json must list them all, not only the first one's."""
    from types import SimpleNamespace

    from astrom3_hpc.orchestration import submitit_launch

    class Executor:
        def map_array(self, fn, dirs, indices):
            return [SimpleNamespace(job_id=str(7000 + i), wait=lambda: None,
                                    paths=SimpleNamespace(stdout=tmp_path / "o", stderr=tmp_path / "e"))
                    for i in indices]

    monkeypatch.setattr(submitit_launch, "make_executor", lambda *a, **k: Executor())
    sw = Sweep(tmp_path / "sw", make_tasks(seeds=(42,), modes=("photo",), subsets=("full", "sub10", "sub25"),
                                           inits=("scratch",)))
    sw.save()
    submitit_launch.launch_sweep(sw, cluster="local", parallel=2)
    import json

    (sub,) = json.loads((sw.root / "jobs.json").read_text())["submissions"]
    assert sub["pids"] == ["7000", "7001", "7002"] and sub["host"]


def test_status_says_a_sweep_without_clip_tasks_needs_no_pretraining(tmp_path, monkeypatch):
    """Catches `sweep status` reporting "pretraining not started" for a scratch/baseline sweep, which submits none."""
    sw = Sweep(tmp_path / "sw", make_tasks(seeds=(42,), modes=("photo",), subsets=("full",),
                                           inits=("scratch", "baseline")))
    sw.save()
    _fake_squeue(tmp_path, monkeypatch, "true")
    out = format_status(sweep_status(sw.root))
    assert "seed 42: 0/2 done, pretraining not needed" in out
    assert "pretraining not started" in format_status(sweep_status(_sweep(tmp_path / "clip").root))


def test_a_damaged_jobs_json_refuses_submission_and_status_naming_it(tmp_path):
    """Catches an unreadable jobs.json read as "nothing running": `launch sweep` started the tasks beside any still
    running, then failed to record them with a bare JSON error naming no file, and status failed the same way."""
    sw = _sweep(tmp_path / "sw")
    jobs = sw.root / "jobs.json"
    jobs.write_text(jobs.read_text()[:40])  # cut short, as a full disk leaves a hand-copied file
    for force in (False, True):  # --force overrides what the queue says, not a record that cannot be kept
        with pytest.raises(ValueError) as e:
            check_not_running(sw, force=force)
        assert f"{jobs} is damaged: not readable JSON" in str(e.value) and "move it aside" in str(e.value)
    with pytest.raises(ValueError, match="is damaged"):
        sweep_status(sw.root)
    jobs.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a jobs record"):
        check_not_running(sw, force=False)


@pytest.mark.parametrize("backend", ["sbatch", "submitit"])
def test_a_submission_overlapping_another_is_refused_and_the_guard_runs_under_the_lock(tmp_path, monkeypatch,
                                                                                      backend):
    """Catches the duplicate guard being check-then-submit: two `sweep submit` runs on one sweep dir at once both
    found nothing queued and both submitted every task. Now a submission holds <sweep>/.jobs.lock from its guard
    to its last record, and a second one is refused at once, submitting nothing."""
    from astrom3_hpc.core.locks import LockHeld, held
    from astrom3_hpc.orchestration import sbatch, submission, submitit_launch

    sw = Sweep(tmp_path / "sw", make_tasks(seeds=(42,), modes=("photo",), subsets=("full",), inits=("scratch",)))
    sw.save()
    lock = sw.root / ".jobs.lock"
    calls = tmp_path / "sbatch_calls"
    _fake_squeue(tmp_path, monkeypatch, "true")
    (tmp_path / "bin" / "sbatch").write_text(f'#!/bin/bash\necho x >> {calls}\necho "Submitted batch job 77"\n')
    (tmp_path / "bin" / "sbatch").chmod(0o755)

    def submit():
        if backend == "sbatch":
            return sbatch.submit_sweep_sbatch(sw)
        return submitit_launch.launch_sweep(sw, cluster="slurm")

    with held(lock):  # another submission, between its guard and its record
        with pytest.raises(RuntimeError, match=r"another submission to sweep .* is under way .*\.jobs\.lock"):
            submit()
    assert not calls.exists() and not (sw.root / "jobs.json").exists()

    guard = submission.check_not_running
    seen = []

    def guard_under_the_lock(s, force):
        try:
            with held(lock):
                seen.append("unlocked")
        except LockHeld:
            seen.append("locked")
        guard(s, force)

    monkeypatch.setattr(sbatch, "check_not_running", guard_under_the_lock)
    monkeypatch.setattr(submitit_launch, "check_not_running", guard_under_the_lock)
    submit()
    assert seen == ["locked"] and calls.exists() and (sw.root / "jobs.json").exists()
    with held(lock):  # released once the submission is recorded
        pass


@pytest.mark.timeout(400)
def test_a_local_launch_records_each_job_while_it_runs(tiny_store, tmp_path):
    """Catches `launch sweep --cluster local` writing jobs.json only once every chunk had run: meanwhile `sweep
    status` said "nothing queued: resubmit" and a second launch was accepted, training each task twice in one run
    directory. Two tasks, --parallel 1: jobs.json must name the first task's process while it still trains."""
    import json
    import subprocess
    import sys
    import time

    from dist_helpers import child_env

    from astrom3_hpc.orchestration.submitit_launch import launch_sweep

    exe = str(Path(sys.executable).parent / "astrom3")
    root = tmp_path / "sw"
    subprocess.run([exe, "sweep", "create", str(root), "--seeds", "42", "--modes", "meta", "--subsets", "full,sub50",
                    "--inits", "scratch", "--store", str(tiny_store), "--set", "train.epochs=2",
                    "train.max_steps_per_epoch=2", "train.batch_size=16"],
                   check=True, env=child_env(), capture_output=True, text=True)
    sw = Sweep.load(root)
    first_run = sw.run_dir(sw.tasks[0]) / "metrics.json"
    launch = subprocess.Popen([exe, "launch", "sweep", str(root), "--cluster", "local", "--parallel", "1", "--wait"],
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (root / "jobs.json").exists() and launch.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (root / "jobs.json").exists(), "jobs.json not written while the launch runs"
        (sub,) = json.loads((root / "jobs.json").read_text())["submissions"]
        still_training = not first_run.exists()
        status = format_status(sweep_status(root))
        assert still_training and sub["finetune"][0]["tasks"] == [0] and len(sub["pids"]) == 1
        assert f"still queued/running: pid {sub['pids'][0]}" in status, status
        with pytest.raises(RuntimeError, match="under way|still queued or running"):
            launch_sweep(Sweep.load(root), cluster="local", parallel=1)
        out, _ = launch.communicate(timeout=300)
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
    assert launch.returncode == 0, out[-3000:]
    (sub,) = json.loads((root / "jobs.json").read_text())["submissions"]
    assert [a["tasks"] for a in sub["finetune"]] == [[0], [1]] and len(sub["pids"]) == 2
    assert all((sw.run_dir(t) / "metrics.json").exists() for t in sw.tasks)
