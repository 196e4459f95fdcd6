"""Submitting the job suite to a scheduler: sbatch scripts or Submitit, one pretraining run or a whole sweep.

Two back ends share one sweep layout (astrom3_hpc.orchestration.sweep) and one bookkeeping file, ``<sweep>/jobs.json``:

* ``sbatch``: ``slurm/pretrain.sh`` per seed (``srun``, one process per rank) and ``slurm/finetune_array.sh`` as
  one array per seed, array task id = manifest task index, ``--dependency=afterok:<that seed's pretraining>``.
  Logs: ``<sweep>/logs/pretrain-s<seed>-<job>.out``, ``<sweep>/logs/ft_<array job>_<task index>.out/.err``.
* ``submitit``: :func:`launch_pretrain` (a multi-task Submitit job; inside, ``TorchDistributedEnvironment().export()``
  then the Trainer) and :func:`launch_sweep` (one ``map_array`` per seed depending on its pretraining job).
  Submitit's own files go to ``<sweep>/submitit/``; ``<sweep>/logs/`` gets symlinks named like the sbatch logs
  (``ft_<array job>_<task index>.out``; Submitit numbers array tasks by position, not by task index).

Preemption (both back ends): SIGUSR1/SIGTERM (and Submitit's USR2) set a flag; the Trainer checkpoints on every rank
at the next step boundary and exits with EXIT_PREEMPTED (75). The sbatch scripts then ``scontrol requeue`` the
job; a Submitit job function hands over to Submitit's requeue (its ``checkpoint()`` resubmits the same call, which
resumes from the run directory). See docs/slurm.md.

CLI (``add_parsers``): ``astrom3 sweep create|submit|status`` and ``astrom3 launch pretrain|sweep``; also
``python -m astrom3_hpc.orchestration.launch ...`` and ``slurm/submit_sweep.sh``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..core.atomic import write_json
from ..distributed.env import rendezvous_address
from ..core.constants import SPLIT_SEEDS, SUBSET_FACTORS
from .sweep import INITS, MANIFEST, MODES, Sweep, cell_hparams, make_tasks

log = logging.getLogger("astrom3")

JOBS_FILE = "jobs.json"
SUBMITIT_DIR = "submitit"
EXIT_PREEMPTED = 75  # = astrom3_hpc.train.preempt.EXIT_PREEMPTED (not imported: that pulls in torch)
_LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "LOCAL_SIZE", "ASTROM3_DIST_LAUNCHER",
                  "TORCHELASTIC_RUN_ID")


# ============================================================================================ helpers

def repo_root() -> Path:
    """The repository holding slurm/ and jobs/: $ASTROM3_ROOT, else the checkout this package lives in."""
    env = os.environ.get("ASTROM3_ROOT")
    cand = Path(env) if env else Path(__file__).resolve().parents[1]
    if not (cand / "slurm" / "pretrain.sh").exists():
        raise FileNotFoundError(f"{cand} has no slurm/pretrain.sh: set ASTROM3_ROOT to the astrom3-hpc checkout "
                                f"(the sbatch back end needs its scripts)")
    return cand


def _abs(p: str | os.PathLike | None) -> str | None:
    """Absolute path for paths that exist (configs, stores); anything else unchanged."""
    if p is None or p == "":
        return None
    q = Path(p).expanduser()
    return str(q.resolve()) if q.exists() else str(p)


def _split_list(values: Sequence[str] | None) -> list[str]:
    """["0,42", "66"] -> ["0", "42", "66"] (options accept commas and spaces)."""
    out: list[str] = []
    for v in values or []:
        out += [x for x in re.split(r"[,\s]+", str(v)) if x]
    return out


def array_spec(indices: Iterable[int], parallel: int | None = None) -> str:
    """Compact ``--array`` value: [0,1,2,3,7,9,10] -> "0-3,7,9-10" (+ "%P" when ``parallel``)."""
    idx = sorted(set(int(i) for i in indices))
    if not idx:
        raise ValueError("no array indices")
    parts, start, prev = [], idx[0], idx[0]
    for i in idx[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    spec = ",".join(parts)
    return f"{spec}%{parallel}" if parallel else spec


def slurm_available(timeout: float = 10.0) -> bool:
    """Whether a SLURM controller answers here (``scontrol ping``)."""
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    try:
        r = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0 and "UP" in r.stdout



def default_cluster() -> str:
    """"slurm" when a controller answers, else "local". (Submitit's AutoExecutor would pick SLURM whenever srun is
    on PATH, daemons or not: the suite always passes ``cluster=`` explicitly.)"""
    return "slurm" if slurm_available() else "local"


def _queued(job_ids: Iterable[str]) -> list[str]:
    """Those of ``job_ids`` (or their array tasks) the controller still lists as pending or running."""
    ids = sorted({str(j).split("_")[0] for j in job_ids if j})
    if not ids or shutil.which("squeue") is None:
        return []
    try:
        r = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if r.returncode != 0:
        return []
    return sorted({ln.split("_")[0].strip() for ln in r.stdout.splitlines() if ln.strip()})


# ============================================================================================ jobs.json

def read_jobs(sweep_root: str | Path) -> dict[str, Any]:
    p = Path(sweep_root) / JOBS_FILE
    if not p.exists():
        return {"sweep": str(Path(sweep_root).resolve()), "job_ids": [], "submissions": []}
    return json.loads(p.read_text())


def record_submission(sweep_root: str | Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Append one submission to ``<sweep>/jobs.json`` (atomically); ``job_ids`` lists every id ever submitted."""
    data = read_jobs(sweep_root)
    data.setdefault("submissions", []).append(entry)
    ids = list(data.get("job_ids", []))
    for j in entry.get("pretrain", []):
        ids.append(str(j["job_id"]))
    for a in entry.get("finetune", []):
        ids.append(str(a["array_job_id"]))
    data["job_ids"] = list(dict.fromkeys(ids))
    write_json(Path(sweep_root) / JOBS_FILE, data)
    return data


