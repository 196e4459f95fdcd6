"""Submitting the job suite to a scheduler, from Python: one pretraining run or a whole sweep.

The Python API in one import (``from astrom3_hpc.orchestration import launch``); each part lives in its module:

* ``submission``: the sweep manifest (:func:`create_sweep`), ``<sweep>/jobs.json``, the per-seed plan, scheduler
  queries (:func:`default_cluster`, :func:`array_spec`).
* ``sbatch``: :func:`submit_sweep_sbatch` (``slurm/pretrain.sh`` per seed, one ``slurm/finetune_array.sh`` array
  per seed with ``afterok`` on its pretraining).
* ``submitit_launch``: :func:`make_executor`, :func:`launch_pretrain`, :func:`launch_sweep`;
  ``submitit_jobs``: the job functions Submitit pickles (:class:`PretrainJob`, :class:`SweepTaskJob`).
* ``status``: :func:`sweep_status`, :func:`format_status`.

The commands (``astrom3 sweep create|submit|status``, ``astrom3 launch pretrain|sweep|check-rendezvous``) are
parsed in astrom3_hpc/cli/orchestration.py; ``slurm/submit_sweep.sh`` runs ``python -m astrom3_hpc.cli``.
Preemption and requeue: docs/slurm.md.
"""

from .sbatch import submit_sweep_sbatch
from .status import format_status, sweep_status
from .submission import (JOBS_FILE, SUBMITIT_DIR, array_spec, create_sweep, default_cluster, read_jobs,
                         record_submission, repo_root, slurm_available)
from .submitit_jobs import PretrainJob, SweepTaskJob
from .submitit_launch import launch_pretrain, launch_sweep, make_executor

__all__ = ["JOBS_FILE", "SUBMITIT_DIR", "PretrainJob", "SweepTaskJob", "array_spec", "create_sweep",
           "default_cluster", "format_status", "launch_pretrain", "launch_sweep", "make_executor", "read_jobs",
           "record_submission", "repo_root", "slurm_available", "submit_sweep_sbatch", "sweep_status"]
