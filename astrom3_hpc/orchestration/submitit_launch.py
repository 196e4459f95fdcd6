"""The Submitit back end: :func:`launch_pretrain` (one multi-task Submitit job running
:class:`~astrom3_hpc.orchestration.submitit_jobs.PretrainJob`) and :func:`launch_sweep` (per seed a pretraining
job and one ``map_array`` of :class:`~astrom3_hpc.orchestration.submitit_jobs.SweepTaskJob` depending on it).
Submitit's own files go to ``<sweep>/submitit/``; ``<sweep>/logs/`` gets symlinks named like the sbatch logs
(``ft_<array job>_<task index>.out``; Submitit numbers array tasks by position, not by task index).
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from .submission import (SUBMITIT_DIR, abs_path, array_spec, check_not_running, combine_dependency, default_cluster,
                         plan, record_submission, reraise_partial, submitting)
from .submitit_jobs import PretrainJob, SweepTaskJob
from .sweep import Sweep

log = logging.getLogger("astrom3")


def make_executor(folder: str | Path, cluster: str | None = None, *, name: str = "astrom3", nodes: int = 1,
                  tasks_per_node: int = 1, cpus_per_task: int = 1, timeout_min: int = 240,
                  partition: str | None = None, account: str | None = None, dependency: str | None = None,
                  array_parallelism: int | None = None, gpus_per_node: int | None = None,
                  slurm_parameters: dict[str, Any] | None = None, setup: Sequence[str] = (),
                  max_num_timeout: int = 20):
    """A Submitit executor for ``cluster`` ("slurm", "local", "debug"; None: :func:`default_cluster`) with the
    suite's defaults: requeueable, Submitit's preemption signal 90 s before the limit, the interpreter's bin dir
    first on PATH in the job (its ninja matches DeepSpeed's JIT cache), OMP threads = cpus per task."""
    import submitit

    cluster = cluster or default_cluster()
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster, slurm_max_num_timeout=max_num_timeout)
    params: dict[str, Any] = dict(name=name, nodes=nodes, tasks_per_node=tasks_per_node, cpus_per_task=cpus_per_task,
                                  timeout_min=timeout_min)
    if gpus_per_node:
        params["gpus_per_node"] = gpus_per_node
    if cluster == "slurm":
        extra: dict[str, Any] = {"requeue": True}
        if account:
            extra["account"] = account
        user = dict(slurm_parameters or {})
        # A --sbatch-arg=--dependency joins ours (an array's afterok on its pretraining) instead of replacing it,
        # as in the sbatch back end: CLIP tasks must not start before their weights exist.
        combined = combine_dependency(dependency, user_dependency(user, pop=True))
        if combined:
            extra["dependency"] = combined
        if dependency:
            extra["kill-on-invalid-dep"] = "yes"
        extra.update(user)
        bin_dir = str(Path(sys.executable).parent)
        params.update(slurm_signal_delay_s=90, slurm_additional_parameters=extra,
                      slurm_setup=[f"export PATH={shlex.quote(bin_dir)}:$PATH",
                                   f"export OMP_NUM_THREADS={cpus_per_task}", *setup])
        if partition:
            params["slurm_partition"] = partition
        if array_parallelism:
            params["slurm_array_parallelism"] = array_parallelism
    ex.update_parameters(**params)
    return ex


def user_dependency(slurm_parameters: dict[str, Any] | None, pop: bool = False) -> str | None:
    """The ``--dependency`` (or ``-d``) among ``--sbatch-arg`` values turned into Submitit parameters."""
    params = slurm_parameters if slurm_parameters is not None else {}
    found = None
    for k in ("d", "dependency"):  # the long form wins where both are given
        if k in params:
            found = params.pop(k) if pop else params[k]
    return str(found) if found not in (None, True) else None


