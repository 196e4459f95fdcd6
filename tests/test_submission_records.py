"""What a sweep submission leaves in jobs.json and prints when it stops half-way or is only a dry run.

A fake ``sbatch`` on PATH (no SLURM needed) accepts the first N calls and refuses the rest, as a controller does
when a later job of the same submission is invalid (a bad array spec, a QOS limit).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from astrom3_hpc.orchestration.sbatch import submit_sweep_sbatch
from astrom3_hpc.orchestration.sweep import Sweep, make_tasks


def _sweep(root: Path, seeds=(42,), inits=("clip", "scratch")) -> Sweep:
    sw = Sweep(root, make_tasks(seeds=seeds, modes=("photo",), subsets=("full",), inits=inits))
    sw.save()
    return sw


def _fake_sbatch(tmp_path: Path, monkeypatch, accept: int, submitit_style: bool = False) -> Path:
    """An `sbatch` answering the first `accept` calls with job ids 10001, 10002, ... and failing after them; no
    `squeue`/`scontrol`, so nothing counts as still queued."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    count = tmp_path / "sbatch_count"
    answer = 'echo "Submitted batch job 1000$n"' if submitit_style else 'echo "1000$n"'
    script = bin_dir / "sbatch"
    script.write_text(f"""#!/bin/bash
n=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}
if [ $n -gt {accept} ]; then echo "sbatch: error: Batch job submission failed: QOSMaxSubmitJobPerUserLimit" >&2
  exit 1; fi
{answer}
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return count


def _recorded(sw: Sweep) -> dict:
    return json.loads((sw.root / "jobs.json").read_text())


def test_sbatch_failing_after_a_pretraining_records_the_submitted_job(tmp_path, monkeypatch):
    """Catches a failed array submission that forgets the pretraining job already submitted before it: jobs.json
    did not list it, the error did not name it, and a retry submitted a second pretraining into pretrain/s42."""
    sw = _sweep(tmp_path / "sw")
    _fake_sbatch(tmp_path, monkeypatch, accept=1)
    with pytest.raises(RuntimeError) as e:
        submit_sweep_sbatch(sw)
    msg = str(e.value)
    assert "QOSMaxSubmitJobPerUserLimit" in msg and "pretraining seed 42: job 10001" in msg
    assert str(sw.root / "jobs.json") in msg
    data = _recorded(sw)
    assert data["job_ids"] == ["10001"]
    (sub,) = data["submissions"]
    assert [p["job_id"] for p in sub["pretrain"]] == ["10001"] and sub["finetune"] == []
    assert "QOSMaxSubmitJobPerUserLimit" in sub["error"]


def test_submitit_failing_after_the_first_seed_records_its_jobs(tmp_path, monkeypatch):
    """The same for the Submitit back end: seed 0's pretraining and array were submitted, seed 42's pretraining
    was refused; jobs.json names the two jobs that will run."""
    pytest.importorskip("submitit")
    from astrom3_hpc.orchestration.submitit_launch import launch_sweep

    sw = _sweep(tmp_path / "sw", seeds=(0, 42))
    _fake_sbatch(tmp_path, monkeypatch, accept=2, submitit_style=True)
    with pytest.raises(RuntimeError) as e:
        launch_sweep(sw, cluster="slurm")
    msg = str(e.value)
    assert "pretraining seed 0: job 10001" in msg and "fine-tuning seed 0: array 10002" in msg
    data = _recorded(sw)
    assert data["job_ids"] == ["10001", "10002"]
    (sub,) = data["submissions"]
    assert [p["seed"] for p in sub["pretrain"]] == [0] and [a["seed"] for a in sub["finetune"]] == [0]
    assert sub["error"].startswith("stopped by:")
