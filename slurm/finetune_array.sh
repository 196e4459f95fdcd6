#!/bin/bash
# One fine-tuning task of a sweep per SLURM array task: array task id = task index in <sweep>/manifest.json.
#
#   sbatch --array=0-31%4 --dependency=afterok:<pretrain job id> \
#          -o runs/sweep/logs/ft_%A_%a.out -e runs/sweep/logs/ft_%A_%a.err slurm/finetune_array.sh runs/sweep
#   sbatch --array=3,7,12%4 slurm/finetune_array.sh SWEEP=runs/sweep          # just these tasks
#
# Normally submitted by slurm/submit_sweep.sh (= `astrom3 sweep submit`), which builds the manifest, picks the
# indices of each seed's tasks, adds the dependency on that seed's pretraining and writes <sweep>/jobs.json.
# Each task runs `python jobs/sweep_task.py <sweep> <index>` under srun (one rank by default; give the job more
# tasks, e.g. --ntasks=2, for a multi-rank fine-tuning; a one-rank task drops an inherited
# MASTER_PORT/MASTER_ADDR and takes a free port, so that tasks sharing a node do not collide). A task whose run
# dir already holds metrics.json exits 0 at once; a rerun of an unfinished task resumes from its checkpoint.
#
# Settings: environment variables, or NAME=VALUE arguments (which win); a bare first argument is SWEEP.
#   SWEEP         sweep directory (with manifest.json)  required
#   ASTROM3_ROOT  repository root                       default: $SLURM_SUBMIT_DIR
#   PYTHON        interpreter                           default: $ASTROM3_ROOT/.venv/bin/python, else python3
#   SRUN_ARGS     extra srun options
#   MAX_REQUEUES  requeue a preempted task at most this many times (default 20)
#   GPUS          GPUs per task, as in slurm/pretrain.sh: request them with sbatch too
#                   sbatch --array=0-31%4 --gpus-per-task=1 slurm/finetune_array.sh SWEEP=runs/sweep GPUS=1
#                 (one bound GPU per task; the task refuses to run on the CPU). Unset: SLURM_GPUS_PER_TASK.
#
# Exit code 75 of a task (SIGUSR1 from --signal=USR1@90, or SIGTERM: a fine-tune's checkpoint written, a baseline
# stopped with nothing written) requeues this array task (`scontrol requeue <array job>_<task>`); it resumes in the
# same run directory (a baseline starts again).
# Logs: the default --output below lands in the submission directory; submit_sweep.sh writes into
# <sweep>/logs/ft_%A_%a.out and .err (the names the collector looks for).
#
#SBATCH --job-name=astrom3-ft
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --time=02:00:00
#SBATCH --signal=USR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=ft_%A_%a.out

set -uo pipefail

log() { echo "[finetune_array.sh $(date +%H:%M:%S)] $*"; }
die() { echo "[finetune_array.sh] error: $*" >&2; exit 2; }

for arg in "$@"; do
  case "$arg" in
    SWEEP=*|ASTROM3_ROOT=*|PYTHON=*|SRUN_ARGS=*|MAX_REQUEUES=*|GPUS=*) export "${arg?}" ;;
    *=*) die "unknown setting $arg" ;;
    *) [ -z "${SWEEP_ARG:-}" ] || die "unexpected argument $arg"; SWEEP_ARG=$arg ;;
  esac
done
SWEEP=${SWEEP_ARG:-${SWEEP:-}}

