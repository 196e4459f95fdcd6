"""The SLURM job suite on a real (local) SLURM cluster: slurm/pretrain.sh under srun, the fine-tuning array that
depends on it, submit_sweep.sh and jobs.json, the collector over the result, preemption -> checkpoint -> requeue ->
exact resume, and the same sweep through Submitit (astrom3_hpc.orchestration.submitit_launch) with Submitit's own
requeue.

Everything runs the real Trainer on the tiny synthetic store with configs/test.yaml and FAST-like overrides. The
node has 2 CPUs: a 2-task pretraining occupies it, so jobs run one after another (~5-6 min for the file on a busy
2-core machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dist_helpers import child_env

from astrom3_hpc.results import collect

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TEST_CFG = str(ROOT / "configs" / "test.yaml")
FT_SETS = ["train.epochs=2", "train.max_steps_per_epoch=4", "train.log_every_steps=1"]
# 16 pretraining steps: long enough to be signalled mid-run, a few seconds of compute.
PT_SETS = ["train.epochs=2", "train.max_steps_per_epoch=8", "train.log_every_steps=1"]
SEED = 42


# ------------------------------------------------------------------------------------------------ helpers

def job_env() -> dict[str, str]:
    """Environment for sbatch (jobs inherit it): no launcher variables, the venv's bin first, gloo on lo."""
    return child_env({"PYTHON": PY})


def read_steps(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "steps.jsonl").read_text().splitlines()]


def read_epochs(run: Path) -> list[dict]:
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("seconds", None)
    return rows


def final_module(run: Path) -> dict:
    tag = json.loads((run / "checkpoints" / "latest.json").read_text())["tag"]
    return torch.load(run / "checkpoints" / tag / "mp_rank_00_model_states.pt", weights_only=False)["module"]


def assert_same_run(a: Path, b: Path) -> None:
    """Same per-step losses, per-epoch metrics, final and best weights (bitwise: deterministic CPU runs)."""
    assert read_steps(a) == read_steps(b)
    assert read_epochs(a) == read_epochs(b)
    wa, wb = final_module(a), final_module(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ba = torch.load(a / "best_model.pt", weights_only=False)["state_dict"]
    bb = torch.load(b / "best_model.pt", weights_only=False)["state_dict"]
    for k in ba:
        assert torch.equal(ba[k], bb[k]), k
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    ma.pop("finished"), mb.pop("finished")
    assert ma == mb


def wait_for_steps(run: Path, n: int, timeout: float, what: str, cluster, job_id: str) -> None:
    deadline = time.monotonic() + timeout
    f = run / "steps.jsonl"
    while time.monotonic() < deadline:
        if f.exists() and len(f.read_text().splitlines()) >= n:
            return
        if not cluster.in_queue(job_id):
            raise AssertionError(f"{what}: job {job_id} left the queue before step {n}")
        time.sleep(0.1)
    raise AssertionError(f"{what}: fewer than {n} steps after {timeout}s")


def sacct_history(cluster, job_id: str) -> list[str]:
    """Every incarnation's state of a job (sacct -D: a requeued job shows REQUEUED, then its final state)."""
    out = cluster.run(["sacct", "-D", "-X", "-n", "-P", "-j", str(job_id), "-o", "JobID,State"], check=False).stdout
    return [ln.split("|")[1].split()[0] for ln in out.splitlines() if "|" in ln and ln.split("|")[0] == str(job_id)]


def wait_or_cancel(cluster, job_id: str, timeout: float) -> str:
    """cluster.wait(), but a job still running when waiting fails (timeout, test interrupted) is cancelled: the
    cluster is shared with other tests and sessions."""
    try:
        return cluster.wait(job_id, timeout=timeout)
    except BaseException:
        cluster.run(["scancel", str(job_id)], check=False)
        raise


def corrupt_checkpoint(run_dir: Path) -> None:
    """A run dir whose checkpoint pointer names a checkpoint that does not exist: resuming fails."""
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "latest.json").write_text(json.dumps({"tag": "step999", "step": 999}))


def tail(p: Path, n: int = 3000) -> str:
    try:
        return p.read_text(errors="replace")[-n:]
    except OSError as e:
        return f"<{p}: {e}>"


# ------------------------------------------------------------------------------------------------ unit tests

