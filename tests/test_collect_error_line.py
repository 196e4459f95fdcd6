"""`astrom3 collect` quotes a failed task's own error: not srun's closing line (issue 12), not another task's log
(a Submitit array position taken for a task index), not an older sweep's log of the same index."""

from __future__ import annotations

import io
import os

from astrom3_hpc.core.atomic import write_json, write_text
from astrom3_hpc.orchestration.sweep import Sweep, make_tasks
from astrom3_hpc.results.collect import _last_line, collect


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


def _failed_sweep(root):
    """Four tasks (photo, full/sub10, clip/scratch), none with metrics.json."""
    sw = Sweep(root, make_tasks(seeds=(42,), modes=("photo",), subsets=("full", "sub10"), inits=("clip", "scratch")))
    sw.save()
    return sw


def _run_dir(sw, task, slurm=None):
    d = sw.run_dir(task)
    write_text(d / "config.yaml", f"data:\n  subset: {task.subset}\n  seed: {task.seed}\nfinetune:\n  mode: photo\n")
    write_json(d / "run.json", {"kind": "finetune", **(slurm or {})})


def _failures(sw):
    res = collect(sw.root, stream=io.StringIO(), plot=False)
    return {f["index"]: f for f in res["failures"] if f["kind"] == "finetune"}


def test_a_submitit_task_is_shown_its_own_log_not_the_one_at_its_array_position(tmp_path):
    """Catches a --resume-missing Submitit array over tasks [1, 3]: task 3 runs at array position 1 and records
    SLURM_ARRAY_TASK_ID=1, which was read as task index 1, so task 3 was shown task 1's log and error."""
    sw = _failed_sweep(tmp_path / "sw")
    write_json(sw.root / "jobs.json", {"job_ids": ["900"], "submissions": [{"backend": "submitit", "finetune": [
        {"seed": 42, "array_job_id": "900", "tasks": [1, 3], "array_index_to_task": {"0": 1, "1": 3}}]}]})
    for t in sw.tasks:
        pos = {1: "0", 3: "1"}.get(t.index)
        _run_dir(sw, t, {"SLURM_ARRAY_JOB_ID": "900", "SLURM_ARRAY_TASK_ID": pos} if pos else None)
    write_text(sw.root / "logs" / "ft_900_3.err", "RuntimeError: task three's own error\n")
    write_text(sw.root / "logs" / "ft_900_1.err", "ValueError: task one's error\n")
    os.utime(sw.root / "logs" / "ft_900_1.err", (2e9, 2e9))  # newer: it would be the one quoted
    f = _failures(sw)
    assert [os.path.basename(p) for p in f[3]["logs"]] == ["ft_900_3.err"]
    assert f[3]["last_log_line"] == "RuntimeError: task three's own error"
    assert [os.path.basename(p) for p in f[1]["logs"]] == ["ft_900_1.err"]


def test_a_task_that_never_ran_under_the_recorded_jobs_gets_no_older_log(tmp_path):
    """Catches the fallback to the task index alone being decided per task: task 1 never started under job 777
    (the one jobs.json lists, whose logs exist for task 0), and was shown an older sweep's ft_555_1.err. The
    fallback is for a sweep where no id of jobs.json names any log file."""
    sw = _failed_sweep(tmp_path / "sw")
    write_json(sw.root / "jobs.json", {"job_ids": ["777"]})
    for t in sw.tasks[:2]:
        _run_dir(sw, t)
    write_text(sw.root / "logs" / "ft_777_0.err", "ValueError: current failure\n")
    write_text(sw.root / "logs" / "ft_555_1.err", "RuntimeError: from an older sweep's job\n")
    f = _failures(sw)
    assert [os.path.basename(p) for p in f[0]["logs"]] == ["ft_777_0.err"]
    assert f[1]["logs"] == [] and f[1]["last_log_line"] is None
    # The documented fallback stays: once no id of jobs.json names any log file, the index alone decides.
    (sw.root / "logs" / "ft_777_0.err").unlink()
    assert [os.path.basename(p) for p in _failures(sw)[1]["logs"]] == ["ft_555_1.err"]