def launch_pretrain(run_dir: str | Path, config: str | None = None, sets: Sequence[str] = (), *,
                    stop_after_steps: int | None = None, nodes: int = 1, tasks_per_node: int = 2,
                    cpus_per_task: int = 1, cluster: str | None = None, folder: str | Path | None = None,
                    timeout_min: int = 240, partition: str | None = None, account: str | None = None,
                    gpus_per_node: int | None = None, dependency: str | None = None, name: str = "a3-pretrain",
                    slurm_parameters: dict[str, Any] | None = None):
    """Submit ``astrom3 pretrain`` as one Submitit job of ``nodes`` x ``tasks_per_node`` tasks (one rank per task).
    Returns the Submitit job (``job.results()`` waits: one dict per rank - host, ranks, MASTER_ADDR/PORT, the gloo
    interface - and rank 0's also holds run_dir, steps, world_size)."""
    from ..train.jobs import pretrain_config

    pretrain_config(config, sets)  # a bad key or value is refused now, not after the job waited in the queue
    run_dir = Path(run_dir).resolve()
    return _submit_pretrain(str(run_dir), abs_path(config), list(sets), folder or run_dir.parent / SUBMITIT_DIR,
                            cluster, stop_after_steps=stop_after_steps, nodes=nodes, tasks_per_node=tasks_per_node,
                            cpus_per_task=cpus_per_task, timeout_min=timeout_min, partition=partition,
                            account=account, gpus_per_node=gpus_per_node, dependency=dependency, name=name,
                            slurm_parameters=slurm_parameters)


def _submit_pretrain(run_dir: str, config: str | None, sets: list[str], folder, cluster, *,
                     stop_after_steps: int | None = None, **kw):
    ex = make_executor(folder, cluster, **kw)
    return ex.submit(PretrainJob(), run_dir, config, sets, stop_after_steps)


def _link(link: Path, target: Path) -> None:
    """Relative symlink link -> target (dangling until the job writes target)."""
    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(target, link.parent))
    except OSError as e:  # a file system without symlinks: the collector still finds run.json's ids
        log.warning("cannot link %s -> %s: %s", link, target, e)