def test_array_spec_compacts_indices():
    from astrom3_hpc.orchestration.submission import array_spec

    assert array_spec([3, 7, 12], 4) == "3,7,12%4"
    assert array_spec([0, 1, 2, 3, 5, 6, 9]) == "0-3,5-6,9"
    assert array_spec(range(32, 64), 8) == "32-63%8"
    with pytest.raises(ValueError):
        array_spec([])


def test_cli_parsers_register_sweep_and_launch(tmp_path, capsys):
    from astrom3_hpc.cli import main

    assert main(["sweep", "create", str(tmp_path / "sw"), "--seeds", "42,0", "--modes", "photo", "--modes", "meta",
                        "--subsets", "full", "--inits", "clip,scratch"]) == 0
    from astrom3_hpc.orchestration.sweep import Sweep

    sw = Sweep.load(tmp_path / "sw")
    assert len(sw.tasks) == 2 * 2 * 1 * 2 and sw.seeds == [0, 42]
    assert main(["sweep", "create", str(tmp_path / "sw")]) == 2  # exists: refused
    assert main(["sweep", "status", str(tmp_path / "sw")]) == 0
    assert "0/8 tasks complete" in capsys.readouterr().out


@pytest.mark.parametrize("signame", ["SIGUSR1", "SIGTERM"])
def test_a_job_signal_before_any_handler_of_the_command_still_requeues(signame, monkeypatch, capsys):
    """Catches the first seconds of a job (imports, DeepSpeed's set-up, before the trainer's or the baseline's own
    handler) and its last ones: a signal there killed it (SLURM failed the task) instead of exit 75 (requeue)."""
    import os
    import signal

    from astrom3_hpc.train.command import run_command

    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    before = signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGTERM)
    done = []

    def setting_up():
        os.kill(os.getpid(), getattr(signal, signame))
        done.append("after the signal")  # never reached: the handler raised where the job was
        return 0

    assert run_command("finetune", setting_up) == 75 and not done
    assert f"astrom3 finetune: finetune stopped by {signame} before it finished" in capsys.readouterr().err
    assert (signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGTERM)) == before


def test_the_command_starts_before_the_error_classes_are_imported(monkeypatch, capsys):
    """Catches run_command importing the data layer (for its error classes: a second or two) before the command's
    own code and its signal handler: Ctrl-C there was a traceback and a job signal killed the job."""
    from astrom3_hpc.train import command

    calls = []
    monkeypatch.setattr(command, "expected_errors", lambda: calls.append("imported") or (ValueError,))

    def finetune():
        assert calls == []
        raise ValueError("bad input, named")

    assert command.run_command("finetune", finetune) == 2 and calls == ["imported"]
    assert "astrom3 finetune: error: bad input, named" in capsys.readouterr().err


def test_preemption_takes_submitits_signal_inside_submitit_jobs(monkeypatch):
    import signal

    from astrom3_hpc.train.preempt import Preemption

    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    p = Preemption()
    assert set(p.signals) == {signal.SIGUSR1, signal.SIGTERM}
    p.restore()
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    before = signal.getsignal(signal.SIGUSR2)
    p = Preemption()
    try:
        assert set(p.signals) == {signal.SIGUSR1, signal.SIGTERM, signal.SIGUSR2}
        signal.raise_signal(signal.SIGUSR2)
        assert p.requested and p.signal_name == "SIGUSR2"
    finally:
        p.restore()
    assert signal.getsignal(signal.SIGUSR2) == before


# ------------------------------------------------------------------------------------------------ sbatch sweep