def _previous_job_ids(sweep_root: Path) -> list[str]:
    try:
        return [str(j) for j in read_jobs(sweep_root).get("job_ids", [])]
    except (OSError, json.JSONDecodeError):
        return []


# ============================================================================================ sweep manifest

def create_sweep(root: str | Path, *, seeds: Sequence[int] = SPLIT_SEEDS, modes: Sequence[str] = MODES,
                 subsets: Sequence[str] = tuple(SUBSET_FACTORS), inits: Sequence[str] = INITS,
                 finetune_config: str | None = None, pretrain_config: str | None = None, store: str | None = None,
                 sets: Sequence[str] = (), pretrain_sets: Sequence[str] = (), exist_ok: bool = False) -> Sweep:
    """Write ``<root>/manifest.json`` for the grid seeds x modes x subsets x inits (configs and store made absolute,
    so jobs find them from any working directory). An existing manifest is loaded when ``exist_ok``, else an error."""
    root = Path(root).resolve()
    if (root / MANIFEST).exists():
        if exist_ok:
            return Sweep.load(root)
        raise FileExistsError(f"{root / MANIFEST} exists: submit it as it is, or remove the sweep directory")
    tasks = make_tasks(seeds=tuple(int(s) for s in seeds), modes=tuple(modes), subsets=tuple(subsets),
                       inits=tuple(inits))
    sw = Sweep(root, tasks, finetune_config=_abs(finetune_config), pretrain_config=_abs(pretrain_config),
               store=_abs(store), sets=list(sets), pretrain_sets=list(pretrain_sets))
    # Resolve every task's config now: a bad key fails here, not in an array task hours later, and the manifest
    # records each task's per-cell values (configs/finetune_cells.yaml through the config's `cells:` key).
    for t in tasks:
        t.hparams = cell_hparams(sw.resolve_config(t).to_dict())
    sw.save()
    return sw


def _plan(sw: Sweep, resume_missing: bool) -> dict[int, dict[str, Any]]:
    """Per seed: the task indices to run and whether its pretraining must run first."""
    tasks = sw.missing() if resume_missing else list(sw.tasks)
    plan: dict[int, dict[str, Any]] = {}
    for t in tasks:
        plan.setdefault(t.seed, {"tasks": [], "needs_pretrain": False})
        plan[t.seed]["tasks"].append(t.index)
        if t.init == "clip":
            plan[t.seed]["needs_pretrain"] = True
    for seed, p in plan.items():
        p["pretrain_done"] = (sw.pretrain_dir(seed) / "metrics.json").exists()
        p["submit_pretrain"] = p["needs_pretrain"] and not p["pretrain_done"]
    return dict(sorted(plan.items()))


def _check_not_running(sw: Sweep, force: bool) -> None:
    busy = _queued(_previous_job_ids(sw.root))
    if busy and not force:
        raise RuntimeError(f"jobs {', '.join(busy)} of sweep {sw.root} are still queued or running: wait for them, "
                           f"scancel them, or pass --force (two jobs in one run directory corrupt it)")


# ============================================================================================ sbatch back end

def _sbatch(args: list[str], cwd: Path, env: dict[str, str], dry_run: bool) -> str:
    cmd = ["sbatch", "--parsable", *args]
    if dry_run:
        print("+ " + shlex.join(cmd))
        return "<job id>"
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"sbatch failed (rc {r.returncode}): {shlex.join(cmd)}\n{r.stderr.strip()}")
    line = [ln for ln in r.stdout.splitlines() if ln.strip()][0]
    return line.split(";")[0].strip()


def _common_sbatch(partition: str | None, account: str | None, extra: Sequence[str]) -> list[str]:
    out = []
    if partition:
        out.append(f"--partition={partition}")
    if account:
        out.append(f"--account={account}")
    return out + list(extra)


