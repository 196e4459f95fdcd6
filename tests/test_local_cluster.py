"""The local SLURM cluster (slurm/local-cluster/) really schedules jobs: srun tasks, arrays with a
concurrency limit, dependencies, sbatch --wait, scancel and requeue, with states read back from sacct."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest


pytestmark = [pytest.mark.slurm, pytest.mark.timeout(120)]


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\nset -eu\n" + textwrap.dedent(body).lstrip())
    path.chmod(0o755)
    return path


def test_cluster_is_up(slurm_cluster):
    out = slurm_cluster.run(["sinfo", "-h", "-o", "%P %a %T"]).stdout
    assert "debug*" in out and "up" in out, out
    assert slurm_cluster.env["SLURM_CONF"].endswith("slurm.conf")
    assert slurm_cluster.nodes


def test_srun_two_tasks_write_per_task_files(slurm_cluster, tmp_path):
    script = write_script(tmp_path / "job.sh", f"""
        srun bash -c 'echo "$SLURM_PROCID $SLURM_NTASKS $(hostname)" > {tmp_path}/task_$SLURM_PROCID.txt'
    """)
    job = slurm_cluster.sbatch(["-n", "2", "-o", tmp_path / "out.txt", "-J", "two-tasks", script])
    assert slurm_cluster.wait(job, timeout=60) == "COMPLETED", (tmp_path / "out.txt").read_text()
    for rank in (0, 1):
        procid, ntasks, _host = (tmp_path / f"task_{rank}.txt").read_text().split()
        assert (procid, ntasks) == (str(rank), "2")
    steps = slurm_cluster.sacct(job, steps=True)
    assert steps.get(f"{job}.0") == "COMPLETED", steps


def test_array_with_concurrency_limit(slurm_cluster, tmp_path):
    script = write_script(tmp_path / "array.sh", f"""
        start=$(date +%s.%N)
        sleep 1
        echo "$start $(date +%s.%N)" > {tmp_path}/task_$SLURM_ARRAY_TASK_ID.txt
    """)
    job = slurm_cluster.sbatch(["--array=0-3%2", "-n", "1", "-o", tmp_path / "out_%a.txt", script])
    assert slurm_cluster.wait(job, timeout=90) == "COMPLETED"
    states = slurm_cluster.sacct(job)
    assert sorted(states) == [f"{job}_{i}" for i in range(4)], states
    intervals = [tuple(map(float, (tmp_path / f"task_{i}.txt").read_text().split())) for i in range(4)]
    # %2: never more than two tasks running at once.
    for start, _ in intervals:
        assert sum(s <= start < e for s, e in intervals) <= 2, intervals


def test_dependency_afterok(slurm_cluster, tmp_path):
    first = write_script(tmp_path / "first.sh", f"sleep 2; date +%s.%N > {tmp_path}/first.done\n")
    second = write_script(tmp_path / "second.sh", f"""
        test -f {tmp_path}/first.done
        date +%s.%N > {tmp_path}/second.start
    """)
    a = slurm_cluster.sbatch(["-o", tmp_path / "a.out", first])
    b = slurm_cluster.sbatch([f"--dependency=afterok:{a}", "-o", tmp_path / "b.out", second])
    reason = slurm_cluster.run(["squeue", "-h", "-j", b, "-o", "%r"]).stdout.strip()
    assert reason in {"Dependency", "None", "Priority", "Resources"}, reason
    assert slurm_cluster.wait(b, timeout=60) == "COMPLETED", (tmp_path / "b.out").read_text()
    assert slurm_cluster.wait(a, timeout=10) == "COMPLETED"
    assert float((tmp_path / "second.start").read_text()) >= float((tmp_path / "first.done").read_text())


def test_sbatch_wait(slurm_cluster, tmp_path):
    ok = write_script(tmp_path / "ok.sh", f"sleep 1; echo done > {tmp_path}/ok.txt\n")
    t0 = time.monotonic()
    job = slurm_cluster.sbatch(["--wait", "-o", tmp_path / "ok.out", ok], timeout=90)
    assert time.monotonic() - t0 >= 1.0
    assert (tmp_path / "ok.txt").read_text().strip() == "done"  # already there when sbatch returns
    assert slurm_cluster.wait(job, timeout=30) == "COMPLETED"

    bad = write_script(tmp_path / "bad.sh", "exit 3\n")
    proc = slurm_cluster.run(["sbatch", "--parsable", "--wait", "-o", str(tmp_path / "bad.out"), str(bad)],
                             check=False, timeout=90)
    assert proc.returncode != 0
    assert slurm_cluster.wait(proc.stdout.split(";")[0].strip(), timeout=30) == "FAILED"


def test_scancel_shows_cancelled(slurm_cluster, tmp_path):
    script = write_script(tmp_path / "sleep.sh", f"touch {tmp_path}/started; sleep 300\n")
    job = slurm_cluster.sbatch(["-o", tmp_path / "sleep.out", script])
    try:
        slurm_cluster.wait_state(job, "RUNNING", timeout=60)
        # RUNNING is set when slurmctld hands the job to slurmd, before the batch
        # script has executed a line; cancel only once the script is really running.
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline, f"job {job} is RUNNING but its script never started"
            time.sleep(0.2)
        slurm_cluster.scancel(job)
        assert slurm_cluster.wait(job, timeout=60) == "CANCELLED"
    finally:
        slurm_cluster.run(["scancel", job], check=False)


def test_requeue_runs_twice(slurm_cluster, tmp_path):
    runs = tmp_path / "runs.txt"
    script = write_script(tmp_path / "requeue.sh", f"""
        echo "${{SLURM_RESTART_COUNT:-0}}" >> {runs}
        if [ "${{SLURM_RESTART_COUNT:-0}}" = 0 ]; then sleep 300; fi
    """)
    job = slurm_cluster.sbatch(["--requeue", "--open-mode=append", "-o", tmp_path / "requeue.out", script])
    try:
        deadline = time.monotonic() + 60
        while not (runs.exists() and runs.read_text().strip()):
            assert time.monotonic() < deadline, "first run never started"
            time.sleep(0.2)
        # The requeued job becomes eligible again after AuthInfo cred_expire (10 s here, 120 s by default).
        slurm_cluster.scontrol("requeue", job)
        assert slurm_cluster.wait(job, timeout=100) == "COMPLETED", (tmp_path / "requeue.out").read_text()
        assert runs.read_text().split() == ["0", "1"]
        assert "Restarts=1" in slurm_cluster.scontrol("show", "job", job)
    finally:
        slurm_cluster.run(["scancel", job], check=False)


@pytest.mark.timeout(180)
def test_multihost_one_task_per_fake_host(slurm_multihost_cluster, tmp_path):
    cluster = slurm_multihost_cluster
    assert len(cluster.nodes) >= 2, cluster.nodes
    script = write_script(tmp_path / "multi.sh", f"""
        srun bash -c 'echo "$SLURM_PROCID $(hostname) $SLURMD_NODENAME" > {tmp_path}/rank_$SLURM_PROCID.txt'
    """)
    job = cluster.sbatch(["-N", "2", "--ntasks-per-node=1", "-o", tmp_path / "multi.out", script])
    assert cluster.wait(job, timeout=90) == "COMPLETED", (tmp_path / "multi.out").read_text()
    rows = [(tmp_path / f"rank_{r}.txt").read_text().split() for r in (0, 1)]
    hostnames = {row[1] for row in rows}
    assert len(hostnames) == 2, rows
    assert hostnames <= set(cluster.nodes), (rows, cluster.nodes)


PING_PONG = """
import os, socket, sys, time
rank, addr, port = int(os.environ["SLURM_PROCID"]), sys.argv[1], int(sys.argv[2])
if rank == 0:
    srv = socket.create_server(("0.0.0.0", port))
    srv.settimeout(60)
    conn, peer = srv.accept()
    conn.sendall(b"pong:" + conn.recv(64))
else:
    deadline = time.time() + 30
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    conn.sendall(socket.gethostname().encode())
    print(conn.recv(64).decode())
"""


@pytest.mark.timeout(180)
def test_multihost_tcp_between_fake_hosts(slurm_multihost_cluster, tmp_path):
    """A task on one fake host reaches a server on the other through the bridge (what gloo needs)."""
    cluster = slurm_multihost_cluster
    first_addr = cluster.env["ASTROM3_SLURM_NODE_ADDRS"].split(",")[0]
    (tmp_path / "pingpong.py").write_text(PING_PONG)
    job = cluster.sbatch(["-N", "2", "--ntasks-per-node=1", "-w", cluster.nodes[0] + "," + cluster.nodes[1],
                          "-o", tmp_path / "pp.out", "--wrap",
                          f"srun {sys.executable} {tmp_path / 'pingpong.py'} {first_addr} 29517"])
    assert cluster.wait(job, timeout=90) == "COMPLETED", (tmp_path / "pp.out").read_text()
    assert f"pong:{cluster.nodes[1]}" in (tmp_path / "pp.out").read_text()