@pytest.fixture(scope="module")
def sbatch_sweep(slurm_cluster, tiny_store, tmp_path_factory):
    """submit_sweep.sh on one seed: pretraining (2 srun tasks) + an array of 4 fine-tuning and 2 baseline tasks
    depending on it, one of which is broken on purpose (corrupt checkpoint in its run dir)."""
    root = tmp_path_factory.mktemp("sbatch") / "sweep"
    env = job_env()
    create = subprocess.run(
        [PY, "-m", "astrom3_hpc.cli", "sweep", "create", str(root), "--seeds", str(SEED), "--modes", "photo",
         "--subsets", "full,sub50", "--inits", "clip,scratch,baseline", "--config", TEST_CFG,
         "--pretrain-config", TEST_CFG, "--store", str(tiny_store),
         "--set", *FT_SETS, "--pretrain-set", *PT_SETS], env=env, capture_output=True, text=True, timeout=120)
    assert create.returncode == 0, create.stderr
    from astrom3_hpc.orchestration.sweep import Sweep

    sw = Sweep.load(root)
    bad = next(t for t in sw.tasks if t.subset == "sub50" and t.init == "scratch")
    corrupt_checkpoint(sw.run_dir(bad))

    t0 = time.monotonic()
    sub = subprocess.run(["bash", str(ROOT / "slurm" / "submit_sweep.sh"), str(root), "--parallel", "2"],
                         env=slurm_cluster.full_env(env), capture_output=True, text=True, timeout=120,
                         cwd=root.parent)  # not the repository: the script finds it
    assert sub.returncode == 0, sub.stdout + sub.stderr
    jobs = json.loads((root / "jobs.json").read_text())
    entry = jobs["submissions"][-1]
    pre_id = entry["pretrain"][0]["job_id"]
    arr_id = entry["finetune"][0]["array_job_id"]
    # Right after submission the array waits for the pretraining job.
    reason = slurm_cluster.run(["scontrol", "-o", "show", "job", arr_id], check=False).stdout
    try:
        pre_state = wait_or_cancel(slurm_cluster, pre_id, timeout=300)
    finally:
        arr_state = wait_or_cancel(slurm_cluster, arr_id, timeout=300)
    return SimpleNamespace(root=root, sw=sw, bad=bad, pre_id=pre_id, arr_id=arr_id, pre_state=pre_state,
                           arr_state=arr_state, reason=reason, stdout=sub.stdout, jobs=jobs,
                           seconds=time.monotonic() - t0)


@pytest.mark.slurm
@pytest.mark.timeout(720)
def test_sbatch_sweep_pretraining_then_dependent_array(sbatch_sweep, slurm_cluster):
    s = sbatch_sweep
    logs = s.root / "logs"
    pre = s.sw.pretrain_dir(SEED)
    assert s.pre_state == "COMPLETED", tail(logs / f"pretrain-s{SEED}-{s.pre_id}.out")
    assert f"job {s.pre_id}" in s.stdout and f"array {s.arr_id}" in s.stdout
    assert f"Dependency=afterok:{s.pre_id}" in s.reason, s.reason
    # pretraining: 2 srun tasks, launcher slurm, complete
    m = json.loads((pre / "metrics.json").read_text())
    assert m["kind"] == "pretrain" and m["world_size"] == 2 and m["steps"] == 16
    info = json.loads((pre / "run.json").read_text())
    assert info["launcher"] == "slurm" and info["SLURM_JOB_ID"] == s.pre_id
    assert "restart=0" in (pre / "slurm_job.log").read_text()
    # the array: task index = array index, all tasks ran after pretraining finished, the broken one failed
    states = slurm_cluster.sacct(s.arr_id)
    n = len(s.sw.tasks)
    assert n == 6 and sorted(states) == sorted(f"{s.arr_id}_{i}" for i in range(n)), states
    assert states.pop(f"{s.arr_id}_{s.bad.index}") == "FAILED"
    assert set(states.values()) == {"COMPLETED"}, states
    for t in s.sw.tasks:
        assert (logs / f"ft_{s.arr_id}_{t.index}.out").exists() and (logs / f"ft_{s.arr_id}_{t.index}.err").exists()
        if t is s.bad:
            assert not s.sw.done(t)
            continue
        run = s.sw.run_dir(t)
        mt = json.loads((run / "metrics.json").read_text())
        assert (mt["mode"], mt["subset"], mt["seed"], mt["init"]) == (t.mode, t.subset, t.seed, t.init)
        ri = json.loads((run / "run.json").read_text())
        assert (ri["SLURM_ARRAY_JOB_ID"], ri["SLURM_ARRAY_TASK_ID"]) == (s.arr_id, str(t.index))
        assert ri["started"] >= m["finished"]  # afterok
    assert "error" in (logs / f"ft_{s.arr_id}_{s.bad.index}.err").read_text().lower()
    # jobs.json: both ids, the dependency, the array spec
    fin = s.jobs["submissions"][-1]["finetune"][0]
    assert s.jobs["job_ids"] == [s.pre_id, s.arr_id]
    assert fin["dependency"] == f"afterok:{s.pre_id}" and fin["array"] == "0-5%2" and fin["tasks"] == list(range(n))
    print(f"\nsbatch sweep (pretrain + 6-task array): {s.seconds:.0f} s")


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_collector_keeps_results_and_reports_the_failed_task(sbatch_sweep):
    s = sbatch_sweep
    res = collect.collect(s.root, plot=False)
    assert (s.root / "results" / "results.md").exists() and (s.root / "results" / "results.csv").exists()
    summ = res["summary"]
    assert (summ["tasks"], summ["complete"], summ["failed"], summ["missing"]) == (6, 5, 1, 0), summ
    assert summ["pretrain_complete"] == 1
    (fail,) = res["failures"]
    assert fail["index"] == s.bad.index and fail["status"] == "failed"
    assert f"logs/ft_{s.arr_id}_{s.bad.index}.err" in fail["logs"], fail
    md = (s.root / "results" / "results.md").read_text()
    assert s.bad.run_dir in md or s.bad.name in md
    complete = [r for r in res["runs"] if r["status"] == "complete"]
    assert len(complete) == 5
    # The baseline array tasks: each network group against them on its subset (not the failed one).
    assert sorted((r["subset"], r["init"]) for r in res["against_baseline"]) == [
        ("full", "clip"), ("full", "scratch"), ("sub50", "clip")]
    assert all(r["test"] is not None and r["val"] is not None for r in res["against_baseline"])


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_resume_missing_resubmits_only_incomplete_tasks(sbatch_sweep, slurm_cluster):
    s = sbatch_sweep
    r = subprocess.run(["bash", str(ROOT / "slurm" / "submit_sweep.sh"), str(s.root), "--resume-missing",
                        "--parallel", "3", "--dry-run"], env=slurm_cluster.full_env(job_env()),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("+ sbatch")]
    assert len(lines) == 1 and "finetune_array.sh" in lines[0], r.stdout  # pretraining is complete: skipped
    assert f"--array={s.bad.index}%3" in lines[0] and "--dependency" not in lines[0]


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_pretrain_script_reports_a_missing_store(slurm_cluster, tmp_path):
    job = slurm_cluster.sbatch(["-o", tmp_path / "out.txt", str(ROOT / "slurm" / "pretrain.sh"),
                                f"STORE={tmp_path / 'nope.zarr'}", f"RUN_DIR={tmp_path / 'run'}"],
                               env=job_env(), cwd=ROOT)
    assert slurm_cluster.wait(job, timeout=90) == "FAILED"
    out = (tmp_path / "out.txt").read_text()
    assert f"store {tmp_path / 'nope.zarr'} not found" in out and "ingest synthetic" in out, out


