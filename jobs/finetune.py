#!/usr/bin/env python
"""Fine-tuning job entry point (one task of a sweep, or a single run).

    python jobs/finetune.py --config configs/paper_finetune.yaml --mode photo --subset sub10 --seed 42 \\
        --init runs/pretrain-s42 --run-dir runs/ft-photo-sub10-s42-clip

See `astrom3 finetune --help`.
"""
import sys

from astrom3_hpc.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
