#!/bin/bash
# AstroM3 contrastive pretraining as a SLURM batch job: one srun task per rank (DeepSpeed over gloo/NCCL),
# resumable, requeues itself after a preemption checkpoint.
#
#   sbatch slurm/pretrain.sh                                    # configs/demo.yaml on data/synthetic.zarr, 1 node x 2
#   sbatch --nodes=2 --ntasks-per-node=4 slurm/pretrain.sh CONFIG=configs/paper.yaml STORE=data/astrom3.zarr
#   sbatch slurm/pretrain.sh RUN_DIR=runs/pretrain-s0 --set data.seed=0 train.epochs=3
#
# Submit from the repository root (or set ASTROM3_ROOT): relative paths are taken from there. The job inherits
# the submitting shell's environment (sbatch's default --export=ALL), so GLOO_SOCKET_IFNAME, NCCL_*, MASTER_ADDR
# or MASTER_PORT exported there reach the ranks.
#
# Settings: environment variables, or NAME=VALUE arguments (which win). Any other argument is passed on to
# `astrom3 pretrain` (e.g. `--set train.epochs=3`, `--stop-after-steps 5`).
#   ASTROM3_ROOT  repository root                     default: $SLURM_SUBMIT_DIR (the directory sbatch ran in)
#   CONFIG        YAML config                          default: configs/demo.yaml
#   STORE         Zarr store (--store)                 default: data/synthetic.zarr; empty: the config's data.store
#   OUT_ROOT      parent of the default run dir        default: runs/slurm
#   RUN_DIR       run directory                        default: $OUT_ROOT/pretrain-<job id> (the same after a
#                 requeue, so the job resumes from its own checkpoint)
#   PYTHON        interpreter                          default: $ASTROM3_ROOT/.venv/bin/python, else python3
#   EXTRA_SETS    space-separated KEY=VALUE config overrides
#   SRUN_ARGS     extra srun options (space-separated)
#   MAX_REQUEUES  requeue at most this many times      default: 20
#   GPUS          GPUs per task (one rank per GPU). The allocation comes from sbatch, so request it there too:
#                   sbatch --gpus-per-task=1 --ntasks-per-node=4 slurm/pretrain.sh GPUS=1 CONFIG=...
#                 srun then binds one GPU per task (--gpus-per-task, CUDA_VISIBLE_DEVICES per task: every rank
#                 uses its cuda:0) and the job runs as with train.device=cuda, so it stops with an error instead of
#                 training on the CPU when the allocation or the torch build has no GPU. Unset: taken from the
#                 allocation (SLURM_GPUS_PER_TASK); none there: a CPU job (gloo).
#   PRECHECK      1: first run a rendezvous check step (every rank: host, local rank, gloo interface, master;
#                 an all-reduce), written to $RUN_DIR/rendezvous/rank<r>.json; training starts only if it passes
#
# Exit codes of `astrom3 pretrain`: 0 done; 75 = preempted (SIGUSR1 from --signal=USR1@90, SIGTERM) after a
# checkpoint -> this script runs `scontrol requeue` and the job restarts later under the same job id and run
# dir (SLURM_RESTART_COUNT counts the restarts); anything else: failed.
#
# Logs: the run directory gets train.log (every rank's warnings and errors, rank 0's progress; appended across
# restarts), slurm_job.log (one line per start: job id, restart count, nodes, log file) and
# slurm-<job id>.out, a symlink to this job's SLURM output. SLURM opens --output before the script runs, so
# #SBATCH lines cannot name the run directory: --output below is relative to the submission directory, which
# always exists; a directory in --output (e.g. `sbatch -o runs/slurm/%x-%j.out`) must exist before the job
# starts or SLURM drops the output silently.
#
#SBATCH --job-name=astrom3-pretrain
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --time=04:00:00
#SBATCH --signal=USR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

set -uo pipefail

log() { echo "[pretrain.sh $(date +%H:%M:%S)] $*"; }
die() { echo "[pretrain.sh] error: $*" >&2; exit 2; }

# ------------------------------------------------------------------------------------------ settings
PASS=()
for arg in "$@"; do
  case "$arg" in
    ASTROM3_ROOT=*|CONFIG=*|STORE=*|OUT_ROOT=*|RUN_DIR=*|PYTHON=*|EXTRA_SETS=*|SRUN_ARGS=*|MAX_REQUEUES=*|\
    PRECHECK=*|GPUS=*)
      export "${arg?}" ;;
    *) PASS+=("$arg") ;;
  esac
done

