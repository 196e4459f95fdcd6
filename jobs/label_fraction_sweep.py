#!/usr/bin/env python
"""The paper's label-fraction sweep from Python, through Submitit: per split seed one multi-task pretraining job
and ONE fine-tuning job array (modes x label fractions x inits) that depends on it.

    python jobs/label_fraction_sweep.py runs/sweep --config configs/paper_finetune.yaml \\
        --pretrain-config configs/paper.yaml --store data/astrom3.zarr          # 5 seeds, 32 tasks each
    python jobs/label_fraction_sweep.py runs/small --seeds 42 --modes photo --subsets full,sub10 --wait
    python jobs/label_fraction_sweep.py runs/sweep --resume-missing             # only tasks without metrics.json
    python jobs/label_fraction_sweep.py runs/dbg --cluster local ...             # no SLURM: local processes

Same as `astrom3 launch sweep ...` (see --help and docs/slurm.md); the sbatch route is slurm/submit_sweep.sh.
"""
import sys

from astrom3_hpc.cli import main

if __name__ == "__main__":
    sys.exit(main(["launch", "sweep", *sys.argv[1:]]))
