"""How the suite reads its launch environment where launchers nest: mpirun or torchrun inside SLURM, hand-set
RANK under srun, typed GPU requests and output paths with spaces in the sbatch scripts. Pure functions with the
variables set by hand; the scripts run outside SLURM with stub `srun`/`scontrol` on PATH."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from astrom3_hpc.distributed.env import detect
from astrom3_hpc.train.engine import cpu_threads

REPO = Path(__file__).resolve().parents[1]


def d(env):
    return detect(env, use_scontrol=False, use_mpi4py=False)


# ------------------------------------------------------------------------------- mpirun inside a SLURM job
# mpirun starts its per-node daemons as one srun step of one task per node: every rank on a node inherits that
# daemon's SLURM_PROCID/SLURM_STEP_NUM_TASKS. Here both ranks of `mpirun -n 2` run on the first of two nodes.
DAEMON_STEP = {"SLURM_JOB_ID": "888", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
               "SLURM_NODEID": "0", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2",
               "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "SLURM_STEP_NODELIST": "node[01-02]", "MASTER_PORT": "6000"}


@pytest.mark.parametrize("flavour", ["hydra", "openmpi"])
def test_mpirun_inside_a_multi_node_job_is_mpi_on_every_rank(flavour):
    """Catches rank 0 (MPI rank/size equal to the daemon step's by chance) choosing `slurm` while rank 1 chose
    `mpi` and waited for rank 0 in an mpi4py broadcast: the job hung."""
    launchers = set()
    for rank in (0, 1):
        if flavour == "hydra":
            mpi = {"PMI_RANK": str(rank), "PMI_SIZE": "2", "MPI_LOCALRANKID": str(rank), "MPI_LOCALNRANKS": "2"}
        else:
            mpi = {"OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_SIZE": "2",
                   "OMPI_COMM_WORLD_LOCAL_RANK": str(rank), "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
        e = d({**DAEMON_STEP, **mpi})
        assert (e.rank, e.world_size, e.local_rank, e.local_world_size) == (rank, 2, rank, 2)
        launchers.add(e.launcher)
    assert launchers == {"mpi"}


def test_mpirun_with_one_rank_per_node_is_mpi_even_where_every_value_agrees():
    # Rank 0 on node 0 and rank 1 on node 1: rank, size, local rank and local size all equal the daemons'.
    for rank in (0, 1):
        env = {**DAEMON_STEP, "SLURM_PROCID": str(rank), "SLURM_NODEID": str(rank), "PMI_RANK": str(rank),
               "PMI_SIZE": "2", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "1"}
        assert d(env).launcher == "mpi"


def test_srun_with_a_pmi_plugin_stays_slurm():
    # srun --mpi=pmi2 sets PMI_RANK/PMI_SIZE (equal to the step's) but no node-local MPI values.
    for rank, node in ((0, 0), (1, 1)):
        env = {**DAEMON_STEP, "SLURM_PROCID": str(rank), "SLURM_NODEID": str(node), "PMI_RANK": str(rank),
               "PMI_SIZE": "2", "PMI_FD": "5"}
        e = d(env)
        assert (e.launcher, e.rank, e.local_world_size) == ("slurm", rank, 1)


# ------------------------------------------------------------------------ hand-set RANK/WORLD_SIZE under srun
STEP_2X2 = {"SLURM_JOB_ID": "5151", "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": "node[01-02]",
            "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_STEP_NUM_TASKS": "4", "SLURM_NTASKS": "4",
            "SLURM_STEP_NUM_NODES": "2"}


@pytest.mark.parametrize("procid, node, local", [(0, 0, 0), (1, 0, 1), (3, 1, 1)])
def test_hand_set_rank_under_srun_takes_the_local_world_from_the_step(procid, node, local):
    """Catches `srun -N2 -n4 bash -c 'RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS python ...'` getting a local world
    of 4: init() saw one host and bound gloo to loopback on the master, and thread counts halved."""
    srun = dict(STEP_2X2, SLURM_PROCID=str(procid), SLURM_NODEID=str(node), SLURM_LOCALID=str(local))
    e = d(dict(srun, RANK=str(procid), WORLD_SIZE="4"))
    assert (e.launcher, e.local_rank, e.local_world_size) == ("env", local, 2)
    assert e.local_world_size < e.world_size  # what init() passes to gloo_socket_ifname as multi_host


def test_hand_set_rank_under_mpiexec_takes_the_local_world_from_mpi():
    env = {"RANK": "3", "WORLD_SIZE": "4", "MASTER_ADDR": "node01", "MASTER_PORT": "6000", "PMI_RANK": "3",
           "PMI_SIZE": "4", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}
    e = d(env)
    assert (e.local_rank, e.local_world_size) == (1, 2)


def test_hand_set_rank_that_is_not_the_steps_keeps_the_world_as_local_world():
    # Two processes started by hand inside one srun task: the step says nothing about them.
    env = dict(STEP_2X2, SLURM_PROCID="0", SLURM_NODEID="0", SLURM_LOCALID="0", SLURM_STEP_NUM_TASKS="1",
               SLURM_NTASKS="1", SLURM_STEP_TASKS_PER_NODE="1", SLURM_STEP_NUM_NODES="1", RANK="1",
               WORLD_SIZE="2", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="6000")
    assert d(env).local_world_size == 2


# ------------------------------------------------------------------- threads of ranks sharing one SLURM task
_SLURM_CPU_VARS = ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE",
                   "SLURM_NODEID")


def _slurm_cpus(monkeypatch, affinity: int, **env: str) -> None:
    for k in _SLURM_CPU_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)))
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_torchrun_in_one_srun_task_divides_its_cpus_among_the_ranks(monkeypatch):
    """Catches `srun -n1 -c2 torchrun --nproc_per_node 2` giving each rank both CPUs of the task (4 threads on 2
    cores): SLURM_CPUS_PER_TASK describes the task that holds all the workers."""
    _slurm_cpus(monkeypatch, 2, SLURM_CPUS_PER_TASK="2", SLURM_CPUS_ON_NODE="2", SLURM_STEP_TASKS_PER_NODE="1",
                SLURM_TASKS_PER_NODE="1", SLURM_NODEID="0")
    assert cpu_threads(0, 2) == 1
    assert cpu_threads(3, 2) == 3  # a number given is kept


def test_torchrun_or_mpiexec_in_a_one_task_batch_script_divides_its_cpus(monkeypatch):
    # sbatch -n1 -c8, then torchrun/mpiexec with 2 ranks in the batch script (no step: the job's tasks per node).
    _slurm_cpus(monkeypatch, 8, SLURM_CPUS_PER_TASK="8", SLURM_CPUS_ON_NODE="8", SLURM_TASKS_PER_NODE="1",
                SLURM_NODEID="0")
    assert cpu_threads(0, 2) == 4
    assert cpu_threads(0, 3) == 2  # 8 CPUs, 3 ranks: no more threads than cores


def test_srun_ranks_keep_their_own_tasks_cpus(monkeypatch):
    # srun -N2 --ntasks-per-node 2 -c4 (bound): each rank is its own task, on its second node here.
    _slurm_cpus(monkeypatch, 4, SLURM_CPUS_PER_TASK="4", SLURM_CPUS_ON_NODE="8", SLURM_STEP_TASKS_PER_NODE="2(x2)",
                SLURM_TASKS_PER_NODE="2(x2)", SLURM_NODEID="1")
    assert cpu_threads(0, 2) == 4
    assert cpu_threads(0, 1) == 4  # a sweep's one-rank task, or store_cache's workers


# ----------------------------------------------------------------------------------------- the sbatch scripts
def _run_script(tmp_path: Path, script: str, args: list[str], **env: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text('#!/bin/bash\nprintf "SRUN ARGV:"; printf " [%s]" "$@"; echo\n')
    (bin_dir / "scontrol").write_text(
        '#!/bin/bash\n'
        'case "$1 $2" in\n'
        '  "show job") printf "JobId=%s JobName=x\\n   StdErr=%s\\n   StdIn=/dev/null\\n   StdOut=%s\\n   Power=\\n"'
        ' "$3" "$FAKE_STDOUT" "$FAKE_STDOUT" ;;\n'
        'esac\n')
    for stub in ("srun", "scontrol"):
        (bin_dir / stub).chmod(0o755)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("SLURM_") and k not in ("GPUS", "MASTER_PORT", "MASTER_ADDR")}
    full = {**base, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "ASTROM3_ROOT": str(REPO),
            "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "FAKE_STDOUT": str(tmp_path / "no such file"), **env}
    if script == "finetune_array.sh":
        full.update(SLURM_ARRAY_JOB_ID="4242", SLURM_ARRAY_TASK_ID="0")
    return subprocess.run(["bash", str(REPO / "slurm" / script), *args], env=full, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)


def _script_args(tmp_path: Path, script: str) -> list[str]:
    if script == "finetune_array.sh":
        sweep = tmp_path / "sw"
        sweep.mkdir(exist_ok=True)
        (sweep / "manifest.json").write_text("{}")  # the script only checks that it exists
        return [f"SWEEP={sweep}"]
    return ["CONFIG=", "STORE=", f"RUN_DIR={tmp_path / 'run'}"]


def _srun_argv(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, r.stdout + r.stderr
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("SRUN ARGV:")]
    return line


@pytest.mark.parametrize("script", ["finetune_array.sh", "pretrain.sh"])
def test_a_typed_gpu_request_gives_its_count_to_srun(tmp_path, script):
    """Catches `sbatch --gpus-per-task=a100:1` (SLURM_GPUS_PER_TASK=a100:1) stopping the script with `expected a
    number of GPUs per task` before the run."""
    r = _run_script(tmp_path, script, _script_args(tmp_path, script), SLURM_GPUS_PER_TASK="a100:1",
                    SLURM_GPUS_ON_NODE="1", SLURM_JOB_GPUS="0")
    assert "[--gpus-per-task] [1]" in _srun_argv(r)


@pytest.mark.parametrize("script", ["finetune_array.sh", "pretrain.sh"])
def test_a_gpus_setting_given_by_hand_must_still_be_a_number(tmp_path, script):
    r = _run_script(tmp_path, script, [*_script_args(tmp_path, script), "GPUS=a100:1"],
                    SLURM_GPUS_PER_TASK="a100:1", SLURM_GPUS_ON_NODE="1")
    assert r.returncode == 2 and "GPUS=a100:1: expected a number" in r.stderr, r.stderr
    assert "SRUN ARGV" not in r.stdout


def test_pretrain_links_a_job_output_whose_path_holds_spaces(tmp_path):
    """Catches StdOut split at its spaces: no slurm-<job>.out link and a truncated log= in slurm_job.log."""
    out = tmp_path / "my root" / "job out.txt"
    out.parent.mkdir()
    out.write_text("batch output\n")
    run_dir = tmp_path / "run a"
    r = _run_script(tmp_path, "pretrain.sh", ["CONFIG=", "STORE=", f"RUN_DIR={run_dir}"], FAKE_STDOUT=str(out))
    _srun_argv(r)
    link = run_dir / "slurm-4242.out"
    assert link.is_symlink() and Path(os.readlink(link)) == out
    assert f"log={out}\n" in (run_dir / "slurm_job.log").read_text()