# ------------------------------------------------------------------------------------------------ preemption

@pytest.mark.slurm
@pytest.mark.timeout(600)
def test_preempted_pretraining_requeues_and_resumes_exactly(sbatch_sweep, slurm_cluster, tiny_store, tmp_path):
    """USR1 to the srun tasks mid-run (what --signal=USR1@90 does): every rank checkpoints, exit 75, the script
    requeues the job, the restart resumes in the same run dir and ends where the uninterrupted run ended."""
    run = tmp_path / "pre"
    log = tmp_path / "pretrain-%j.out"
    # The seed as the script's usage line passes it, a --set after the script's own: it once replaced them, STORE
    # and EXTRA_SETS included (the run then trained on the config's store).
    job = slurm_cluster.sbatch(["-o", log, str(ROOT / "slurm" / "pretrain.sh"), f"CONFIG={TEST_CFG}",
                                f"STORE={tiny_store}", f"RUN_DIR={run}", "EXTRA_SETS=" + " ".join(PT_SETS),
                                "--set", f"data.seed={SEED}"], env=job_env(), cwd=ROOT)
    log = tmp_path / f"pretrain-{job}.out"
    try:
        wait_for_steps(run, 2, 300, "pretraining", slurm_cluster, job)
    except BaseException:
        slurm_cluster.run(["scancel", job], check=False)
        raise
    slurm_cluster.scancel(job, "--signal=USR1")  # to every step's tasks, not the batch shell
    state = wait_or_cancel(slurm_cluster, job, timeout=400)
    text = tail(log, 20000)
    assert state == "COMPLETED", text
    assert "stopped at step" in text and "requeueing job" in text and "resumed from step" in text, text
    starts = (run / "slurm_job.log").read_text().splitlines()
    assert [ln.split()[2] for ln in starts] == ["restart=0", "restart=1"], starts
    assert sacct_history(slurm_cluster, job) == ["REQUEUED", "COMPLETED"]
    assert json.loads((run / "metrics.json").read_text())["steps"] == 16
    assert_same_run(run, sbatch_sweep.sw.pretrain_dir(SEED))


