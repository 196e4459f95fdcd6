#!/usr/bin/env bash
# Set up a fresh machine for astrom3-hpc: a virtualenv in .venv with the CPU build of torch 2.13.0 (never
# the CUDA wheels), the package with its test and MPI extras, and a warmed DeepSpeed JIT cache.
# Idempotent: a second run with unchanged setup.cfg/setup.py takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.astrom3-installed
want=$(cat setup.cfg setup.py | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "[setup] installing into .venv (about a minute)"
  pip install -q --disable-pip-version-check --upgrade pip wheel setuptools 2>&1 | { grep -v "is ignored" || true; }
  # The CPU wheel first: with torch==2.13.0 satisfied, nothing below pulls a CUDA build.
  pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | { grep -v "is ignored" || true; }
  pip install -q --disable-pip-version-check -e '.[test,mpi,science]' 2>&1 | { grep -v "is ignored" || true; }
  python -c "import torch, deepspeed, zarr, mpi4py, submitit" >/dev/null 2>&1 \
    || { echo "[setup] install failed: the stack does not import" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
export TORCH_EXTENSIONS_DIR="$PWD/.venv/torch_extensions" DS_ACCELERATOR=cpu
python -m astrom3_hpc.train.warmup > .venv/warmup.log 2>&1 || { cat .venv/warmup.log >&2; exit 1; }
tail -n 1 .venv/warmup.log
