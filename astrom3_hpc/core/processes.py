"""Independent pieces of CPU work spread over worker processes, each on one thread.

The workers are joblib's loky processes: started fresh, never forked from a process that holds torch's thread pool
or a process group, and, unlike multiprocessing's spawn, they do not re-import the caller's __main__ (a script read
from stdin breaks spawn). They are shut down when the work is done, so no idle worker holds memory through the
training that follows.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable, Sequence

from .signals import JOB_SIGNALS

# One BLAS/OpenMP thread per worker: the workers already fill the cores, and a result must not depend on how many
# threads a library picked.
SINGLE_THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a SLURM task's own cores where SLURM binds tasks)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def allotted_cores(local_tasks: int = 1, slurm_tasks: int | None = None) -> int:
    """The cores each of `local_tasks` processes of a job on this node should use: under SLURM, what it allotted
    (--cpus-per-task, else the job's CPUs on this node shared by the tasks), never more than the CPU affinity;
    elsewhere the affinity shared by the tasks. A cluster that does not bind tasks to cores (TaskPlugin=task/none)
    leaves every task the whole node's affinity: a 1-CPU array task then ran two OpenMP threads beside another
    task's two on two cores, and a 4 s fit took 40 s.

    `slurm_tasks`: SLURM's tasks on this node (of the step, else of the job). More processes than that share
    SLURM's tasks (torchrun or mpiexec started in one task, `srun -n1 -c2 torchrun --nproc_per_node 2`), and
    --cpus-per-task is then split among them: each took all of the task's CPUs, two threads per core."""
    cores, tasks = usable_cores(), max(1, local_tasks)
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "")
    on_node = os.environ.get("SLURM_CPUS_ON_NODE", "")
    if per_task.isdigit() and int(per_task) > 0:
        sharing = -(-tasks // slurm_tasks) if slurm_tasks and slurm_tasks > 0 else 1
        return max(1, min(cores, int(per_task)) // sharing)
    if on_node.isdigit() and int(on_node) > 0:
        return max(1, min(cores, int(on_node) // tasks))
    return max(1, cores // tasks)


def map_in_processes(fn: Callable[..., Any], args: Sequence[tuple], workers: int,
                     on_done: Callable[[int], None] | None = None) -> list:
    """[fn(*a) for a in args], in up to `workers` processes (in this one when workers <= 1 or there is one piece);
    `on_done(i)` is called in this process as each piece i finishes. `fn` and its arguments must pickle."""
    if workers <= 1 or len(args) <= 1:
        out = []
        for i, a in enumerate(args):
            out.append(fn(*a))
            if on_done is not None:
                on_done(i)
        return out
    from concurrent.futures import as_completed

    from joblib.externals.loky import get_reusable_executor

    executor = get_reusable_executor(max_workers=min(workers, len(args)), env=SINGLE_THREAD_ENV,
                                     initializer=_leave_signals_to_the_job)
    futures = {executor.submit(fn, *a): i for i, a in enumerate(args)}
    try:
        for f in as_completed(futures):
            f.result()  # the first failure ends the map with the worker's exception
            if on_done is not None:
                on_done(futures[f])
    except BaseException:
        # The results are lost either way: a stop (a job signal, Ctrl-C) or a failure ends the pieces still running
        # rather than waiting for them.
        for f in futures:
            f.cancel()
        executor.shutdown(wait=True, kill_workers=True)
        raise
    executor.shutdown(wait=True)
    return [f.result() for f in futures]


def _leave_signals_to_the_job() -> None:
    # SLURM signals every process of a job step. The job's own process turns a signal into a checkpoint or a stop
    # and exit code 75 (core/signals.py); a worker killed by one would instead end the job with a broken pool, and
    # a failure where a requeue was due.
    for s in JOB_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