# ------------------------------------------------------------------------------------------------ Submitit

@pytest.mark.slurm
@pytest.mark.timeout(600)
def test_submitit_sweep_with_preempted_pretraining(sbatch_sweep, slurm_cluster, tiny_store, tmp_path, monkeypatch):
    """launch_sweep: a 2-task Submitit pretraining job, interrupted (SIGTERM + USR2, as Submitit's own preemption
    test does), requeued through Submitit's checkpoint hook after every rank checkpointed; then ONE array of
    fine-tuning tasks that depended on it. The pretraining ends exactly like the uninterrupted sbatch one."""
    from astrom3_hpc.orchestration import launch

    slurm_cluster.apply_env(monkeypatch)
    for k, v in job_env().items():
        if k in ("PATH", "GLOO_SOCKET_IFNAME", "OMP_NUM_THREADS", "PYTHONUNBUFFERED", "DS_ACCELERATOR"):
            monkeypatch.setenv(k, v)
    sw = launch.create_sweep(tmp_path / "sweep", seeds=[SEED], modes=["photo"], subsets=["full"],
                             finetune_config=TEST_CFG, pretrain_config=TEST_CFG, store=str(tiny_store),
                             sets=FT_SETS, pretrain_sets=PT_SETS)
    t0 = time.monotonic()
    entry = launch.launch_sweep(sw, cluster="slurm", parallel=2)
    pjob = entry["_jobs"]["pretrain"][SEED]
    array = entry["_jobs"]["finetune"][SEED]
    assert len(array) == 2 and len({j.job_id.split("_")[0] for j in array}) == 1  # one array
    pre = sw.pretrain_dir(SEED)
    array_id = array[0].job_id.split("_")[0]
    try:
        wait_for_steps(pre, 2, 300, "submitit pretraining", slurm_cluster, pjob.job_id)
    except BaseException:
        slurm_cluster.run(["scancel", pjob.job_id, array_id], check=False)
        raise
    pjob._interrupt()
    try:
        pstate = wait_or_cancel(slurm_cluster, pjob.job_id, timeout=400)
    finally:
        astate = wait_or_cancel(slurm_cluster, array_id, timeout=400)
    assert pstate == "COMPLETED", tail(sw.root / "logs" / f"pretrain-s{SEED}-{pjob.job_id}.err")
    results = pjob.results()
    assert results[0]["steps"] == 16 and results[0]["world_size"] == 2 and "steps" not in results[1]
    assert [r["rank"] for r in results] == [0, 1] and results[1]["master_addr"] == results[0]["master_addr"]
    assert sacct_history(slurm_cluster, pjob.job_id) == ["REQUEUED", "COMPLETED"]
    err = (sw.root / "logs" / f"pretrain-s{SEED}-{pjob.job_id}.err").read_text()
    assert "requeueing through Submitit" in err and "resumed from step" in err, err[-3000:]
    info = json.loads((pre / "run.json").read_text())
    assert info["launcher"] == "submitit" and info["world_size"] == 2
    assert_same_run(pre, sbatch_sweep.sw.pretrain_dir(SEED))

    assert astate == "COMPLETED"
    got = sorted((j.result()["index"], j.result()["run_dir"]) for j in array)
    assert got == [(t.index, t.run_dir) for t in sw.tasks]
    jobs = json.loads((sw.root / "jobs.json").read_text())
    fin = jobs["submissions"][-1]["finetune"][0]
    assert fin["dependency"] == f"afterok:{pjob.job_id}" and jobs["job_ids"] == [pjob.job_id, array_id]
    for t in sw.tasks:
        assert sw.done(t)
        assert (sw.root / "logs" / f"ft_{array_id}_{t.index}.out").is_file()  # symlink into submitit/
    res = collect.collect(sw.root, plot=False)
    assert res["summary"]["complete"] == 2 and not res["failures"]
    print(f"\nsubmitit sweep (preempted pretraining + 2-task array): {time.monotonic() - t0:.0f} s")
