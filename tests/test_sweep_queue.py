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