def submit_sweep_sbatch(sw: Sweep, *, resume_missing: bool = False, parallel: int = 4, pretrain_nodes: int = 1,
                        pretrain_tasks_per_node: int = 2, cpus_per_task: int = 1, pretrain_time_min: int = 240,
                        finetune_time_min: int = 120, partition: str | None = None, account: str | None = None,
                        sbatch_args: Sequence[str] = (), pretrain_sbatch_args: Sequence[str] = (),
                        finetune_sbatch_args: Sequence[str] = (), python: str | None = None,
                        dry_run: bool = False, force: bool = False) -> dict[str, Any]:
    """Submit a sweep with the sbatch scripts: per seed one ``slurm/pretrain.sh`` job (unless its pretraining is
    complete or no task of that seed starts from CLIP) and one ``slurm/finetune_array.sh`` array over the seed's
    task indices with ``afterok`` on that pretraining. Returns the submission record (also appended to jobs.json)."""
    root_repo = repo_root()
    sweep_root = Path(sw.root).resolve()
    if not dry_run:
        _check_not_running(sw, force)
    (sweep_root / "logs").mkdir(parents=True, exist_ok=True)
    python = python or sys.executable
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}
    env.update(ASTROM3_ROOT=str(root_repo), PYTHON=python)
    common = _common_sbatch(partition, account, sbatch_args)
    entry: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "backend": "sbatch", "cluster": "slurm",
                             "resume_missing": resume_missing, "pretrain": [], "finetune": [],
                             "skipped_pretrain": []}
    for seed, p in _plan(sw, resume_missing).items():
        dep = None
        if p["submit_pretrain"]:
            argv = sw.pretrain_argv(seed)[1:]  # without the "pretrain" subcommand
            i = argv.index("--run-dir")
            run_dir = str(Path(argv[i + 1]).resolve())
            del argv[i:i + 2]
            job = _sbatch([*common, f"--job-name=a3-pretrain-s{seed}", f"--nodes={pretrain_nodes}",
                           f"--ntasks-per-node={pretrain_tasks_per_node}", f"--cpus-per-task={cpus_per_task}",
                           f"--time={pretrain_time_min}", f"--output={sweep_root}/logs/pretrain-s{seed}-%j.out",
                           *pretrain_sbatch_args, str(root_repo / "slurm" / "pretrain.sh"), "CONFIG=", "STORE=",
                           "EXTRA_SETS=", f"RUN_DIR={run_dir}", f"PYTHON={python}", *argv],
                          root_repo, env, dry_run)
            dep = f"afterok:{job}"
            entry["pretrain"].append({"seed": seed, "job_id": job, "run_dir": f"pretrain/s{seed}",
                                      "nodes": pretrain_nodes, "tasks_per_node": pretrain_tasks_per_node,
                                      "log": f"logs/pretrain-s{seed}-{job}.out"})
        elif p["needs_pretrain"]:
            entry["skipped_pretrain"].append(seed)
        spec = array_spec(p["tasks"], parallel)
        args = [*common, f"--job-name=a3-ft-s{seed}", f"--array={spec}", "--ntasks=1",
                f"--cpus-per-task={cpus_per_task}", f"--time={finetune_time_min}",
                f"--output={sweep_root}/logs/ft_%A_%a.out", f"--error={sweep_root}/logs/ft_%A_%a.err"]
        if dep:
            args += [f"--dependency={dep}", "--kill-on-invalid-dep=yes"]
        job = _sbatch([*args, *finetune_sbatch_args, str(root_repo / "slurm" / "finetune_array.sh"),
                       f"SWEEP={sweep_root}", f"PYTHON={python}"], root_repo, env, dry_run)
        entry["finetune"].append({"seed": seed, "array_job_id": job, "array": spec, "tasks": p["tasks"],
                                  "dependency": dep, "logs": f"logs/ft_{job}_<task>.out"})
    if not dry_run:
        record_submission(sweep_root, entry)
    return entry


# ============================================================================================ Submitit back end

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
        # Submitit derives a port from the job id; a one-task job needs no agreed port, and dist.env.init takes
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
            log.warning("%s: preempted, checkpoint written; requeueing through Submitit", what)
            signal.raise_signal(env._usr_sig())
            # Submitit's handler exits (requeued) or raises UncompletedJobError (no requeue left); if another
            # handler was installed, fall through.
        raise RuntimeError(f"{what}: preempted (exit {rc}) after writing a checkpoint; submit it again to resume")
    raise RuntimeError(f"{what}: exited with code {rc} (see this job's log)")


def _base_checkpointable():
    try:
        from submitit.helpers import Checkpointable
    except ImportError:  # pragma: no cover - submitit is a dependency
        Checkpointable = object  # type: ignore[misc,assignment]
    return Checkpointable


def _rank_info(env) -> dict[str, Any]:
    """What this rank ran as: host, ranks, and the rendezvous (MASTER_*, the GLOO_SOCKET_IFNAME dist.env chose)."""
    return {"rank": env.global_rank, "local_rank": env.local_rank, "node": env.node, "host": socket.gethostname(),
            "master_addr": os.environ.get("MASTER_ADDR"), "master_port": os.environ.get("MASTER_PORT"),
            "gloo_ifname": os.environ.get("GLOO_SOCKET_IFNAME")}


class PretrainJob(_base_checkpointable()):  # type: ignore[misc]
    """Submitit job function: ``astrom3 pretrain ARGV`` on every task of the job (one rank per task).

    Checkpointable: when preempted it resubmits itself with the same arguments; the rerun resumes from the run
    directory's checkpoint."""

    def __call__(self, argv: Sequence[str]) -> dict[str, Any] | None:
        env = _job_environment()
        _export_torch_env(env)
        from ..cli import main

        run_dir = Path(argv[argv.index("--run-dir") + 1])
        log.info("pretraining in %s as rank %d of %d (restart %s)", run_dir, env.global_rank, env.num_tasks,
                 os.environ.get("SLURM_RESTART_COUNT", "0"))
        rc = main(["pretrain", *argv])
        _finish_job(rc, env, f"pretraining {run_dir}")
        out = _rank_info(env)
        if env.global_rank == 0 and (run_dir / "metrics.json").exists():
            m = json.loads((run_dir / "metrics.json").read_text())
            out.update(run_dir=str(run_dir), steps=m.get("steps"), world_size=m.get("world_size"))
        return out

    def checkpoint(self, *args: Any, **kwargs: Any):
        log.warning("Submitit checkpoint: resubmitting %s (it resumes from its run directory)", type(self).__name__)
        return super().checkpoint(*args, **kwargs)