ROOT=${ASTROM3_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
[ -f "$ROOT/jobs/pretrain.py" ] || die "$ROOT is not the astrom3-hpc repository (no jobs/pretrain.py): submit from \
the repository root or set ASTROM3_ROOT"
cd "$ROOT" || die "cannot cd to $ROOT"

[ -n "${SLURM_JOB_ID:-}" ] || die "not inside a SLURM job: submit with sbatch (for a local run use \
torchrun/mpiexec with jobs/pretrain.py)"
JOB_KEY=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}
JOB_KEY=${JOB_KEY:-$SLURM_JOB_ID}

CONFIG=${CONFIG-configs/demo.yaml}
STORE=${STORE-data/synthetic.zarr}
OUT_ROOT=${OUT_ROOT:-runs/slurm}
RUN_DIR=${RUN_DIR:-$OUT_ROOT/pretrain-$JOB_KEY}
MAX_REQUEUES=${MAX_REQUEUES:-20}
# Checked before the run: a typo failed only the test after the first preemption, and then requeued without end.
case "$MAX_REQUEUES" in ''|*[!0-9]*) die "MAX_REQUEUES=$MAX_REQUEUES: expected a number of requeues" ;; esac
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
RESTART=${SLURM_RESTART_COUNT:-0}

[ -z "$CONFIG" ] || [ -f "$CONFIG" ] || die "config $CONFIG not found (CONFIG=...)"
if [ -n "$STORE" ] && [ ! -e "$STORE" ]; then
  die "store $STORE not found: build it first, e.g. '$PYTHON -m astrom3_hpc.cli ingest synthetic --out $STORE' \
(or pass STORE=path/to/store.zarr)"
fi

ARGS=(--run-dir "$RUN_DIR")
[ -z "$CONFIG" ] || ARGS+=(--config "$CONFIG")
[ -z "$STORE" ] || ARGS+=(--store "$STORE")
SETS=()
# shellcheck disable=SC2206
[ -z "${EXTRA_SETS:-}" ] || SETS+=($EXTRA_SETS)

