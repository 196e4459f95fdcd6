#!/usr/bin/env python
"""Pretraining job entry point, started once per rank by srun/mpiexec/torchrun/Submitit.

    srun python jobs/pretrain.py --config configs/paper.yaml --run-dir runs/pretrain-s42

Everything lives in the package (`astrom3 pretrain --help`); this file only hands over the arguments.
"""
import sys

from astrom3_hpc.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