ROOT=${ASTROM3_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
[ -f "$ROOT/jobs/sweep_task.py" ] || die "$ROOT is not the astrom3-hpc repository (no jobs/sweep_task.py): \
submit from the repository root or set ASTROM3_ROOT"
cd "$ROOT" || die "cannot cd to $ROOT"
[ -n "$SWEEP" ] || die "no sweep directory: sbatch --array=... slurm/finetune_array.sh SWEEP_DIR"
[ -f "$SWEEP/manifest.json" ] || die "$SWEEP is not a sweep directory (no manifest.json): create it with \
'astrom3 sweep create $SWEEP' or slurm/submit_sweep.sh"
[ -n "${SLURM_ARRAY_TASK_ID:-}" ] || die "not an array task: submit with sbatch --array=INDICES"
INDEX=$SLURM_ARRAY_TASK_ID
JOB_KEY=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
MAX_REQUEUES=${MAX_REQUEUES:-20}
# Checked before the run: a typo failed only the test after the first preemption, and then requeued without end.
case "$MAX_REQUEUES" in ''|*[!0-9]*) die "MAX_REQUEUES=$MAX_REQUEUES: expected a number of requeues" ;; esac
RESTART=${SLURM_RESTART_COUNT:-0}
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi

unset RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE LOCAL_SIZE ASTROM3_DIST_LAUNCHER TORCHELASTIC_RUN_ID
# A one-rank task has no peer to agree on a rendezvous with: without MASTER_* distributed/env.py takes a free port.
# One inherited from the submitting shell (--export=ALL) would give every array task on a node the same port and
# all but the first would fail with EADDRINUSE. A multi-rank task (--ntasks=2) keeps what was exported.
if [ "${SLURM_NTASKS:-1}" -le 1 ]; then
  [ -z "${MASTER_PORT:-}" ] || log "one-rank task: inherited MASTER_PORT=$MASTER_PORT ignored (a free port is used)"
  unset MASTER_PORT MASTER_ADDR
fi
# The interpreter's bin directory first: its ninja matches DeepSpeed's JIT cache (see slurm/pretrain.sh).
case "$PYTHON" in */*) PATH="$(cd "$(dirname "$PYTHON")" && pwd):$PATH"; export PATH ;; esac
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
export PYTHONUNBUFFERED=1
trap 'log "SIGTERM received: waiting for the task to checkpoint"' TERM

log "array task $JOB_KEY (restart $RESTART) on ${SLURM_JOB_NODELIST:-?}: sweep $SWEEP, task $INDEX"
SRUN=(srun --unbuffered)
# SLURM exports a typed request (--gpus-per-task=a100:1) as SLURM_GPUS_PER_TASK=a100:1: its count is what
# srun needs (the allocation already fixes the type); a GPUS= given by hand is checked as typed.
[ -n "${GPUS:-}" ] || { GPUS=${SLURM_GPUS_PER_TASK:-}; GPUS=${GPUS##*:}; }
if [ -n "$GPUS" ] && [ "$GPUS" != 0 ]; then
  case "$GPUS" in *[!0-9]*) die "GPUS=$GPUS: expected a number of GPUs per task" ;; esac
  if [ -z "${SLURM_GPUS_PER_TASK:-}${SLURM_GPUS_ON_NODE:-}${SLURM_JOB_GPUS:-}${SLURM_STEP_GPUS:-}" ]; then
    die "GPUS=$GPUS but this job was allocated no GPU: submit with sbatch --gpus-per-task=$GPUS ..."
  fi
  SRUN+=(--gpus-per-task "$GPUS")
  export ASTROM3_TRAIN_DEVICE=cuda  # read by sweep tasks: refuse to fine-tune on the CPU
fi
# shellcheck disable=SC2206
[ -z "${SRUN_ARGS:-}" ] || SRUN+=($SRUN_ARGS)
"${SRUN[@]}" "$PYTHON" jobs/sweep_task.py "$SWEEP" "$INDEX"
rc=$?
log "task $INDEX exited with $rc"

if [ "$rc" -eq 75 ]; then
  if [ "$RESTART" -ge "$MAX_REQUEUES" ]; then
    log "preempted, but already restarted $RESTART times (MAX_REQUEUES=$MAX_REQUEUES): not requeueing"
    exit 75
  fi
  log "preempted (a checkpoint written, or a baseline stopped); requeueing $JOB_KEY (restart $((RESTART + 1)))"
  if scontrol requeue "$JOB_KEY"; then
    exit 0
  fi
  log "scontrol requeue failed: resubmit task $INDEX to resume"
  exit 75
fi
exit "$rc"
