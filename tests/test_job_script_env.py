"""The rendezvous variables the sbatch job scripts hand to their ranks, run outside SLURM with a fake `srun` on
PATH that prints them (the variables a batch step would see are set by hand)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, script: str, args: list[str], ntasks: int) -> str:
    r = _script(tmp_path, script, args, ntasks)
    assert r.returncode == 0, r.stdout + r.stderr
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("RANK ENV")]
    return line


def _script(tmp_path: Path, script: str, args: list[str], ntasks: int) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    srun = bin_dir / "srun"
    srun.write_text('#!/bin/bash\necho "RANK ENV MASTER_PORT=${MASTER_PORT-unset} MASTER_ADDR=${MASTER_ADDR-unset}"\n')
    srun.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "ASTROM3_ROOT": str(REPO),
           "SLURM_JOB_ID": "77", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "0", "SLURM_NTASKS": str(ntasks),
           "MASTER_PORT": "29555", "MASTER_ADDR": "127.0.0.1"}
    env.pop("SLURM_JOB_NODELIST", None)
    return subprocess.run(["bash", str(REPO / "slurm" / script), *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)


def _args(tmp_path: Path, script: str) -> list[str]:
    sweep = tmp_path / "sw"
    sweep.mkdir(exist_ok=True)
    (sweep / "manifest.json").write_text("{}")  # the script only checks that it exists
    return ([f"SWEEP={sweep}"] if script == "finetune_array.sh" else
            ["CONFIG=", "STORE=", f"RUN_DIR={tmp_path / 'run'}"])


@pytest.mark.parametrize("script", ["finetune_array.sh", "pretrain.sh"])
def test_a_requeue_cap_that_is_not_a_number_is_refused_before_the_run(tmp_path, script):
    """Catches MAX_REQUEUES=20x failing only the test after the first preemption (`integer expression expected`),
    which then requeued the job without end."""
    r = _script(tmp_path, script, [*_args(tmp_path, script), "MAX_REQUEUES=20x"], ntasks=1)
    assert r.returncode == 2 and "MAX_REQUEUES=20x: expected a number" in r.stderr, r.stderr
    assert "RANK ENV" not in r.stdout  # nothing started


@pytest.mark.parametrize("script", ["finetune_array.sh", "pretrain.sh"])
def test_one_rank_steps_drop_an_inherited_master_port(tmp_path, script):
    """Catches MASTER_PORT exported in the submitting shell reaching every one-rank array task: distributed.env
    honoured it even at world size 1, so concurrent tasks on one node crashed with EADDRINUSE. A multi-rank step
    keeps it (docs/slurm.md: what is exported reaches the ranks)."""
    args = _args(tmp_path, script)
    assert _run(tmp_path, script, args, ntasks=1) == "RANK ENV MASTER_PORT=unset MASTER_ADDR=unset"
    assert _run(tmp_path, script, args, ntasks=2) == "RANK ENV MASTER_PORT=29555 MASTER_ADDR=127.0.0.1"
