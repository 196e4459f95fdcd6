"""Multi-node for real: slurm/pretrain.sh, unmodified, on the 2-host namespace cluster (slurm_multihost_cluster:
two fake hosts, each its own network namespace with interface a3s0, node names that do not resolve).

- `sbatch --nodes=2 --ntasks-per-node=1 slurm/pretrain.sh`: rendezvous on the first host's address, the gloo
  interface chosen on every host (a3s0, never loopback), per-node local ranks right (PRECHECK=1 records each
  rank's view);
- the same deterministic tiny run on 1 node x 2 tasks and on 2 nodes x 1 task: same per-step losses and final
  weights (within 1e-6);
- a checkpoint written by a 2-node run resumes on 1 node x 2 tasks (same world size) and completes;
- a 2-node Submitit job launched from Python (astrom3_hpc.orchestration.submitit_launch.launch_pretrain).

All jobs are submitted at once and SLURM packs them onto the two hosts (each host has 2 CPUs; they share the
machine's 2 cores). About 3-4 minutes on a busy 2-core machine.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dist_helpers import child_env

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TEST_CFG = str(ROOT / "configs" / "test.yaml")
PRETRAIN = str(ROOT / "slurm" / "pretrain.sh")
SETS = ["data.seed=42", "train.epochs=2", "train.max_steps_per_epoch=8", "train.log_every_steps=1"]
STOP_AT = 5
TOL = 1e-6

pytestmark = [pytest.mark.slurm]


def multihost_env() -> dict[str, str]:
    """Job environment without the single-host shortcuts: no GLOO_SOCKET_IFNAME=lo, no MASTER_ADDR. (Passed to
    sbatch, but full_env() starts from os.environ: the fixture also removes them from os.environ.)"""
    env = child_env({"PYTHON": PY})
    for k in ("GLOO_SOCKET_IFNAME", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    # The fake hosts' namespaces cannot reach a DNS server: every reverse lookup c10d makes for its log lines
    # waits out the resolver (2 x 5 s per rendezvous). One short attempt instead.
    env["RES_OPTIONS"] = "timeout:1 attempts:1"
    return env


def read_steps(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "steps.jsonl").read_text().splitlines()]


def final_module(run: Path) -> dict:
    tag = json.loads((run / "checkpoints" / "latest.json").read_text())["tag"]
    return torch.load(run / "checkpoints" / tag / "mp_rank_00_model_states.pt", weights_only=False)["module"]


def assert_close_runs(a: Path, b: Path) -> None:
    sa, sb = read_steps(a), read_steps(b)
    assert [s["step"] for s in sa] == [s["step"] for s in sb] == list(range(1, 17))
    for x, y in zip(sa, sb):
        assert abs(x["loss"] - y["loss"]) <= TOL * max(1.0, abs(x["loss"])), (x, y)
        assert x["lr"] == y["lr"]
    wa, wb = final_module(a), final_module(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), rtol=0, atol=TOL), (k, (wa[k] - wb[k]).abs().max())


def tail(p: Path, n: int = 4000) -> str:
    try:
        return p.read_text(errors="replace")[-n:]
    except OSError as e:
        return f"<{p}: {e}>"


def job_log(base: Path, name: str, job: str) -> Path:
    return base / f"{name}-{job}.out"


@pytest.fixture(scope="module")
def mn(slurm_multihost_cluster, tiny_store, tmp_path_factory):
    """Submit every job up front; wait for all of them."""
    c = slurm_multihost_cluster
    base = tmp_path_factory.mktemp("multinode")
    env = multihost_env()
    with pytest.MonkeyPatch.context() as mp:
        # sbatch exports this process's environment: conftest's GLOO_SOCKET_IFNAME=lo must not reach the jobs.
        c.apply_env(mp)
        for k in ("GLOO_SOCKET_IFNAME", "MASTER_ADDR", "MASTER_PORT"):
            mp.delenv(k, raising=False)
        for k in ("PATH", "OMP_NUM_THREADS", "PYTHONUNBUFFERED", "DS_ACCELERATOR", "RES_OPTIONS"):
            mp.setenv(k, env[k])
        return _submit_all(c, base, env, tiny_store)


def _submit_all(c, base: Path, env: dict[str, str], tiny_store: Path) -> SimpleNamespace:

    def submit(name: str, run: str, nodes: int, tasks_per_node: int, settings=(), args=(), sbatch=()) -> str:
        return c.sbatch([f"--nodes={nodes}", f"--ntasks-per-node={tasks_per_node}", "-o", base / f"{name}-%j.out",
                         "-J", name, *sbatch, PRETRAIN, f"CONFIG={TEST_CFG}", f"STORE={tiny_store}",
                         f"RUN_DIR={base / run}", "EXTRA_SETS=" + " ".join(SETS), *settings, *args],
                        env=env, cwd=ROOT)

    t0 = time.monotonic()
    jobs = {"two": submit("two", "two", 2, 1, ["PRECHECK=1"])}
    # A 2-node run stopped after STOP_AT steps (exit 75, not requeued), resumed by a 1-node x 2-task job.
    jobs["stop"] = submit("stop", "handover", 2, 1, ["MAX_REQUEUES=0"], ["--stop-after-steps", str(STOP_AT)])
    jobs["resume"] = submit("resume", "handover", 1, 2, sbatch=[f"--dependency=afterany:{jobs['stop']}"])
    jobs["one"] = submit("one", "one", 1, 2, ["PRECHECK=1"])

    from astrom3_hpc.orchestration import launch

    sjob = launch.launch_pretrain(base / "submitit" / "run", TEST_CFG, [f"data.store={tiny_store}", *SETS],
                                  nodes=2, tasks_per_node=1, cluster="slurm", name="submitit2n")
    jobs["submitit"] = str(sjob.job_id)
    try:
        states = {k: c.wait(j, timeout=600) for k, j in jobs.items()}
    except BaseException:
        for j in jobs.values():  # leave nothing running on the shared cluster
            c.run(["scancel", j], check=False)
        raise
    results = sjob.results() if states["submitit"] == "COMPLETED" else None
    return SimpleNamespace(c=c, base=base, jobs=jobs, states=states, submitit=sjob, results=results,
                           seconds=time.monotonic() - t0)


@pytest.mark.timeout(900)
def test_two_node_pretraining_rendezvous_on_the_first_host(mn):
    c, base = mn.c, mn.base
    job = mn.jobs["two"]
    log = job_log(base, "two", job)
    assert mn.states["two"] == "COMPLETED", tail(log)
    text = log.read_text()
    assert "rendezvous OK: 2 ranks on 2 host(s), launcher slurm" in text, text[-3000:]
    addrs = c.env["ASTROM3_SLURM_NODE_ADDRS"].split(",")
    ifname = c.env.get("ASTROM3_SLURM_IFNAME", "a3s0")
    views = [json.loads((base / "two" / "rendezvous" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [v["host"] for v in views] == c.nodes[:2]
    for r, v in enumerate(views):
        assert (v["rank"], v["world_size"], v["local_rank"], v["local_world_size"]) == (r, 2, 0, 1)
        assert v["slurm_nodeid"] == str(r) and v["launcher"] == "slurm"
        assert v["master_addr"] == addrs[0], v          # the first host, by address (names do not resolve)
        assert v["gloo_ifname"] == ifname and v["gloo_addr"] == addrs[r], v  # no loopback fallback
        assert v["all_reduce_ok"]
    m = json.loads((base / "two" / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["steps"] == 16
    assert json.loads((base / "two" / "run.json").read_text())["launcher"] == "slurm"
    print(f"\nmultinode: all jobs done in {mn.seconds:.0f} s")


@pytest.mark.timeout(900)
def test_one_node_two_tasks_has_local_ranks_0_and_1(mn):
    assert mn.states["one"] == "COMPLETED", tail(job_log(mn.base, "one", mn.jobs["one"]))
    views = [json.loads((mn.base / "one" / "rendezvous" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len({v["host"] for v in views}) == 1
    assert [(v["local_rank"], v["local_world_size"]) for v in views] == [(0, 2), (1, 2)]
    assert all(v["all_reduce_ok"] for v in views)


@pytest.mark.timeout(900)
def test_one_node_and_two_nodes_give_the_same_run(mn):
    assert mn.states["one"] == mn.states["two"] == "COMPLETED"
    assert_close_runs(mn.base / "one", mn.base / "two")


@pytest.mark.timeout(900)
def test_two_node_checkpoint_resumes_on_one_node(mn):
    c, base = mn.c, mn.base
    stop_log = job_log(base, "stop", mn.jobs["stop"])
    assert mn.states["stop"] == "FAILED", tail(stop_log)  # exit 75, MAX_REQUEUES=0: left for the next job
    exit_code = c.run(["sacct", "-X", "-n", "-P", "-j", mn.jobs["stop"], "-o", "ExitCode"]).stdout.split()[0]
    assert exit_code == "75:0", (exit_code, tail(stop_log))
    assert "not requeueing" in stop_log.read_text()
    resume_log = job_log(base, "resume", mn.jobs["resume"])
    assert mn.states["resume"] == "COMPLETED", tail(resume_log)
    assert f"resumed from step{STOP_AT}" in resume_log.read_text()
    starts = (base / "handover" / "slurm_job.log").read_text().splitlines()
    assert len(starts) == 2 and "nodes=a3s-node[1-2] ntasks=2" in starts[0], starts
    assert "ntasks=2" in starts[1] and "[" not in starts[1].split()[3], starts  # one node
    assert json.loads((base / "handover" / "metrics.json").read_text())["world_size"] == 2
    assert_close_runs(base / "handover", base / "one")


@pytest.mark.timeout(900)
def test_submitit_two_node_job(mn):
    assert mn.states["submitit"] == "COMPLETED", tail(Path(mn.submitit._sub_jobs[0].paths.stderr))
    res = mn.results
    addrs = mn.c.env["ASTROM3_SLURM_NODE_ADDRS"].split(",")
    assert [r["rank"] for r in res] == [0, 1] and [r["node"] for r in res] == [0, 1]
    assert [r["host"] for r in res] == mn.c.nodes[:2]
    assert all(r["master_addr"] == addrs[0] for r in res), res  # NodeAddr: the names do not resolve
    assert all(r["gloo_ifname"] == mn.c.env.get("ASTROM3_SLURM_IFNAME", "a3s0") for r in res), res
    assert res[0]["steps"] == 16 and res[0]["world_size"] == 2
    run = mn.base / "submitit" / "run"
    assert json.loads((run / "run.json").read_text())["launcher"] == "submitit"
    assert_close_runs(run, mn.base / "one")
