"""`astrom3 sweep create|submit|status` and `astrom3 launch pretrain|sweep|check-rendezvous`: argument parsing
only; the commands call astrom3_hpc.orchestration (and distributed.rendezvous_check). Also the entry point of
``jobs/sweep_task.py`` (one array task).
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from ..core.constants import SPLIT_SEEDS, SUBSET_FACTORS
from ..core.argtypes import non_negative_int, positive_int
from ..distributed.rendezvous_check import check_rendezvous
from ..orchestration.sbatch import submit_sweep_sbatch
from ..orchestration.status import format_status, sweep_status
from ..orchestration.submission import JOBS_FILE, array_spec, create_sweep
from ..orchestration.sweep import BASELINE, INITS, MANIFEST, MODES, Sweep, run_missing_task
from .runner import print_json


def split_list(values: Sequence[str] | None) -> list[str]:
    """["0,42", "66"] -> ["0", "42", "66"] (options accept commas and spaces)."""
    out: list[str] = []
    for v in values or []:
        out += [x for x in re.split(r"[,\s]+", str(v)) if x]
    return out


def _errors_to_exit_code(fn):
    """The CLI turns ValueError/FileNotFoundError/... into exit 2; the sweep and launch commands do the same for
    the RuntimeErrors of the scheduler side (sbatch failed, jobs still queued)."""
    @functools.wraps(fn)
    def wrapper(a) -> int:
        try:
            return fn(a)
        except RuntimeError as e:
            print(f"astrom3 {getattr(a, 'command', '')}: error: {e}".replace("  ", " "), file=sys.stderr)
            return 2
    return wrapper


@_errors_to_exit_code
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
        try:
            index = int(tid)
        except ValueError:
            print(f"sweep_task.py: SLURM_ARRAY_TASK_ID={tid!r} is not a task index", file=sys.stderr)
            return 2
    try:
        sw = Sweep.load(a.sweep_dir)
    except (FileNotFoundError, ValueError) as e:
        print(f"sweep_task.py: error: {e}", file=sys.stderr)
        return 2
    if not 0 <= index < len(sw.tasks):
        print(f"sweep_task.py: error: sweep {a.sweep_dir} has tasks 0..{len(sw.tasks) - 1}, not {index}",
              file=sys.stderr)
        return 2
    t = sw.tasks[index]
    print(f"[sweep_task] task {index}: mode {t.mode}, subset {t.subset}, seed {t.seed}, init {t.init} -> "
          f"{sw.run_dir(t)}", file=sys.stderr, flush=True)
    return run_missing_task(sw, index)


def _add_grid_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sweep grid (when the manifest does not exist yet)")
    g.add_argument("--seeds", action="append", default=None, metavar="LIST",
                   help=f"split seeds, comma-separated (default all: {','.join(map(str, SPLIT_SEEDS))})")
    g.add_argument("--modes", action="append", default=None, metavar="LIST",
                   help=f"default all: {','.join(MODES)}")
    g.add_argument("--subsets", action="append", default=None, metavar="LIST",
                   help=f"default all: {','.join(SUBSET_FACTORS)}")
    g.add_argument("--inits", action="append", default=None, metavar="LIST",
                   help=f"default both: {','.join(INITS)}; add {BASELINE} for the classical light-curve classifier "
                        "on each photo task's split (`astrom3 baseline`), tabled beside the networks")
    g.add_argument("--config", help="fine-tuning config (e.g. configs/paper_finetune.yaml)")
    g.add_argument("--pretrain-config", help="pretraining config (e.g. configs/paper.yaml)")
    g.add_argument("--store", help="Zarr store for every job (data.store)")
    g.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="overrides for every fine-tuning task (repeatable; not data.store or data.seed: use "
                        "--store and --seeds)")
    g.add_argument("--pretrain-set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="overrides for pretraining (repeatable; not data.store or data.seed)")


def _create_from_args(a, exist_ok: bool) -> Sweep:
    if (Path(a.sweep_dir) / MANIFEST).exists() and exist_ok:
        # The manifest's overrides are what its tasks ran with: new ones would mix two configs in one table.
        given = [x for x in ("seeds", "modes", "subsets", "inits", "config", "pretrain_config", "store", "set",
                             "pretrain_set") if getattr(a, x, None)]
        if given:
            flags = ", --".join(g.replace("_", "-") for g in given)
            print(f"note: {a.sweep_dir}/{MANIFEST} exists; ignoring --{flags}", file=sys.stderr)
        return Sweep.load(a.sweep_dir)
    return create_sweep(
        a.sweep_dir,
        seeds=[int(s) for s in split_list(a.seeds)] if a.seeds else SPLIT_SEEDS,
        modes=split_list(a.modes) if a.modes else MODES,
        subsets=split_list(a.subsets) if a.subsets else tuple(SUBSET_FACTORS),
        inits=split_list(a.inits) if a.inits else INITS,
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
    g.add_argument("--parallel", type=positive_int, default=4,
                   help="array tasks running at once per seed (%%P; default 4). Submitit's local executor: the "
                        "tasks go in chunks of P, each started when the previous chunk has ended")
    g.add_argument("--pretrain-nodes", type=positive_int, default=1)
    g.add_argument("--pretrain-tasks-per-node", type=positive_int, default=2, help="ranks per node (default 2)")
    g.add_argument("--cpus-per-task", type=positive_int, default=1)
    g.add_argument("--gpus-per-node", type=non_negative_int, default=None, help="Submitit: GPUs per node")
    g.add_argument("--pretrain-time", type=positive_int, default=240, metavar="MIN", help="time limit, minutes (240)")
    g.add_argument("--finetune-time", type=positive_int, default=120, metavar="MIN", help="time limit per task (120)")
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                   help="extra sbatch option for every job (repeatable), e.g. --sbatch-arg=--qos=high")
    g.add_argument("--dry-run", action="store_true",
                   help="print what would be submitted (sbatch: the commands; Submitit: each job and array "
                        "with its resources), submit nothing (the manifest is still written)")
    g.add_argument("--force", action="store_true", help="submit even if jobs of this sweep are still queued")
    g.add_argument("--wait", action="store_true", help="Submitit: wait for every job and report failures")


@_errors_to_exit_code
def cmd_sweep_create(a) -> int:
    sw = _create_from_args(a, exist_ok=False)
    seeds = sw.seeds
    n_baseline = sum(t.init == BASELINE for t in sw.tasks)
    print(f"sweep {sw.root}: {len(sw.tasks) - n_baseline} fine-tuning tasks"
          f"{f' and {n_baseline} baseline tasks' if n_baseline else ''} over seeds {seeds}; "
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
    from ..orchestration.submitit_launch import job_exception

    failed = 0
    for seed, job in entry["_jobs"]["pretrain"].items():
        exc = job_exception(job)
        if exc is not None:
            failed += 1
            print(f"pretrain seed {seed} (job {job.job_id}) failed: {str(exc).splitlines()[0]}", file=sys.stderr)
    for seed, jobs in entry["_jobs"]["finetune"].items():
        for j in jobs:
            exc = job_exception(j)
            if exc is not None:
                failed += 1
                print(f"finetune seed {seed} job {j.job_id} failed: {str(exc).splitlines()[0]}", file=sys.stderr)
    return 1 if failed else 0


@_errors_to_exit_code
def cmd_sweep_submit(a) -> int:
    if getattr(a, "backend", "submitit") == "sbatch":
        # Submitit's own options: under sbatch they were dropped without a word (CPU jobs for --gpus-per-node 2).
        given = [flag for flag, v in (("--gpus-per-node", a.gpus_per_node), ("--cluster", a.cluster),
                                      ("--wait", a.wait or None)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: options of --backend submitit; the sbatch back end takes GPUs as "
                             f"--sbatch-arg=--gpus-per-task=N (or --gres) and submits to SLURM without waiting")
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
    from ..orchestration.submitit_launch import launch_sweep  # submitit: only when used

    entry = launch_sweep(sw, cluster=a.cluster, gpus_per_node=a.gpus_per_node, slurm_parameters=params,
                         dry_run=a.dry_run, **kw)
    if a.dry_run:
        return 0
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


@_errors_to_exit_code
def cmd_sweep_status(a) -> int:
    st = sweep_status(a.sweep_dir)
    if a.json:
        print_json(st)
    else:
        print(format_status(st))
    return 0


@_errors_to_exit_code
def cmd_sweep_prune(a) -> int:
    from ..orchestration.prune import prune_sweep

    out = prune_sweep(a.sweep_dir, dry_run=a.dry_run)
    print_json({k: v for k, v in out.items() if k != "runs"})
    return 0


@_errors_to_exit_code
def cmd_launch_pretrain(a) -> int:
    from ..orchestration.submitit_launch import launch_pretrain

    job = launch_pretrain(a.run_dir, a.config, a.set, nodes=a.nodes, tasks_per_node=a.tasks_per_node,
                          cpus_per_task=a.cpus_per_task, cluster=a.cluster, folder=a.folder, timeout_min=a.time,
                          partition=a.partition, account=a.account, gpus_per_node=a.gpus_per_node,
                          dependency=a.dependency, slurm_parameters=_sbatch_args_to_params(a.sbatch_arg))
    print(f"submitted pretraining job {job.job_id} ({a.nodes} node(s) x {a.tasks_per_node} tasks); logs in "
          f"{job.paths.folder}")
    if a.wait:
        results = job.results()
        print_json(results[0])
    return 0


def add_parsers(sub) -> None:
    """Register ``sweep`` (create|submit|status) and ``launch`` (pretrain|sweep|check-rendezvous) on an argparse
    subparsers object (cli/__init__.py's build_parser)."""
    sp = sub.add_parser("sweep", help="fine-tuning sweeps: create a manifest, submit it to SLURM, show its status, "
                                      "prune finished runs' checkpoints",
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
    pr = ssub.add_parser("prune", help="delete the checkpoints of the sweep's finished runs (most of its bytes)",
                         description="Deletes checkpoints/ of every pretraining and task `sweep status` counts as "
                                     "done, keeping best_model.pt and every record status, collect, --init, "
                                     "predict and the science tools read. A pruned run can no longer be extended "
                                     "with more epochs or rewrite a damaged metrics.json from its last checkpoint "
                                     "(it runs again from the start). Runs a live job holds are passed over.")
    pr.add_argument("sweep_dir")
    pr.add_argument("--dry-run", action="store_true", help="say what would be freed, delete nothing")
    pr.set_defaults(func=cmd_sweep_prune)
    sp.set_defaults(func=lambda a: (sp.print_help(), 2)[1])

    lp = sub.add_parser("launch", help="submit jobs from Python with Submitit (SLURM, or local/debug executors)")
    lsub = lp.add_subparsers(dest="launch_command", metavar="LAUNCH_COMMAND")
    p = lsub.add_parser("pretrain", help="one multi-task pretraining job",
                        description="Submit `astrom3 pretrain` as a Submitit job of NODES x TASKS_PER_NODE ranks. "
                                    "Preemption checkpoints and requeues; the rerun resumes from --run-dir.")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--config")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE")
    p.add_argument("--nodes", type=positive_int, default=1)
    p.add_argument("--tasks-per-node", type=positive_int, default=2)
    p.add_argument("--cpus-per-task", type=positive_int, default=1)
    p.add_argument("--gpus-per-node", type=non_negative_int, default=None)
    p.add_argument("--cluster", choices=["slurm", "local", "debug"], default=None)
    p.add_argument("--folder", help="Submitit folder (default: <run dir>/../submitit)")
    p.add_argument("--time", type=positive_int, default=240, metavar="MIN")
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
