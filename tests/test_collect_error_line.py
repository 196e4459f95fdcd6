"""`astrom3 collect` quotes a failed task's own error, not srun's closing line (issue 12)."""

from __future__ import annotations

from astrom3_hpc.results.collect import _last_line


def test_the_task_error_is_quoted_not_the_launcher_line(tmp_path):
    log = tmp_path / "sweep_12_3.err"
    log.write_text(
        "15:00:01 INFO loaded 40 pretrained tensors\n"
        "astrom3 finetune: error: runs/pre: weights were trained with split seed 42 (test leak)\n"
        "srun: error: node1: task 0: Exited with exit code 2\n"
        "srun: Terminating StepId=12.0\n")
    assert _last_line(log) == "astrom3 finetune: error: runs/pre: weights were trained with split seed 42 (test leak)"


def test_a_traceback_is_quoted_by_its_exception_line(tmp_path):
    log = tmp_path / "t.err"
    log.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                   "RuntimeError: CUDA out of memory\n"
                   "slurmstepd: error: *** STEP 12.0 ON node1 CANCELLED ***\n"
                   "srun: error: node1: task 0: Exited with exit code 1\n")
    assert _last_line(log) == "RuntimeError: CUDA out of memory"


def test_without_an_error_the_last_own_line_is_quoted(tmp_path):
    log = tmp_path / "t.out"
    log.write_text("epoch 3: train loss 1.2\nsrun: error: node1: task 0: Exited with exit code 1\n")
    assert _last_line(log) == "epoch 3: train loss 1.2"
