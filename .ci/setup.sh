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
# pip, quiet, without its "is ignored" chatter; pipefail keeps pip's exit status.
pip_q() { pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored" || true; }; }
want=$(cat setup.cfg setup.py | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "[setup] installing into .venv (about a minute)"
  pip_q --upgrade pip wheel setuptools
  # The CPU wheel first, asked for by its local version label: PyPI's plain torch==2.13.0 for Linux is the
  # CUDA build (its dependencies are cuda-toolkit and nvidia-* wheels, several GB). torch==2.13.0+cpu comes
  # from a local wheel directory or index when pip is configured with one (find-links), else from the PyTorch
  # CPU index; PyPI has no +cpu, so without either this fails instead of pulling CUDA. With torch==2.13.0
  # then satisfied, nothing below replaces it. macOS wheels on PyPI are CPU-only and carry no label.
  # ASTROM3_TORCH overrides the requirement (e.g. "torch==2.13.0" plus PIP_INDEX_URL for a CUDA build).
  torch_req=${ASTROM3_TORCH:-torch==2.13.0+cpu}
  [ "$(uname -s)" = Darwin ] && torch_req=${ASTROM3_TORCH:-torch==2.13.0}
  cpu_index=https://download.pytorch.org/whl/cpu
  if ! pip_q "$torch_req"; then
    echo "[setup] $torch_req is not in pip's configured sources; trying the PyTorch CPU index $cpu_index"
    pip_q --extra-index-url "$cpu_index" "$torch_req" \
      || { echo "[setup] cannot install $torch_req: no local wheel and $cpu_index unreachable (set" \
                "ASTROM3_TORCH to another requirement, or PIP_FIND_LINKS to a directory holding the wheel)" >&2
           exit 1; }
  fi
  pip_q -e '.[test,mpi,science]'
  python -c "import torch, deepspeed, zarr, mpi4py, submitit" >/dev/null 2>&1 \
    || { echo "[setup] install failed: the stack does not import" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
export TORCH_EXTENSIONS_DIR="$PWD/.venv/torch_extensions" DS_ACCELERATOR=cpu
python -m astrom3_hpc.train.warmup > .venv/warmup.log 2>&1 || { cat .venv/warmup.log >&2; exit 1; }
tail -n 1 .venv/warmup.log
