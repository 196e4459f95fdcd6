#!/bin/bash
# The GPU check: one command on a CUDA machine (< 8 minutes on an H100/H200), one PASS/FAIL line per item.
#
#   bash benchmarks/gpu_check.sh                 # CUDA: venv with a CUDA torch, 20,000-object store, batch 512
#   bash benchmarks/gpu_check.sh --dry-run       # the same script on CPU with tiny sizes (no venv, no CUDA; CI)
#   bash benchmarks/gpu_check.sh --out /scratch/gpu-check
#
# Settings (environment):
#   GPU_PYTHON       an interpreter that already has a CUDA torch and the project's requirements (a site or
#                    module Python, a machine with no network): used as it is, no venv is made, nothing installed
#   GPU_VENV         venv to use or create              default: <repo>/.venv-gpu (reused when it exists and
#                    imports torch; removed again when its install fails)
#   TORCH_INDEX_URL  where the CUDA torch wheel comes from  default: https://download.pytorch.org/whl/cu128
#   TORCH_VERSION    default: 2.13.0 (the version the project pins)
#   PYTHON           interpreter for --dry-run          default: <repo>/.venv/bin/python, else python3
#
# What it runs and prints: benchmarks/gpu_check.py (items, sizes, tolerances in its docstring). Exit code 1 when
# an item failed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out|--out=*)
      # A missing value (or the next option, e.g. --out --dry-run) is a usage error, not a folder.
      if [ "$1" = --out ]; then OUT=${2:-}; [ $# -lt 2 ] || shift; else OUT=${1#--out=}; fi
      if [ -z "$OUT" ] || [ "${OUT#-}" != "$OUT" ]; then echo "gpu_check.sh: --out needs a directory" >&2; exit 2; fi
      ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

# One line naming what the interpreter cannot import, instead of gpu_check.py's traceback half-way through.
missing() {
  local out rc
  out=$(PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$1" -c 'import torch, deepspeed, astrom3_hpc.data.store' 2>&1)
  rc=$?
  [ "$rc" = 0 ] || { out=$(printf '%s\n' "$out" | grep -v '^ ' | tail -n 1); echo "${out:-exit $rc}"; }
}

if [ "$DRY" = 1 ]; then
  if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
  fi
  OUT=${OUT:-$(mktemp -d -t gpu-check-dry.XXXXXX)}
  export CUDA_VISIBLE_DEVICES="" DS_ACCELERATOR=cpu GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  why=$(missing "$PYTHON")
  if [ -n "$why" ]; then
    echo "FAIL python: $PYTHON cannot run the check ($why): make the project's .venv or set PYTHON"; exit 1
  fi
  EXTRA=(--dry-run)
elif [ -n "${GPU_PYTHON:-}" ]; then
  PYTHON=$(command -v "$GPU_PYTHON") || { echo "FAIL venv: GPU_PYTHON=$GPU_PYTHON is not an interpreter"; exit 1; }
  why=$(missing "$PYTHON")
  [ -z "$why" ] || { echo "FAIL venv: GPU_PYTHON=$GPU_PYTHON cannot run the check ($why)"; exit 1; }
  OUT=${OUT:-$ROOT/runs/gpu-check}
  export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$OUT/torch_extensions}
  EXTRA=()
else
  VENV=${GPU_VENV:-$ROOT/.venv-gpu}
  if [ ! -x "$VENV/bin/python" ]; then
    # Only a venv this run made is removed again on failure: never a folder that was there before.
    if [ -e "$VENV" ] && [ -n "$(ls -A "$VENV" 2>/dev/null)" ]; then
      echo "FAIL venv: $VENV exists and is not a venv (no bin/python): remove it or set GPU_VENV"; exit 1
    fi
    echo "[gpu_check] creating $VENV (torch ${TORCH_VERSION:-2.13.0}" \
         "from ${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128})"
    python3 -m venv "$VENV" || { rm -rf "$VENV"; echo "FAIL venv: python3 -m venv $VENV"; exit 1; }
    # A venv left behind by a failed install would be reused next time, without torch.
    "$VENV/bin/pip" install -q "torch==${TORCH_VERSION:-2.13.0}" \
        --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}" \
      || { rm -rf "$VENV"; echo "FAIL venv: CUDA torch did not install (removed $VENV)"; exit 1; }
    # The project's other requirements (torch is already satisfied by the CUDA wheel).
    "$VENV/bin/pip" install -q "$ROOT" "torch==${TORCH_VERSION:-2.13.0}" \
      || { rm -rf "$VENV"; echo "FAIL venv: project requirements did not install (removed $VENV)"; exit 1; }
  fi
  why=$(missing "$VENV/bin/python")
  if [ -n "$why" ]; then
    echo "FAIL venv: $VENV cannot run the check ($why): remove it (rm -rf $VENV) to have it made again"; exit 1
  fi
  PYTHON=$VENV/bin/python
  OUT=${OUT:-$ROOT/runs/gpu-check}
  export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$VENV/torch_extensions}
  EXTRA=()
fi

# The interpreter's bin first: its torchrun and ninja.
PATH="$(dirname "$PYTHON"):$PATH"
export PATH PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE MASTER_ADDR MASTER_PORT ASTROM3_DIST_LAUNCHER
echo "[gpu_check] $PYTHON benchmarks/gpu_check.py --out $OUT ${EXTRA[*]}"
exec "$PYTHON" "$ROOT/benchmarks/gpu_check.py" --out "$OUT" "${EXTRA[@]}"