def launch_sweep(sw: Sweep, *, cluster: str | None = None, resume_missing: bool = False, parallel: int = 4,
                 pretrain_nodes: int = 1, pretrain_tasks_per_node: int = 2, cpus_per_task: int = 1,
                 pretrain_time_min: int = 240, finetune_time_min: int = 120, partition: str | None = None,
                 account: str | None = None, gpus_per_node: int | None = None, force: bool = False,
                 slurm_parameters: dict[str, Any] | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Submit a sweep through Submitit: per seed a pretraining job (multi-task) and ONE job array (``map_array``)
    over the seed's tasks that depends on it (``afterok``). Local/debug executors have no dependencies: there the
    pretraining job is waited for before its array is submitted, and the local executor (which would start every
    job of an array at once) gets the seed's tasks in chunks of ``parallel``, each chunk waited for. Returns the
    submission record (also in jobs.json) with the Submitit job objects under ``"_jobs"``. ``dry_run``: print those
    jobs and arrays with their resources, submit and record nothing (the record returned has no job ids)."""
    cluster = cluster or default_cluster()
    sweep_root = Path(sw.root).resolve()
    if dry_run:
        return print_plan(sw, cluster, resume_missing, parallel=parallel, pretrain_nodes=pretrain_nodes,
                          pretrain_tasks_per_node=pretrain_tasks_per_node, cpus_per_task=cpus_per_task,
                          pretrain_time_min=pretrain_time_min, finetune_time_min=finetune_time_min,
                          partition=partition, account=account, gpus_per_node=gpus_per_node,
                          slurm_parameters=slurm_parameters)
    with submitting(sweep_root):
        return _launch_sweep(sw, sweep_root, cluster, resume_missing=resume_missing, parallel=parallel,
                             pretrain_nodes=pretrain_nodes, pretrain_tasks_per_node=pretrain_tasks_per_node,
                             cpus_per_task=cpus_per_task, pretrain_time_min=pretrain_time_min,
                             finetune_time_min=finetune_time_min, partition=partition, account=account,
                             gpus_per_node=gpus_per_node, force=force, slurm_parameters=slurm_parameters)


def _launch_sweep(sw: Sweep, sweep_root: Path, cluster: str, *, resume_missing: bool, parallel: int,
                  pretrain_nodes: int, pretrain_tasks_per_node: int, cpus_per_task: int, pretrain_time_min: int,
                  finetune_time_min: int, partition: str | None, account: str | None, gpus_per_node: int | None,
                  force: bool, slurm_parameters: dict[str, Any] | None) -> dict[str, Any]:
    """:func:`launch_sweep`'s submission, under the sweep's jobs lock."""
    check_not_running(sw, force)  # a local sweep's tasks may still run too (their ids are process ids)
    if cluster == "debug" and pretrain_nodes * pretrain_tasks_per_node > 1:
        # The debug executor runs a job once, in this process: one rank, whatever was asked (and its job has no
        # per-task sub-jobs, whose logs were linked for each rank: an IndexError before anything ran).
        log.warning("debug executor: pretraining runs in this process, on 1 rank (not %d x %d)", pretrain_nodes,
                    pretrain_tasks_per_node)
        pretrain_nodes = pretrain_tasks_per_node = 1
    folder = sweep_root / SUBMITIT_DIR
    (sweep_root / "logs").mkdir(parents=True, exist_ok=True)
    # "id": the entry is recorded after each job and rewritten by the next record (submission.record_submission).
    entry: dict[str, Any] = {"id": uuid.uuid4().hex, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                             "backend": "submitit", "cluster": cluster, "resume_missing": resume_missing,
                             "pretrain": [], "finetune": [], "skipped_pretrain": [],
                             "_jobs": {"pretrain": {}, "finetune": {}}}
    if cluster == "local":
        # Local job ids are process ids of this host, one per array task: what the duplicate guard and
        # `sweep status` check (submission.running_jobs), since squeue cannot see them.
        entry.update(host=socket.gethostname(), pids=[])
    seeds = plan(sw, resume_missing)
    if cluster == "slurm" and any(p["submit_pretrain"] for p in seeds.values()):
        # Refused before anything is submitted: a user dependency the arrays' afterok cannot be joined with.
        combine_dependency("afterok:<pretraining>", user_dependency(slurm_parameters))
    try:
        for seed, p in seeds.items():
            dep = None
            if p["submit_pretrain"]:
                job = _submit_pretrain(str(sw.pretrain_dir(seed).resolve()), sw.pretrain_config,
                                       sw.pretrain_overrides(seed), folder, cluster, name=f"a3-pretrain-s{seed}",
                                       nodes=pretrain_nodes, tasks_per_node=pretrain_tasks_per_node,
                                       cpus_per_task=cpus_per_task, timeout_min=pretrain_time_min, partition=partition,
                                       account=account, gpus_per_node=gpus_per_node, slurm_parameters=slurm_parameters)
                entry["_jobs"]["pretrain"][seed] = job
                if cluster == "local":
                    entry["pids"].append(str(job.job_id))
                ntasks = pretrain_nodes * pretrain_tasks_per_node
                for r in range(ntasks):
                    suffix = "" if r == 0 else f".rank{r}"
                    paths = job.paths if ntasks == 1 else job._sub_jobs[r].paths
                    _link(sweep_root / "logs" / f"pretrain-s{seed}-{job.job_id}{suffix}.out", paths.stdout)
                    _link(sweep_root / "logs" / f"pretrain-s{seed}-{job.job_id}{suffix}.err", paths.stderr)
                entry["pretrain"].append({"seed": seed, "job_id": str(job.job_id), "run_dir": f"pretrain/s{seed}",
                                          "nodes": pretrain_nodes, "tasks_per_node": pretrain_tasks_per_node,
                                          "log": f"logs/pretrain-s{seed}-{job.job_id}.out"})
                # Before any wait: the local executor's jobs run as soon as submitted, and a launch that recorded
                # them only at its end left the guard and `sweep status` blind to them meanwhile (a second launch
                # was accepted and trained every task again in the same run directories).
                _record(sweep_root, entry)
                if cluster == "slurm":
                    dep = f"afterok:{job.job_id}"
                else:
                    log.info("%s executor has no dependencies: waiting for pretraining of seed %d", cluster, seed)
                    job.results()
            elif p["needs_pretrain"]:
                entry["skipped_pretrain"].append(seed)
            ex = make_executor(folder, cluster, name=f"a3-ft-s{seed}", nodes=1, tasks_per_node=1,
                               cpus_per_task=cpus_per_task, timeout_min=finetune_time_min, partition=partition,
                               account=account, gpus_per_node=gpus_per_node, dependency=dep, array_parallelism=parallel,
                               slurm_parameters=slurm_parameters)
            dep_recorded = combine_dependency(dep, user_dependency(slurm_parameters)) if cluster == "slurm" else dep
            indices = list(p["tasks"])
            # Submitit's local executor starts every job of a map_array at once and knows no %P: there --parallel
            # is honoured by submitting chunks of `parallel` tasks, each once the previous chunk has ended.
            step = parallel if cluster == "local" and parallel and parallel > 0 else len(indices)
            entry["_jobs"]["finetune"][seed] = []
            for start in range(0, len(indices), step):
                if start:
                    log.info("local executor, --parallel %d: waiting for tasks %s of seed %d before the next ones",
                             step, array_spec(indices[start - step:start]), seed)
                    for j in entry["_jobs"]["finetune"][seed][-step:]:
                        j.wait()
                _submit_array(ex, sweep_root, seed, indices[start:start + step], dep_recorded, entry)
                _record(sweep_root, entry)
    except BaseException as e:  # Ctrl-C too (e.g. in the local executor's wait): see reraise_partial
        reraise_partial(sweep_root, {k: v for k, v in entry.items() if not k.startswith("_")}, e)
    _record(sweep_root, entry)  # also a submission of nothing (every task complete)
    return entry


def _record(sweep_root: Path, entry: dict[str, Any]) -> None:
    """Write ``entry`` (so far) to jobs.json, in place of what this submission recorded before."""
    record_submission(sweep_root, {k: v for k, v in entry.items() if not k.startswith("_")})


def job_exception(job) -> BaseException | None:
    """What a submitted job raised, None where it succeeded; waits for it. Submitit's debug executor runs a job
    when first asked, and its exception() runs it without the job's environment (SUBMITIT_DEBUG_JOB_ID, which
    only results() puts in place), so every task failed in submitit.JobEnvironment() without running. Its own
    results() puts the environment in place but opens pdb on a failure: the environment is set here instead."""
    environ = getattr(job, "environ", None) if type(job).__name__ == "DebugJob" else None
    if environ is None:
        return job.exception()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environ)
    try:
        return job.exception()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _submit_array(ex, sweep_root: Path, seed: int, indices: list[int], dep: str | None,
                  entry: dict[str, Any]) -> None:
    """One map_array of SweepTaskJob over ``indices``: log symlinks, the Submitit jobs in ``entry["_jobs"]`` and
    the record in ``entry["finetune"]``."""
    jobs = ex.map_array(SweepTaskJob(), [str(sweep_root)] * len(indices), indices)
    entry["_jobs"]["finetune"][seed].extend(jobs)
    if "pids" in entry:
        entry["pids"] += [str(j.job_id) for j in jobs]
    if entry["cluster"] == "debug":
        # The debug executor runs each task inside the launching process when it is waited for (--wait) and
        # writes no log file for it: links to Submitit's log paths dangled, and every array of it is "DEBUG", so
        # the next submission's links replaced them. The record gets an id of its own and says where output went.
        array_id = f"DEBUG-{entry['id'][:8]}-s{seed}"
        logs = "none written: the debug executor runs each task in the launching process, on its console"
    else:
        array_id = str(jobs[0].job_id).split("_")[0]
        for j, index in zip(jobs, indices):
            _link(sweep_root / "logs" / f"ft_{array_id}_{index}.out", j.paths.stdout)
            _link(sweep_root / "logs" / f"ft_{array_id}_{index}.err", j.paths.stderr)
        logs = f"logs/ft_{array_id}_<task>.out (symlinks into {SUBMITIT_DIR}/)"
    entry["finetune"].append({"seed": seed, "array_job_id": array_id, "tasks": indices,
                              "array_index_to_task": {str(k): i for k, i in enumerate(indices)},
                              "dependency": dep, "logs": logs})


def print_plan(sw: Sweep, cluster: str, resume_missing: bool, *, parallel: int, pretrain_nodes: int,
               pretrain_tasks_per_node: int, cpus_per_task: int, pretrain_time_min: int, finetune_time_min: int,
               partition: str | None, account: str | None, gpus_per_node: int | None,
               slurm_parameters: dict[str, Any] | None, stream=None) -> dict[str, Any]:
    """The dry run of :func:`launch_sweep`: one line per job or array it would submit, with its resources; nothing
    is submitted, waited for or written (a local executor would start training at once)."""
    out = stream or sys.stdout
    where = [f"partition {partition}" if partition else "", f"account {account}" if account else "",
             f"{gpus_per_node} GPU(s)/node" if gpus_per_node else ""]
    if cluster == "slurm" and slurm_parameters:
        where.append("sbatch " + " ".join(f"--{k}" if v is True else f"--{k}={v}"
                                          for k, v in slurm_parameters.items()))
    extra = "".join(f", {w}" for w in where if w)
    entry: dict[str, Any] = {"backend": "submitit", "cluster": cluster, "resume_missing": resume_missing,
                             "dry_run": True, "pretrain": [], "finetune": [], "skipped_pretrain": []}
    at_once = {"slurm": f"{parallel} at once",
               "local": f"{parallel} at once: chunks of {parallel}, each started when the previous one has ended",
               "debug": "one at a time, in this process, when waited for"}.get(cluster, f"{parallel} at once")
    print(f"dry run: Submitit, {cluster} executor, sweep {Path(sw.root).resolve()}; nothing is submitted", file=out)
    for seed, p in plan(sw, resume_missing).items():
        after = ""
        if p["submit_pretrain"]:
            print(f"+ pretraining seed {seed}: job a3-pretrain-s{seed}, {pretrain_nodes} node(s) x "
                  f"{pretrain_tasks_per_node} tasks, {cpus_per_task} CPU(s)/task, {pretrain_time_min} min{extra} "
                  f"-> {sw.pretrain_dir(seed).resolve()}", file=out)
            entry["pretrain"].append({"seed": seed, "job_id": None, "nodes": pretrain_nodes,
                                      "tasks_per_node": pretrain_tasks_per_node})
            after = (", afterok on that pretraining" if cluster == "slurm" else
                     f", after that pretraining ends (the {cluster} executor has no dependencies: it waits)")
        elif p["needs_pretrain"]:
            entry["skipped_pretrain"].append(seed)
            print(f"  pretraining seed {seed}: already complete, not resubmitted", file=out)
        print(f"+ fine-tuning seed {seed}: array a3-ft-s{seed} of {len(p['tasks'])} task(s) "
              f"{array_spec(p['tasks'])} ({at_once}), 1 task x {cpus_per_task} CPU(s), "
              f"{finetune_time_min} min{extra}{after}", file=out)
        entry["finetune"].append({"seed": seed, "array_job_id": None, "tasks": list(p["tasks"]),
                                  "array": array_spec(p["tasks"], parallel)})
    if not entry["finetune"]:
        print("nothing to submit: every task is complete", file=out)
    return entry