class SweepTaskJob(_base_checkpointable()):  # type: ignore[misc]
    """Submitit job function: task ``index`` of the sweep in ``sweep_dir`` (astrom3_hpc.orchestration.sweep.run_task)."""

    def __call__(self, sweep_dir: str, index: int) -> dict[str, Any] | None:
        env = _job_environment()
        _export_torch_env(env)
        sw = Sweep.load(sweep_dir)
        task = sw.tasks[index]
        log.info("sweep task %d (%s) as Submitit job %s", index, task.name, env.job_id)
        rc = sweep_task_run(sw, index)
        _finish_job(rc, env, f"sweep task {index} ({task.name})")
        if env.global_rank == 0:
            m = json.loads((sw.run_dir(task) / "metrics.json").read_text())
            return {"index": index, "run_dir": task.run_dir, "test_accuracy": m.get("test_accuracy")}
        return None

    def checkpoint(self, *args: Any, **kwargs: Any):
        log.warning("Submitit checkpoint: resubmitting sweep task %s", args[1:2] or kwargs.get("index"))
        return super().checkpoint(*args, **kwargs)


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
        if dependency:
            extra["dependency"] = dependency
            extra["kill-on-invalid-dep"] = "yes"
        extra.update(slurm_parameters or {})
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


def launch_pretrain(run_dir: str | Path, config: str | None = None, sets: Sequence[str] = (), *,
                    extra_args: Sequence[str] = (), nodes: int = 1, tasks_per_node: int = 2, cpus_per_task: int = 1,
                    cluster: str | None = None, folder: str | Path | None = None, timeout_min: int = 240,
                    partition: str | None = None, account: str | None = None, gpus_per_node: int | None = None,
                    dependency: str | None = None, name: str = "a3-pretrain",
                    slurm_parameters: dict[str, Any] | None = None):
    """Submit ``astrom3 pretrain`` as one Submitit job of ``nodes`` x ``tasks_per_node`` tasks (one rank per task).
    Returns the Submitit job (``job.results()`` waits: one dict per rank - host, ranks, MASTER_ADDR/PORT, the gloo
    interface - and rank 0's also holds run_dir, steps, world_size)."""
    run_dir = Path(run_dir).resolve()
    argv = ["--run-dir", str(run_dir)]
    if config:
        argv += ["--config", _abs(config)]
    if sets:
        argv += ["--set", *sets]
    return _submit_pretrain_argv(argv + list(extra_args), folder or run_dir.parent / SUBMITIT_DIR, cluster,
                                 nodes=nodes, tasks_per_node=tasks_per_node, cpus_per_task=cpus_per_task,
                                 timeout_min=timeout_min, partition=partition, account=account,
                                 gpus_per_node=gpus_per_node, dependency=dependency, name=name,
                                 slurm_parameters=slurm_parameters)


def _submit_pretrain_argv(argv: list[str], folder, cluster, **kw):
    ex = make_executor(folder, cluster, **kw)
    return ex.submit(PretrainJob(), argv)


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
                 slurm_parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Submit a sweep through Submitit: per seed a pretraining job (multi-task) and ONE job array (``map_array``)
    over the seed's tasks that depends on it (``afterok``). Local/debug executors have no dependencies: there the
    pretraining job is waited for before its array is submitted. Returns the submission record (also in jobs.json)
    with the Submitit job objects under ``"_jobs"``."""
    cluster = cluster or default_cluster()
    sweep_root = Path(sw.root).resolve()
    if cluster == "slurm":
        _check_not_running(sw, force)
    folder = sweep_root / SUBMITIT_DIR
    (sweep_root / "logs").mkdir(parents=True, exist_ok=True)
    entry: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "backend": "submitit", "cluster": cluster,
                             "resume_missing": resume_missing, "pretrain": [], "finetune": [],
                             "skipped_pretrain": [], "_jobs": {"pretrain": {}, "finetune": {}}}
    for seed, p in _plan(sw, resume_missing).items():
        dep = None
        if p["submit_pretrain"]:
            argv = sw.pretrain_argv(seed)[1:]
            i = argv.index("--run-dir")
            argv[i + 1] = str(Path(argv[i + 1]).resolve())
            job = _submit_pretrain_argv(argv, folder, cluster, name=f"a3-pretrain-s{seed}", nodes=pretrain_nodes,
                                        tasks_per_node=pretrain_tasks_per_node, cpus_per_task=cpus_per_task,
                                        timeout_min=pretrain_time_min, partition=partition, account=account,
                                        gpus_per_node=gpus_per_node, slurm_parameters=slurm_parameters)
            entry["_jobs"]["pretrain"][seed] = job
            ntasks = pretrain_nodes * pretrain_tasks_per_node
            for r in range(ntasks):
                suffix = "" if r == 0 else f".rank{r}"
                paths = job.paths if ntasks == 1 else job._sub_jobs[r].paths
                _link(sweep_root / "logs" / f"pretrain-s{seed}-{job.job_id}{suffix}.out", paths.stdout)
                _link(sweep_root / "logs" / f"pretrain-s{seed}-{job.job_id}{suffix}.err", paths.stderr)
            entry["pretrain"].append({"seed": seed, "job_id": str(job.job_id), "run_dir": f"pretrain/s{seed}",
                                      "nodes": pretrain_nodes, "tasks_per_node": pretrain_tasks_per_node,
                                      "log": f"logs/pretrain-s{seed}-{job.job_id}.out"})
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
        indices = list(p["tasks"])
        jobs = ex.map_array(SweepTaskJob(), [str(sweep_root)] * len(indices), indices)
        entry["_jobs"]["finetune"][seed] = jobs
        array_id = str(jobs[0].job_id).split("_")[0]
        for j, index in zip(jobs, indices):
            _link(sweep_root / "logs" / f"ft_{array_id}_{index}.out", j.paths.stdout)
            _link(sweep_root / "logs" / f"ft_{array_id}_{index}.err", j.paths.stderr)
        entry["finetune"].append({"seed": seed, "array_job_id": array_id, "tasks": indices,
                                  "array_index_to_task": {str(k): i for k, i in enumerate(indices)},
                                  "dependency": dep, "logs": f"logs/ft_{array_id}_<task>.out (symlinks into "
                                                              f"{SUBMITIT_DIR}/)"})
    record_submission(sweep_root, {k: v for k, v in entry.items() if not k.startswith("_")})
    return entry


# ============================================================================================ status

def sweep_status(sweep_dir: str | Path) -> dict[str, Any]:
    """Tasks done/missing per seed, pretraining state, and the scheduler state of the sweep's jobs."""
    sw = Sweep.load(sweep_dir)
    seeds: dict[int, dict[str, Any]] = {}
    for t in sw.tasks:
        s = seeds.setdefault(t.seed, {"tasks": 0, "done": 0, "missing": []})
        s["tasks"] += 1
        if sw.done(t):
            s["done"] += 1
        else:
            s["missing"].append(t.index)
    for seed, s in seeds.items():
        d = sw.pretrain_dir(seed)
        s["pretrain"] = ("complete" if (d / "metrics.json").exists() else
                         "started" if (d / "checkpoints").exists() else "not started")
        s["array"] = array_spec(s["missing"]) if s["missing"] else ""
    jobs = read_jobs(sw.root)
    ids = [str(j) for j in jobs.get("job_ids", [])]
    states: dict[str, str] = {}
    if ids and shutil.which("sacct"):
        try:
            r = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(ids)],
                               capture_output=True, text=True, timeout=30)
            for line in r.stdout.splitlines():
                if "|" in line:
                    jid, st = line.split("|", 1)
                    states[jid] = st.split()[0] if st.strip() else ""
        except (OSError, subprocess.SubprocessError):
            pass
    return {"sweep": str(sw.root), "tasks": len(sw.tasks), "done": sum(s["done"] for s in seeds.values()),
            "seeds": seeds, "job_ids": ids, "job_states": states, "queued": _queued(ids)}


