"""What a sweep submission leaves in jobs.json and prints when it stops half-way or is only a dry run.

A fake ``sbatch`` on PATH (no SLURM needed) accepts the first N calls and refuses the rest, as a controller does
when a later job of the same submission is invalid (a bad array spec, a QOS limit).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from astrom3_hpc.orchestration.sbatch import submit_sweep_sbatch
from astrom3_hpc.orchestration.sweep import Sweep, make_tasks


def _sweep(root: Path, seeds=(42,), inits=("clip", "scratch")) -> Sweep:
    sw = Sweep(root, make_tasks(seeds=seeds, modes=("photo",), subsets=("full",), inits=inits))
    sw.save()
    return sw


def _fake_sbatch(tmp_path: Path, monkeypatch, accept: int, submitit_style: bool = False) -> Path:
    """An `sbatch` answering the first `accept` calls with job ids 10001, 10002, ... and failing after them; no
    `squeue`/`scontrol`, so nothing counts as still queued."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    count = tmp_path / "sbatch_count"
    answer = 'echo "Submitted batch job 1000$n"' if submitit_style else 'echo "1000$n"'
    script = bin_dir / "sbatch"
    script.write_text(f"""#!/bin/bash
n=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}
if [ $n -gt {accept} ]; then echo "sbatch: error: Batch job submission failed: QOSMaxSubmitJobPerUserLimit" >&2
  exit 1; fi
{answer}
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return count


def _recorded(sw: Sweep) -> dict:
    return json.loads((sw.root / "jobs.json").read_text())


def test_sbatch_failing_after_a_pretraining_records_the_submitted_job(tmp_path, monkeypatch):
    """Catches a failed array submission that forgets the pretraining job already submitted before it: jobs.json
    did not list it, the error did not name it, and a retry submitted a second pretraining into pretrain/s42."""
    sw = _sweep(tmp_path / "sw")
    _fake_sbatch(tmp_path, monkeypatch, accept=1)
    with pytest.raises(RuntimeError) as e:
        submit_sweep_sbatch(sw)
    msg = str(e.value)
    assert "QOSMaxSubmitJobPerUserLimit" in msg and "pretraining seed 42: job 10001" in msg
    assert str(sw.root / "jobs.json") in msg
    data = _recorded(sw)
    assert data["job_ids"] == ["10001"]
    (sub,) = data["submissions"]
    assert [p["job_id"] for p in sub["pretrain"]] == ["10001"] and sub["finetune"] == []
    assert "QOSMaxSubmitJobPerUserLimit" in sub["error"]


def test_submitit_failing_after_the_first_seed_records_its_jobs(tmp_path, monkeypatch):
    """The same for the Submitit back end: seed 0's pretraining and array were submitted, seed 42's pretraining
    was refused; jobs.json names the two jobs that will run."""
    from astrom3_hpc.orchestration.submitit_launch import launch_sweep

    sw = _sweep(tmp_path / "sw", seeds=(0, 42))
    _fake_sbatch(tmp_path, monkeypatch, accept=2, submitit_style=True)
    with pytest.raises(RuntimeError) as e:
        launch_sweep(sw, cluster="slurm")
    msg = str(e.value)
    assert "pretraining seed 0: job 10001" in msg and "fine-tuning seed 0: array 10002" in msg
    data = _recorded(sw)
    assert data["job_ids"] == ["10001", "10002"]
    (sub,) = data["submissions"]
    assert [p["seed"] for p in sub["pretrain"]] == [0] and [a["seed"] for a in sub["finetune"]] == [0]
    assert sub["error"].startswith("stopped by:")


@pytest.mark.parametrize("cluster", ["local", "slurm"])
def test_submitit_dry_run_prints_the_plan_and_submits_nothing(tmp_path, monkeypatch, capsys, cluster):
    """Catches `launch sweep --dry-run` submitting for real: the flag never reached launch_sweep, and under
    `--cluster local` the "dry run" started the pretraining and the fine-tuning tasks."""
    from astrom3_hpc.cli import build_parser
    from astrom3_hpc.orchestration import submitit_launch

    def submitted(*a, **k):
        raise AssertionError("a dry run submitted a job")

    monkeypatch.setattr(submitit_launch, "_submit_pretrain", submitted)
    monkeypatch.setattr(submitit_launch, "make_executor", submitted)
    sw = _sweep(tmp_path / "sw", seeds=(0, 42))
    (sw.pretrain_dir(0)).mkdir(parents=True)
    (sw.pretrain_dir(0) / "metrics.json").write_text('{"kind": "pretrain"}')  # seed 0's pretraining is complete
    args = build_parser().parse_args(["launch", "sweep", str(sw.root), "--cluster", cluster, "--dry-run",
                                      "--pretrain-nodes", "2", "--parallel", "3", "--partition", "gpu",
                                      "--sbatch-arg=--qos=high", "--wait"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"{cluster} executor" in out and "nothing is submitted" in out
    assert "pretraining seed 0: already complete" in out
    assert "+ pretraining seed 42: job a3-pretrain-s42, 2 node(s) x 2 tasks" in out and "partition gpu" in out
    assert ("sbatch --qos=high" in out) == (cluster == "slurm")
    ft = [ln for ln in out.splitlines() if ln.startswith("+ fine-tuning")]
    assert len(ft) == 2 and "array a3-ft-s42 of 2 task(s) 2-3 (3 at once" in ft[1]
    assert ("afterok" in ft[1]) == (cluster == "slurm") and "after" not in ft[0]
    assert not (sw.root / "jobs.json").exists() and not (sw.root / "submitit").exists()


def test_sbatch_interrupted_by_ctrl_c_records_the_submitted_job(tmp_path, monkeypatch, capsys):
    """Catches Ctrl-C during a slow sbatch call recording nothing: the partial record caught Exception only, so
    the pretraining already submitted ran on unrecorded and a retry submitted a second one into pretrain/s42."""
    sw = _sweep(tmp_path / "sw")
    count = _fake_sbatch(tmp_path, monkeypatch, accept=5)
    script = tmp_path / "bin" / "sbatch"
    # The second call is "slow" and the user presses Ctrl-C: SIGINT reaches the submitting Python process.
    script.write_text(script.read_text().replace(
        "\nif [ $n", '\nif [ $n -eq 2 ]; then kill -INT $PPID; sleep 5; fi\nif [ $n', 1))
    # A shell without job control (CI's, nohup) starts the suite with SIGINT ignored: Python's own handler here.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            submit_sweep_sbatch(sw)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert count.read_text().strip() == "2"
    data = _recorded(sw)
    assert data["job_ids"] == ["10001"]
    (sub,) = data["submissions"]
    assert [p["job_id"] for p in sub["pretrain"]] == ["10001"] and sub["error"] == "stopped by: KeyboardInterrupt"
    assert "pretraining seed 42: job 10001" in capsys.readouterr().err


def test_submitit_local_interrupted_while_waiting_for_pretraining_records_it(tmp_path, monkeypatch):
    """The same for the Submitit back end with the local executor: Ctrl-C in the wait for seed 42's pretraining
    (before its array is submitted) left jobs.json without the running pretraining process."""
    from types import SimpleNamespace

    from astrom3_hpc.orchestration import submitit_launch

    class Pretraining:
        job_id = "4242"
        paths = SimpleNamespace(stdout=tmp_path / "p.out", stderr=tmp_path / "p.err")

        def results(self):
            raise KeyboardInterrupt

    monkeypatch.setattr(submitit_launch, "_submit_pretrain", lambda *a, **k: Pretraining())
    sw = _sweep(tmp_path / "sw")
    with pytest.raises(KeyboardInterrupt):
        submitit_launch.launch_sweep(sw, cluster="local", pretrain_tasks_per_node=1)
    (sub,) = _recorded(sw)["submissions"]
    assert [p["job_id"] for p in sub["pretrain"]] == ["4242"] and sub["finetune"] == []
    assert sub["error"] == "stopped by: KeyboardInterrupt"


def _record_many(root: str, who: str, n: int, go) -> None:
    from astrom3_hpc.orchestration.submission import record_submission

    go.wait()  # both processes start recording together
    for i in range(n):
        record_submission(root, {"backend": "sbatch", "cluster": "slurm", "pretrain": [],
                                 "finetune": [{"seed": 42, "array_job_id": f"{who}{i:03d}"}]})


def test_two_processes_recording_at_once_keep_every_submission(tmp_path):
    """Catches jobs.json updated read-modify-write without a lock: two submissions recording at the same time each
    appended to what they had read, and about half the records (and their job ids) were lost."""
    import multiprocessing

    root = tmp_path / "sw"
    _sweep(root)
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=_record_many, args=(str(root), who, 100, go)) for who in ("1", "2")]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    data = json.loads((root / "jobs.json").read_text())
    assert len(data["submissions"]) == 200
    assert sorted(data["job_ids"]) == sorted(f"{w}{i:03d}" for w in ("1", "2") for i in range(100))


def _logging_sbatch(tmp_path: Path, monkeypatch, submitit_style: bool = False) -> Path:
    """An `sbatch` that accepts everything (job ids 10001, 10002, ...) and appends to the returned log one line per
    call: its arguments, and for Submitit (`sbatch FILE`) the #SBATCH lines of the file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    count, log = tmp_path / "sbatch_count", tmp_path / "sbatch_log"
    answer = 'echo "Submitted batch job 1000$n"' if submitit_style else 'echo "1000$n"'
    script = bin_dir / "sbatch"
    script.write_text(f"""#!/bin/bash
n=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}
line="$*"; [ -f "${{@: -1}}" ] && line="$line $(grep '^#SBATCH' "${{@: -1}}" | tr '\\n' ' ')"
echo "$line" >> {log}
{answer}
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_sbatch_user_dependency_joins_the_arrays_afterok(tmp_path, monkeypatch):
    """Catches --sbatch-arg=--dependency=... and the array's afterok on its pretraining given as two options, of
    which sbatch keeps one: the array now gets both, comma-joined, once; the pretraining gets the user's."""
    sw = _sweep(tmp_path / "sw")
    log = _logging_sbatch(tmp_path, monkeypatch)
    entry = submit_sweep_sbatch(sw, sbatch_args=["--dependency=afterany:555"])
    pre, ft = log.read_text().splitlines()
    assert [a for a in pre.split() if a.startswith("--dependency")] == ["--dependency=afterany:555"]
    assert [a for a in ft.split() if a.startswith("--dependency")] == ["--dependency=afterok:10001,afterany:555"]
    assert entry["finetune"][0]["dependency"] == "afterok:10001,afterany:555"


def test_submitit_user_dependency_joins_the_arrays_afterok(tmp_path, monkeypatch):
    """The same through Submitit: `slurm_parameters` (from --sbatch-arg) replaced the afterok the array was given,
    so CLIP tasks could start before their pretraining had written its weights."""
    from astrom3_hpc.orchestration.submitit_launch import launch_sweep

    sw = _sweep(tmp_path / "sw")
    log = _logging_sbatch(tmp_path, monkeypatch, submitit_style=True)
    entry = launch_sweep(sw, cluster="slurm", slurm_parameters={"dependency": "afterany:555"})
    pre, ft = log.read_text().splitlines()
    assert "#SBATCH --dependency=afterany:555 " in pre
    assert "#SBATCH --dependency=afterok:10001,afterany:555 " in ft and "--kill-on-invalid-dep=yes" in ft
    assert entry["finetune"][0]["dependency"] == "afterok:10001,afterany:555"


@pytest.mark.parametrize("backend", ["sbatch", "submitit"])
def test_an_or_dependency_is_refused_before_anything_is_submitted(tmp_path, monkeypatch, backend):
    """A '?' (any-of) dependency cannot be joined with the afterok: refused naming it, with nothing submitted."""
    sw = _sweep(tmp_path / "sw")
    log = _logging_sbatch(tmp_path, monkeypatch, submitit_style=backend == "submitit")
    with pytest.raises(ValueError, match=r"--dependency=afterany:1\?afterany:2"):
        if backend == "sbatch":
            submit_sweep_sbatch(sw, sbatch_args=["--dependency=afterany:1?afterany:2"])
        else:
            from astrom3_hpc.orchestration.submitit_launch import launch_sweep

            launch_sweep(sw, cluster="slurm", slurm_parameters={"dependency": "afterany:1?afterany:2"})
    assert not log.exists() and not (sw.root / "jobs.json").exists()


def test_local_executor_runs_parallel_tasks_at_a_time(tmp_path, monkeypatch):
    """Catches --parallel being ignored by the local executor (Submitit's LocalExecutor starts every job of a
    map_array at once): 6 tasks with --parallel 4 now go as chunks [0-3], [4, 5], the second submitted only once
    the first has ended, both recorded in jobs.json."""
    from types import SimpleNamespace

    from astrom3_hpc.orchestration import submitit_launch

    events: list[str] = []

    class Task:
        def __init__(self, index):
            self.index, self.job_id = index, str(5000 + index)
            self.paths = SimpleNamespace(stdout=tmp_path / f"{index}.out", stderr=tmp_path / f"{index}.err")

        def wait(self):
            events.append(f"wait {self.index}")

    class Executor:
        def map_array(self, fn, dirs, indices):
            events.append(f"start {list(indices)}")
            return [Task(i) for i in indices]

    monkeypatch.setattr(submitit_launch, "make_executor", lambda *a, **k: Executor())
    sw = Sweep(tmp_path / "sw", make_tasks(seeds=(42,), modes=("photo",), subsets=("full", "sub10", "sub25"),
                                           inits=("scratch", "baseline")))
    sw.save()
    assert len(sw.tasks) == 6
    entry = submitit_launch.launch_sweep(sw, cluster="local", parallel=4)
    assert events == ["start [0, 1, 2, 3]", "wait 0", "wait 1", "wait 2", "wait 3", "start [4, 5]"]
    assert [a["tasks"] for a in entry["finetune"]] == [[0, 1, 2, 3], [4, 5]]
    assert _recorded(sw)["job_ids"] == ["5000", "5004"]


@pytest.mark.timeout(400)
def test_the_debug_executor_runs_the_tasks_it_waits_for(tiny_store, tmp_path):
    """Catches `launch sweep --cluster debug --wait` failing without running anything (docs/slurm.md: the debug
    executor runs the jobs in-process): Submitit's debug jobs run when first asked, and exception() ran them
    without the job's environment; a pretraining of the default 2 tasks looked for per-task logs a debug job does
    not have (IndexError); and each job after the first built its engine on DeepSpeed's clone of the previous
    job's destroyed world group."""
    import subprocess
    import sys

    from dist_helpers import child_env

    exe = str(Path(sys.executable).parent / "astrom3")
    root = tmp_path / "sw"
    tiny = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=16"]
    subprocess.run([exe, "sweep", "create", str(root), "--seeds", "42", "--modes", "meta", "--subsets", "full",
                    "--inits", "clip", "--store", str(tiny_store), "--set", *tiny, "--pretrain-set", *tiny],
                   check=True, env=child_env(), capture_output=True, text=True)
    r = subprocess.run([exe, "launch", "sweep", str(root), "--cluster", "debug", "--wait"], env=child_env(),
                       capture_output=True, text=True, timeout=360)
    assert r.returncode == 0 and "failed" not in r.stderr, r.stderr[-3000:]
    assert "pretraining runs in this process, on 1 rank (not 1 x 2)" in r.stderr
    assert json.loads((root / "runs" / "meta-full-s42-clip" / "metrics.json").read_text())["init"] == "clip"
