"""Submitit job functions: what runs inside a Submitit job, on every task of it.

Submitit pickles the job object by module path, so these classes must stay importable from here (a job queued
before an upgrade unpickles them by this name). Preemption: SIGUSR1/SIGTERM (and Submitit's USR2) set a flag;
the Trainer checkpoints on every rank at the next step boundary and returns EXIT_PREEMPTED (75); the job
function then hands over to Submitit's requeue (``checkpoint()`` resubmits the same call, which resumes from
the run directory).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any, Sequence

from ..core.errors import EXIT_PREEMPTED
from ..distributed.network import rendezvous_address
from .sweep import Sweep, run_missing_task

log = logging.getLogger("astrom3")


def _job_environment():
    import submitit

    return submitit.JobEnvironment()


def _export_torch_env(env) -> None:
    """Rank variables for every task of a Submitit job (RANK/WORLD_SIZE/LOCAL_*/MASTER_*), the master address made
    reachable, and the launcher name for run.json."""
    from submitit.helpers import TorchDistributedEnvironment

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
        os.environ.pop(k, None)  # stale values inherited from the submitting shell
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    if env.num_nodes > 1 and os.environ.get("GLOO_SOCKET_IFNAME") == "lo":
        log.warning("GLOO_SOCKET_IFNAME=lo inherited in a %d-node job: unset (chosen per host)", env.num_nodes)
        os.environ.pop("GLOO_SOCKET_IFNAME")
    if env.num_tasks > 1:
        os.environ["MASTER_ADDR"] = rendezvous_address(os.environ["MASTER_ADDR"])
    else:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        # Submitit derives a port from the job id; a one-task job needs no agreed port, and distributed.env.init takes
        # a free one when none is set (concurrent array tasks on a node could otherwise collide).
        os.environ.pop("MASTER_PORT", None)
    os.environ["ASTROM3_DIST_LAUNCHER"] = "submitit"
    os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("SLURM_CPUS_PER_TASK", "1"))


def _finish_job(rc: int, env, what: str) -> None:
    """After the Trainer returned: on EXIT_PREEMPTED hand over to Submitit's requeue (rank 0 raises Submitit's
    preemption signal, whose handler - restored by the Trainer - calls our checkpoint(), requeues and exits);
    other ranks leave without a result so Submitit waits for the requeued run. Other non-zero codes raise."""
    if rc == 0:
        return
    if rc == EXIT_PREEMPTED:
        cluster = getattr(env, "cluster", "")
        if cluster in ("slurm", "local"):
            if env.global_rank != 0:
                log.warning("%s: preempted, checkpoint written; rank %d leaves, rank 0 requeues", what,
                            env.global_rank)
                raise SystemExit(0)
            # A training task has written its checkpoint; a baseline task has stopped with nothing written.
            log.warning("%s: preempted (exit 75); requeueing through Submitit", what)
            signal.raise_signal(env._usr_sig())
            # Submitit's handler exits (requeued) or raises UncompletedJobError (no requeue left); if another
            # handler was installed, fall through.
        raise RuntimeError(f"{what}: preempted (exit {rc}); submit it again to resume (or, a baseline, to rerun)")
    # The debug executor writes no job log: the error went to the launching console, just above.
    where = "its error is printed above" if getattr(env, "cluster", "") == "debug" else "see this job's log"
    raise RuntimeError(f"{what}: exited with code {rc} ({where})")


def _base_checkpointable():
    try:
        from submitit.helpers import Checkpointable
    except ImportError:  # pragma: no cover - submitit is a dependency
        Checkpointable = object  # type: ignore[misc,assignment]
    return Checkpointable


def _rank_info(env) -> dict[str, Any]:
    """What this rank ran as: host, ranks, and the rendezvous (MASTER_*, the GLOO_SOCKET_IFNAME distributed.env
    chose)."""
    return {"rank": env.global_rank, "local_rank": env.local_rank, "node": env.node, "host": socket.gethostname(),
            "master_addr": os.environ.get("MASTER_ADDR"), "master_port": os.environ.get("MASTER_PORT"),
            "gloo_ifname": os.environ.get("GLOO_SOCKET_IFNAME")}


class PretrainJob(_base_checkpointable()):  # type: ignore[misc]
    """Submitit job function: ``astrom3 pretrain --run-dir RUN_DIR [--config CONFIG] [--set SETS]`` on every
    task of the job (one rank per task), through the library calls the command makes (train.jobs, train.command).

    Checkpointable: when preempted it resubmits itself with the same arguments; the rerun resumes from the run
    directory's checkpoint."""

    def __call__(self, run_dir: str, config: str | None = None, sets: Sequence[str] = (),
                 stop_after_steps: int | None = None) -> dict[str, Any] | None:
        from ..train.command import run_command
        from ..train.jobs import pretrain_config, run_pretrain

        env = _job_environment()
        _export_torch_env(env)
        log.info("pretraining in %s as rank %d of %d (restart %s)", run_dir, env.global_rank, env.num_tasks,
                 os.environ.get("SLURM_RESTART_COUNT", "0"))
        rc = run_command("pretrain", lambda: run_pretrain(pretrain_config(config, sets), run_dir,
                                                          stop_after_steps=stop_after_steps),
                         fail_fast=True)
        _finish_job(rc, env, f"pretraining {run_dir}")
        out = _rank_info(env)
        metrics = Path(run_dir) / "metrics.json"
        if env.global_rank == 0 and metrics.exists():
            m = json.loads(metrics.read_text(encoding="utf-8"))
            out.update(run_dir=str(run_dir), steps=m.get("steps"), world_size=m.get("world_size"))
        return out

    def checkpoint(self, *args: Any, **kwargs: Any):
        log.warning("Submitit checkpoint: resubmitting %s (it resumes from its run directory)", type(self).__name__)
        return super().checkpoint(*args, **kwargs)


class SweepTaskJob(_base_checkpointable()):  # type: ignore[misc]
    """Submitit job function: task ``index`` of the sweep in ``sweep_dir`` (orchestration.sweep.run_missing_task)."""

    def __call__(self, sweep_dir: str, index: int) -> dict[str, Any] | None:
        env = _job_environment()
        _export_torch_env(env)
        sw = Sweep.load(sweep_dir)
        task = sw.tasks[index]
        log.info("sweep task %d (%s) as Submitit job %s", index, task.name, env.job_id)
        rc = run_missing_task(sw, index)
        _finish_job(rc, env, f"sweep task {index} ({task.name})")
        if env.global_rank == 0:
            m = json.loads((sw.run_dir(task) / "metrics.json").read_text(encoding="utf-8"))
            return {"index": index, "run_dir": task.run_dir, "test_accuracy": m.get("test_accuracy")}
        return None

    def checkpoint(self, *args: Any, **kwargs: Any):
        log.warning("Submitit checkpoint: resubmitting sweep task %s", args[1:2] or kwargs.get("index"))
        return super().checkpoint(*args, **kwargs)