def format_status(st: dict[str, Any]) -> str:
    lines = [f"sweep {st['sweep']}: {st['done']}/{st['tasks']} tasks complete"]
    for seed, s in st["seeds"].items():
        miss = f"; missing tasks {s['array']}" if s["missing"] else ""
        lines.append(f"  seed {seed}: {s['done']}/{s['tasks']} done, pretraining {s['pretrain']}{miss}")
    if st["job_states"]:
        counts: dict[str, int] = {}
        for v in st["job_states"].values():
            counts[v] = counts.get(v, 0) + 1
        lines.append("  jobs (sacct): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if st["queued"]:
        lines.append("  still queued/running: " + ", ".join(st["queued"]))
    elif st["done"] < st["tasks"]:
        lines.append("  nothing queued: resubmit the missing tasks with `astrom3 sweep submit --resume-missing`")
    return "\n".join(lines)


# ============================================================================================ rendezvous check

def check_rendezvous(out: str | Path | None = None, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Run on every rank (``srun python -m astrom3_hpc.orchestration.launch launch check-rendezvous``): detect rank and master the
    way the Trainer does (astrom3_hpc.distributed.env.init), join a gloo group, all-reduce, and gather every rank's view
    (host, rank, local rank, master, chosen GLOO_SOCKET_IFNAME and its address). With CUDA the group is
    ``cpu:gloo,cuda:nccl`` and a second all-reduce runs on each rank's GPU over NCCL (its bootstrap on
    NCCL_SOCKET_IFNAME, then its own transport: NVLink/SHM/IB/sockets), so a pass covers the backend the training
    uses; without CUDA only gloo is checked (``nccl_all_reduce_ok`` is None). Writes ``<out>/rank<r>.json``
    when ``out`` is given; returns the gathered list (rank order)."""
    import torch
    import torch.distributed as tdist

    from ..distributed import env as denv

    cuda = torch.cuda.is_available()
    e = denv.init(backend="cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timeout, force_group=True)
    ifname = os.environ.get("GLOO_SOCKET_IFNAME")
    addrs = denv.interface_addresses()
    me = {"rank": e.rank, "world_size": e.world_size, "local_rank": e.local_rank,
          "local_world_size": e.local_world_size, "launcher": e.launcher, "master_addr": e.master_addr,
          "master_port": e.master_port, "host": socket.gethostname(), "gloo_ifname": ifname,
          "gloo_addr": addrs.get(ifname or ""),
          **{k.lower(): os.environ[k] for k in ("SLURM_JOB_ID", "SLURM_NODEID", "SLURM_PROCID", "SLURM_LOCALID",
                                                "SLURMD_NODENAME") if k in os.environ}}
    t = torch.tensor([float(e.rank + 1)])
    tdist.all_reduce(t)
    me["all_reduce_ok"] = bool(t.item() == e.world_size * (e.world_size + 1) / 2)
    me["nccl_ifname"], me["nccl_all_reduce_ok"] = os.environ.get("NCCL_SOCKET_IFNAME"), None
    if cuda:
        g = torch.tensor([float(e.rank + 1)], device=torch.device("cuda", torch.cuda.current_device()))
        tdist.all_reduce(g)
        me["nccl_all_reduce_ok"] = bool(g.item() == e.world_size * (e.world_size + 1) / 2)
        me["cuda_device"] = f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
    everyone: list[Any] = [None] * e.world_size
    tdist.all_gather_object(everyone, me)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json(Path(out) / f"rank{e.rank}.json", {**me, "all": everyone})
    denv.cleanup()
    return everyone


def cmd_check_rendezvous(a) -> int:
    everyone = check_rendezvous(a.out, a.timeout)
    if os.environ.get("RANK") == "0":
        print(f"{'rank':>4} {'local':>7} {'host':<16} {'gloo if':<10} {'address':<16} master")
        for r in everyone:
            print(f"{r['rank']:>4} {r['local_rank']:>3}/{r['local_world_size']:<3} {r['host']:<16} "
                  f"{str(r['gloo_ifname']):<10} {str(r['gloo_addr']):<16} {r['master_addr']}:{r['master_port']}")
        ok = all(r["all_reduce_ok"] and r["nccl_all_reduce_ok"] is not False for r in everyone)
        nccl = everyone[0]["nccl_all_reduce_ok"]
        print(f"rendezvous {'OK' if ok else 'FAILED'}: {len(everyone)} ranks on "
              f"{len({r['host'] for r in everyone})} host(s), launcher {everyone[0]['launcher']}, "
              f"{'gloo + nccl' if nccl is not None else 'gloo only (no CUDA)'}")
        return 0 if ok else 1
    return 0


# ============================================================================================ job entry point

def sweep_task_run(sw: Sweep, index: int) -> int:
    """Run task ``index`` in this process (done tasks return 0 at once); the exit code of `astrom3 finetune`."""
    from .sweep import run_task

    task = sw.tasks[index]
    if sw.done(task):
        print(f"[sweep_task] task {index} ({task.name}) already has metrics.json: nothing to do", file=sys.stderr)
        return 0
    return run_task(sw.root, index)


def sweep_task_main(argv: Sequence[str] | None = None) -> int:
    """``jobs/sweep_task.py SWEEP [INDEX]`` (INDEX defaults to $SLURM_ARRAY_TASK_ID)."""
    p = argparse.ArgumentParser(prog="sweep_task.py", description="Run one task of a fine-tuning sweep.")
    p.add_argument("sweep_dir")
    p.add_argument("index", nargs="?", type=int, help="task index (default: $SLURM_ARRAY_TASK_ID)")
    a = p.parse_args(argv)
    index = a.index
    if index is None:
        tid = os.environ.get("SLURM_ARRAY_TASK_ID")
        if not tid:
            print("sweep_task.py: no INDEX given and SLURM_ARRAY_TASK_ID is not set", file=sys.stderr)
            return 2
        index = int(tid)
    try:
        sw = Sweep.load(a.sweep_dir)
    except FileNotFoundError as e:
        print(f"sweep_task.py: error: {e}", file=sys.stderr)
        return 2
    if not 0 <= index < len(sw.tasks):
        print(f"sweep_task.py: error: sweep {a.sweep_dir} has tasks 0..{len(sw.tasks) - 1}, not {index}",
              file=sys.stderr)
        return 2
    t = sw.tasks[index]
    print(f"[sweep_task] task {index}: mode {t.mode}, subset {t.subset}, seed {t.seed}, init {t.init} -> "
          f"{sw.run_dir(t)}", file=sys.stderr, flush=True)
    return sweep_task_run(sw, index)


# ============================================================================================ CLI

def _add_grid_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sweep grid (when the manifest does not exist yet)")
    g.add_argument("--seeds", action="append", default=None, metavar="LIST",
                   help=f"split seeds, comma-separated (default all: {','.join(map(str, SPLIT_SEEDS))})")
    g.add_argument("--modes", action="append", default=None, metavar="LIST",
                   help=f"default all: {','.join(MODES)}")
    g.add_argument("--subsets", action="append", default=None, metavar="LIST",
                   help=f"default all: {','.join(SUBSET_FACTORS)}")
    g.add_argument("--inits", action="append", default=None, metavar="LIST", help=f"default both: {','.join(INITS)}")
    g.add_argument("--config", help="fine-tuning config (e.g. configs/paper_finetune.yaml)")
    g.add_argument("--pretrain-config", help="pretraining config (e.g. configs/paper.yaml)")
    g.add_argument("--store", help="Zarr store for every job (data.store)")
    g.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every fine-tuning task")
    g.add_argument("--pretrain-set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for pretraining")


def _create_from_args(a, exist_ok: bool) -> Sweep:
    if (Path(a.sweep_dir) / MANIFEST).exists() and exist_ok:
        given = [x for x in ("seeds", "modes", "subsets", "inits", "config", "pretrain_config", "store")
                 if getattr(a, x, None)]
        if given:
            print(f"note: {a.sweep_dir}/{MANIFEST} exists; ignoring --{', --'.join(g.replace('_', '-') for g in given)}",
                  file=sys.stderr)
        return Sweep.load(a.sweep_dir)
    return create_sweep(
        a.sweep_dir,
        seeds=[int(s) for s in _split_list(a.seeds)] if a.seeds else SPLIT_SEEDS,
        modes=_split_list(a.modes) if a.modes else MODES,
        subsets=_split_list(a.subsets) if a.subsets else tuple(SUBSET_FACTORS),
        inits=_split_list(a.inits) if a.inits else INITS,
        finetune_config=a.config, pretrain_config=a.pretrain_config, store=a.store, sets=a.set,
        pretrain_sets=a.pretrain_set, exist_ok=exist_ok)


def _add_resource_args(p: argparse.ArgumentParser, backend_choice: bool) -> None:
    g = p.add_argument_group("submission")
    if backend_choice:
        g.add_argument("--backend", choices=["sbatch", "submitit"], default="sbatch",
                       help="sbatch: slurm/pretrain.sh + slurm/finetune_array.sh (default); submitit: from Python")
    g.add_argument("--cluster", choices=["slurm", "local", "debug"], default=None,
                   help="Submitit executor (default: slurm when a controller answers, else local)")
    g.add_argument("--resume-missing", action="store_true",
                   help="submit only tasks without metrics.json (array of just those indices) and pretraining "
                        "only for seeds without pretrain/s<seed>/metrics.json")
    g.add_argument("--parallel", type=int, default=4, help="array tasks running at once per seed (%%P; default 4)")
    g.add_argument("--pretrain-nodes", type=int, default=1)
    g.add_argument("--pretrain-tasks-per-node", type=int, default=2, help="ranks per node (default 2)")
    g.add_argument("--cpus-per-task", type=int, default=1)
    g.add_argument("--gpus-per-node", type=int, default=None, help="Submitit: GPUs per node")
    g.add_argument("--pretrain-time", type=int, default=240, metavar="MIN", help="time limit, minutes (240)")
    g.add_argument("--finetune-time", type=int, default=120, metavar="MIN", help="time limit per task (120)")
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                   help="extra sbatch option for every job (repeatable), e.g. --sbatch-arg=--qos=high")
    g.add_argument("--dry-run", action="store_true",
                   help="sbatch: print the commands, submit nothing (the manifest is still written)")
    g.add_argument("--force", action="store_true", help="submit even if jobs of this sweep are still queued")
    g.add_argument("--wait", action="store_true", help="Submitit: wait for every job and report failures")


def cmd_sweep_create(a) -> int:
    sw = _create_from_args(a, exist_ok=False)
    seeds = sw.seeds
    print(f"sweep {sw.root}: {len(sw.tasks)} fine-tuning tasks over seeds {seeds}; "
          f"{len({t.seed for t in sw.tasks if t.init == 'clip'})} pretraining runs")
    cells = {t.hparams.get("cells") for t in sw.tasks if t.hparams}
    print("per-cell fine-tuning values: " + (", ".join(sorted(c for c in cells if c)) if any(cells) else
                                             "none (one config for every task; configs/paper_finetune.yaml names "
                                             "configs/finetune_cells.yaml)"))
    return 0


def _print_entry(entry: dict[str, Any], sweep_dir: str) -> None:
    for p in entry["pretrain"]:
        print(f"pretrain seed {p['seed']}: job {p['job_id']}  ({p['nodes']} node(s) x {p['tasks_per_node']} tasks)")
    for s in entry["skipped_pretrain"]:
        print(f"pretrain seed {s}: already complete, not resubmitted")
    for f in entry["finetune"]:
        dep = f"  after {f['dependency']}" if f.get("dependency") else ""
        print(f"finetune seed {f['seed']}: array {f['array_job_id']}  tasks {array_spec(f['tasks'])}{dep}")
    if not entry["finetune"]:
        print("nothing to submit: every task is complete")
    print(f"jobs recorded in {Path(sweep_dir) / JOBS_FILE}")


def _wait_entry(entry: dict[str, Any]) -> int:
    failed = 0
    for seed, job in entry["_jobs"]["pretrain"].items():
        exc = job.exception()
        if exc is not None:
            failed += 1
            print(f"pretrain seed {seed} (job {job.job_id}) failed: {str(exc).splitlines()[0]}", file=sys.stderr)
    for seed, jobs in entry["_jobs"]["finetune"].items():
        for j in jobs:
            exc = j.exception()
            if exc is not None:
                failed += 1
                print(f"finetune seed {seed} job {j.job_id} failed: {str(exc).splitlines()[0]}", file=sys.stderr)
    return 1 if failed else 0


def _errors_to_exit_code(fn):
    """cli.main turns ValueError/FileNotFoundError/... into exit 2; do the same for the RuntimeErrors raised here
    (sbatch failed, jobs still queued)."""
    import functools

    @functools.wraps(fn)
    def wrapper(a) -> int:
        try:
            return fn(a)
        except RuntimeError as e:
            print(f"astrom3 {getattr(a, 'command', '')}: error: {e}".replace("  ", " "), file=sys.stderr)
            return 2
    return wrapper


@_errors_to_exit_code
def cmd_sweep_submit(a) -> int:
    sw = _create_from_args(a, exist_ok=True)
    kw = dict(resume_missing=a.resume_missing, parallel=a.parallel, pretrain_nodes=a.pretrain_nodes,
              pretrain_tasks_per_node=a.pretrain_tasks_per_node, cpus_per_task=a.cpus_per_task,
              pretrain_time_min=a.pretrain_time, finetune_time_min=a.finetune_time, partition=a.partition,
              account=a.account, force=a.force)
    if getattr(a, "backend", "submitit") == "sbatch":
        entry = submit_sweep_sbatch(sw, sbatch_args=a.sbatch_arg, dry_run=a.dry_run, **kw)
        if not a.dry_run:
            _print_entry(entry, a.sweep_dir)
        return 0
    params = _sbatch_args_to_params(a.sbatch_arg)
    entry = launch_sweep(sw, cluster=a.cluster, gpus_per_node=a.gpus_per_node, slurm_parameters=params, **kw)
    _print_entry(entry, a.sweep_dir)
    return _wait_entry(entry) if a.wait else 0


def _sbatch_args_to_params(args: Sequence[str]) -> dict[str, Any]:
    """["--qos=high", "--exclusive"] -> {"qos": "high", "exclusive": True} for slurm_additional_parameters."""
    out: dict[str, Any] = {}
    for s in args:
        s = s.lstrip("-")
        k, _, v = s.partition("=")
        out[k] = v if v else True
    return out


def cmd_sweep_status(a) -> int:
    st = sweep_status(a.sweep_dir)
    print(json.dumps(st, indent=2, default=str) if a.json else format_status(st))
    return 0


@_errors_to_exit_code
def cmd_launch_pretrain(a) -> int:
    job = launch_pretrain(a.run_dir, a.config, a.set, nodes=a.nodes, tasks_per_node=a.tasks_per_node,
                          cpus_per_task=a.cpus_per_task, cluster=a.cluster, folder=a.folder, timeout_min=a.time,
                          partition=a.partition, account=a.account, gpus_per_node=a.gpus_per_node,
                          dependency=a.dependency, slurm_parameters=_sbatch_args_to_params(a.sbatch_arg))
    print(f"submitted pretraining job {job.job_id} ({a.nodes} node(s) x {a.tasks_per_node} tasks); logs in "
          f"{job.paths.folder}")
    if a.wait:
        results = job.results()
        print(json.dumps(results[0], indent=2))
    return 0


def add_parsers(sub) -> None:
    """Register ``sweep`` (create|submit|status) and ``launch`` (pretrain|sweep) on an argparse subparsers object.
    cli.py: ``from . import launch; launch.add_parsers(sub)``."""
    sp = sub.add_parser("sweep", help="fine-tuning sweeps: create a manifest, submit it to SLURM, show its status",
                        description="The paper's grid (5 split seeds x pretraining, then 4 modes x 4 label "
                                    "fractions x 2 inits per seed) as a manifest, submitted as one pretraining job "
                                    "and one dependent array per seed. See docs/slurm.md.")
    ssub = sp.add_subparsers(dest="sweep_command", metavar="SWEEP_COMMAND")
    c = ssub.add_parser("create", help="write SWEEP_DIR/manifest.json")
    c.add_argument("sweep_dir")
    _add_grid_args(c)
    c.set_defaults(func=cmd_sweep_create)
    s = ssub.add_parser("submit", help="submit pretraining + fine-tuning arrays (creates the manifest if needed)",
                        description="Per seed: one pretraining job (skipped when pretrain/s<seed>/metrics.json "
                                    "exists) and one array of that seed's tasks with --dependency=afterok on it. "
                                    "Prints the job ids and appends them to SWEEP_DIR/jobs.json.")
    s.add_argument("sweep_dir")
    _add_grid_args(s)
    _add_resource_args(s, backend_choice=True)
    s.set_defaults(func=cmd_sweep_submit)
    t = ssub.add_parser("status", help="tasks done/missing per seed and the state of the submitted jobs")
    t.add_argument("sweep_dir")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_sweep_status)
    sp.set_defaults(func=lambda a: (sp.print_help(), 2)[1])

    lp = sub.add_parser("launch", help="submit jobs from Python with Submitit (SLURM, or local/debug executors)")
    lsub = lp.add_subparsers(dest="launch_command", metavar="LAUNCH_COMMAND")
    p = lsub.add_parser("pretrain", help="one multi-task pretraining job",
                        description="Submit `astrom3 pretrain` as a Submitit job of NODES x TASKS_PER_NODE ranks. "
                                    "Preemption checkpoints and requeues; the rerun resumes from --run-dir.")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--config")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--tasks-per-node", type=int, default=2)
    p.add_argument("--cpus-per-task", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=None)
    p.add_argument("--cluster", choices=["slurm", "local", "debug"], default=None)
    p.add_argument("--folder", help="Submitit folder (default: <run dir>/../submitit)")
    p.add_argument("--time", type=int, default=240, metavar="MIN")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--dependency", help="e.g. afterok:123")
    p.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG")
    p.add_argument("--wait", action="store_true")
    p.set_defaults(func=cmd_launch_pretrain)
    r = lsub.add_parser("check-rendezvous", help="run under srun/mpiexec/torchrun: check ranks, master and gloo "
                                                 "interface on every host",
                        description="Each rank detects its rank and the master as training does, joins a gloo "
                                    "group and all-reduces; rank 0 prints one line per rank (host, local rank, "
                                    "GLOO_SOCKET_IFNAME and its address, master). Exit 1 if the all-reduce is wrong.")
    r.add_argument("--out", help="write <out>/rank<r>.json")
    r.add_argument("--timeout", type=float, default=120.0, help="seconds for the rendezvous (default 120)")
    r.set_defaults(func=cmd_check_rendezvous)
    w = lsub.add_parser("sweep", help="a whole sweep through Submitit (= astrom3 sweep submit --backend submitit)")
    w.add_argument("sweep_dir")
    _add_grid_args(w)
    _add_resource_args(w, backend_choice=False)
    w.set_defaults(func=cmd_sweep_submit, backend="submitit")
    lp.set_defaults(func=lambda a: (lp.print_help(), 2)[1])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m astrom3_hpc.orchestration.launch sweep|launch ...`` (the same commands as ``astrom3 sweep|launch``)."""
    ap = argparse.ArgumentParser(prog="astrom3", description="Submit the AstroM3 job suite (sweeps, Submitit).")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    add_parsers(sub)
    from ..cli import dispatch

    return dispatch(ap, argv, expected_errors=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
