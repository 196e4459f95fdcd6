"""Training jobs: one Trainer (engine, loop, checkpoints, preemption) shared by pretraining and fine-tuning."""
