#!/usr/bin/env python
"""One task of a fine-tuning sweep: what each SLURM array task runs (slurm/finetune_array.sh).

    python jobs/sweep_task.py runs/sweep 7          # task 7 of runs/sweep/manifest.json
    python jobs/sweep_task.py runs/sweep            # the index from $SLURM_ARRAY_TASK_ID

Exit codes are those of `astrom3 finetune` (0 done, 75 preempted after a checkpoint, 2 bad input); a task whose
run directory already holds metrics.json exits 0 at once. The arguments are parsed in astrom3_hpc.cli.orchestration;
the task runs through astrom3_hpc.orchestration.sweep.run_missing_task.
"""
import sys

from astrom3_hpc.cli.orchestration import sweep_task_main

if __name__ == "__main__":
    sys.exit(sweep_task_main(sys.argv[1:]))