# GPUs: asked for (GPUS=N) or present in the allocation -> one bound GPU set per task, and a job that refuses
# to fall back to the CPU; asked for but not allocated -> an error now rather than a silent CPU run.
# SLURM exports a typed request (--gpus-per-task=a100:1) as SLURM_GPUS_PER_TASK=a100:1: its count is what
# srun needs (the allocation already fixes the type); a GPUS= given by hand is checked as typed.
[ -n "${GPUS:-}" ] || { GPUS=${SLURM_GPUS_PER_TASK:-}; GPUS=${GPUS##*:}; }
if [ -n "$GPUS" ] && [ "$GPUS" != 0 ]; then
  case "$GPUS" in *[!0-9]*) die "GPUS=$GPUS: expected a number of GPUs per task" ;; esac
  if [ -z "${SLURM_GPUS_PER_TASK:-}${SLURM_GPUS_ON_NODE:-}${SLURM_JOB_GPUS:-}${SLURM_STEP_GPUS:-}" ]; then
    die "GPUS=$GPUS but this job was allocated no GPU: submit with sbatch --gpus-per-task=$GPUS ..."
  fi
  SRUN_GPU=(--gpus-per-task "$GPUS")
  export ASTROM3_TRAIN_DEVICE=cuda  # = train.device=cuda: refuse to train on the CPU
else
  SRUN_GPU=()
fi
[ ${#SETS[@]} -eq 0 ] || ARGS+=(--set "${SETS[@]}")

# ------------------------------------------------------------------------------------------ environment
# Variables of another launcher must not leak in: the ranks are srun's tasks (astrom3_hpc/distributed/env.py).
unset RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE LOCAL_SIZE ASTROM3_DIST_LAUNCHER TORCHELASTIC_RUN_ID
# The interpreter's bin directory first on PATH: its console scripts, and the ninja DeepSpeed's JIT cache was
# built with (another ninja on PATH rebuilds the cached ops, minutes, and invalidates them for everyone).
case "$PYTHON" in */*) PATH="$(cd "$(dirname "$PYTHON")" && pwd):$PATH"; export PATH ;; esac
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
export PYTHONUNBUFFERED=1

# Loopback settings inherited from the submitting shell (test harnesses, laptops) can never work across hosts.
if [ "${SLURM_JOB_NUM_NODES:-1}" -gt 1 ]; then
  if [ "${GLOO_SOCKET_IFNAME:-}" = lo ]; then
    log "warning: GLOO_SOCKET_IFNAME=lo inherited in a ${SLURM_JOB_NUM_NODES}-node job: unset (chosen per host)"
    unset GLOO_SOCKET_IFNAME
  fi
  case "${MASTER_ADDR:-}" in
    127.*|localhost) log "warning: MASTER_ADDR=$MASTER_ADDR inherited in a multi-node job: unset"; unset MASTER_ADDR ;;
  esac
fi

# A one-rank job has no peer to agree on a rendezvous with: without MASTER_* distributed/env.py takes a free port,
# where one inherited from the submitting shell would collide with any other one-rank job on the node using it.
if [ "${SLURM_NTASKS:-1}" -le 1 ]; then
  [ -z "${MASTER_PORT:-}" ] || log "one-rank job: inherited MASTER_PORT=$MASTER_PORT ignored (a free port is used)"
  unset MASTER_PORT MASTER_ADDR
fi

# Rendezvous: dist/env.py takes the first host of the step's node list as MASTER_ADDR. Where node names do not
# resolve (NodeAddr-only clusters), use that node's NodeAddr from the controller instead.
if [ -z "${MASTER_ADDR:-}" ] && [ -n "${SLURM_JOB_NODELIST:-}" ]; then
  first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" 2>/dev/null | head -n 1)
  if [ -n "$first" ] && ! getent hosts "$first" >/dev/null 2>&1; then
    addr=$(scontrol show node "$first" 2>/dev/null | tr ' ' '\n' | sed -n 's/^NodeAddr=//p' | head -n 1)
    if [ -n "$addr" ]; then
      export MASTER_ADDR=$addr
      log "node name $first does not resolve: MASTER_ADDR=$addr (its NodeAddr)"
    fi
  fi
fi

# SIGTERM (preemption, time limit) also reaches this shell: survive it so the exit code of srun decides.
trap 'log "SIGTERM received: waiting for the ranks to checkpoint"' TERM

mkdir -p "$RUN_DIR"
# StdOut is alone on its line of scontrol's output and may hold spaces (a submission directory "my runs"): read
# the rest of that line, not space-separated fields.
STDOUT=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/^[[:space:]]*StdOut=//p' | head -n 1)
echo "$(date +%Y-%m-%dT%H:%M:%S) job=$JOB_KEY restart=$RESTART nodes=${SLURM_JOB_NODELIST:-?} \
ntasks=${SLURM_NTASKS:-?} log=${STDOUT:-?}" >> "$RUN_DIR/slurm_job.log"
case "$STDOUT" in
  /*) [ -e "$STDOUT" ] && ln -sfn "$STDOUT" "$RUN_DIR/slurm-$JOB_KEY.out" ;;
esac
log "job $JOB_KEY (restart $RESTART) on ${SLURM_JOB_NODELIST:-?}: ${SLURM_NTASKS:-?} tasks x \
${SLURM_CPUS_PER_TASK:-1} cpus${GPUS:+ x $GPUS GPU(s)}"
log "run dir $RUN_DIR  config ${CONFIG:-<defaults>}  store ${STORE:-<from config>}  python $PYTHON"

# ------------------------------------------------------------------------------------------ run
SRUN=(srun --unbuffered "${SRUN_GPU[@]}")
[ -z "${SLURM_CPUS_PER_TASK:-}" ] || SRUN+=(--cpus-per-task "$SLURM_CPUS_PER_TASK")
# shellcheck disable=SC2206
[ -z "${SRUN_ARGS:-}" ] || SRUN+=($SRUN_ARGS)
if [ "${PRECHECK:-0}" = 1 ]; then
  log "rendezvous check: ${SRUN[*]} $PYTHON -m astrom3_hpc.cli launch check-rendezvous"
  if ! "${SRUN[@]}" "$PYTHON" -m astrom3_hpc.cli launch check-rendezvous --out "$RUN_DIR/rendezvous" \
      --timeout 120; then
    die "rendezvous check failed (see above and $RUN_DIR/rendezvous/): not starting the training"
  fi
fi
log "${SRUN[*]} $PYTHON jobs/pretrain.py ${ARGS[*]} ${PASS[*]}"
"${SRUN[@]}" "$PYTHON" jobs/pretrain.py "${ARGS[@]}" "${PASS[@]}"
rc=$?
log "srun exited with $rc"

if [ "$rc" -eq 75 ]; then
  if [ "$RESTART" -ge "$MAX_REQUEUES" ]; then
    log "preempted, but already restarted $RESTART times (MAX_REQUEUES=$MAX_REQUEUES): not requeueing"
    exit 75
  fi
  log "preempted: checkpoint written; requeueing job $JOB_KEY (restart $((RESTART + 1)))"
  if scontrol requeue "$JOB_KEY"; then
    exit 0
  fi
  log "scontrol requeue failed: resubmit by hand with RUN_DIR=$RUN_DIR to resume"
  exit 75
fi
exit "$rc"
