"""The sbatch back end: per seed ``slurm/pretrain.sh`` (``srun``, one process per rank) and one
``slurm/finetune_array.sh`` array over that seed's task indices with ``--dependency=afterok`` on its pretraining.
Logs: ``<sweep>/logs/pretrain-s<seed>-<job>.out``, ``<sweep>/logs/ft_<array job>_<task index>.out/.err``.
The scripts requeue a job that exits with 75 (preempted after a checkpoint); see docs/slurm.md.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

from .submission import (array_spec, check_not_running, combine_dependency, plan, record_submission, reraise_partial,
                         repo_root, submitting)
from .sweep import Sweep


LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "LOCAL_SIZE", "ASTROM3_DIST_LAUNCHER",
                  "TORCHELASTIC_RUN_ID")


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


def _split_dependency(args: Sequence[str]) -> tuple[list[str], str | None]:
    """``args`` without their ``--dependency``/``-d`` options, and the value of the last one (sbatch keeps the last)."""
    rest: list[str] = []
    dep = None
    it = iter(args)
    for a in it:
        if a in ("--dependency", "-d"):
            dep = next(it, None)
        elif a.startswith("--dependency="):
            dep = a.split("=", 1)[1]
        elif a.startswith("-d") and not a.startswith("--"):
            dep = a[2:].lstrip("=")
        else:
            rest.append(a)
    return rest, dep


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
    # Nothing is submitted in a dry run: no other submission needs keeping out.
    with nullcontext() if dry_run else submitting(sweep_root):
        if not dry_run:
            check_not_running(sw, force)
        (sweep_root / "logs").mkdir(parents=True, exist_ok=True)
        python = python or sys.executable
        env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
        env.update(ASTROM3_ROOT=str(root_repo), PYTHON=python)
        common = _common_sbatch(partition, account, sbatch_args)
        entry: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "backend": "sbatch", "cluster": "slurm",
                                 "resume_missing": resume_missing, "pretrain": [], "finetune": [],
                                 "skipped_pretrain": []}
        seeds = plan(sw, resume_missing)
        # A user's --dependency joins the arrays' afterok on their pretraining instead of replacing it (sbatch keeps the
        # last one given): CLIP tasks must not start before their weights exist.
        ft_common, common_dep = _split_dependency(common)
        ft_extra, extra_dep = _split_dependency(finetune_sbatch_args)
        user_dep = extra_dep or common_dep
        if any(p["submit_pretrain"] for p in seeds.values()):
            # Refused before anything is submitted: a user dependency the arrays' afterok cannot be joined with.
            combine_dependency("afterok:<pretraining>", user_dep)
        try:
            for seed, p in seeds.items():
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
                ours, dep = dep, combine_dependency(dep, user_dep)
                args = [*ft_common, f"--job-name=a3-ft-s{seed}", f"--array={spec}", "--ntasks=1",
                        f"--cpus-per-task={cpus_per_task}", f"--time={finetune_time_min}",
                        f"--output={sweep_root}/logs/ft_%A_%a.out", f"--error={sweep_root}/logs/ft_%A_%a.err"]
                if dep:
                    args.append(f"--dependency={dep}")
                if ours:  # a failed pretraining cancels its array instead of leaving it pending forever
                    args.append("--kill-on-invalid-dep=yes")
                job = _sbatch([*args, *ft_extra, str(root_repo / "slurm" / "finetune_array.sh"),
                               f"SWEEP={sweep_root}", f"PYTHON={python}"], root_repo, env, dry_run)
                entry["finetune"].append({"seed": seed, "array_job_id": job, "array": spec, "tasks": p["tasks"],
                                          "dependency": dep, "logs": f"logs/ft_{job}_<task>.out"})
        except BaseException as e:  # Ctrl-C too: see reraise_partial
            if dry_run:
                raise
            reraise_partial(sweep_root, entry, e)
        if not dry_run:
            record_submission(sweep_root, entry)
        return entry
