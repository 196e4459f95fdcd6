#!/bin/bash
# Submit the paper's fine-tuning sweep: per split seed one pretraining job (slurm/pretrain.sh) and one array of
# fine-tuning tasks (slurm/finetune_array.sh) with --dependency=afterok on that seed's pretraining.
# Run it on a login node (it calls sbatch; it is not itself a batch script).
#
#   slurm/submit_sweep.sh runs/sweep --config configs/paper_finetune.yaml --pretrain-config configs/paper.yaml \
#       --store data/astrom3.zarr                         # 5 seeds x (pretrain + 4 modes x 4 subsets x 2 inits)
#   slurm/submit_sweep.sh runs/small --seeds 42 --modes photo --subsets full,sub10 --store data/synthetic.zarr
#   slurm/submit_sweep.sh runs/sweep --resume-missing     # only tasks without metrics.json (e.g. --array=3,7,12%4)
#   slurm/submit_sweep.sh runs/sweep --dry-run            # print the sbatch commands
#
# The manifest (<sweep>/manifest.json) is created on the first call; later calls reuse it. Job ids are printed
# and appended to <sweep>/jobs.json; logs go to <sweep>/logs/ (pretrain-s<seed>-<job>.out, ft_<array>_<task>.out
# and .err). Resources: --parallel P (array %P), --pretrain-nodes, --pretrain-tasks-per-node, --cpus-per-task,
# --partition, --account, --pretrain-time/--finetune-time MIN, --sbatch-arg=--qos=... (see --help).
# Progress: `astrom3 sweep status runs/sweep`; results: `astrom3 collect runs/sweep`.
#
# This is `astrom3 sweep submit --backend sbatch`. Variables: PYTHON (default <repo>/.venv/bin/python, else
# python3), ASTROM3_ROOT (the repository; default: this script's parent directory).
set -euo pipefail
ROOT=${ASTROM3_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
export ASTROM3_ROOT=$ROOT
case "${1:-}" in
  ""|-h|--help) exec "$PYTHON" -m astrom3_hpc.cli sweep submit --help ;;
esac
exec "$PYTHON" -m astrom3_hpc.cli sweep submit --backend sbatch "$@"
