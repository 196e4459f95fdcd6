"""Session fixtures that bring up a real local SLURM cluster (slurm/local-cluster/) for tests.

In tests/conftest.py:

    from slurm_cluster import slurm_cluster, slurm_multihost_cluster  # noqa: F401

    def test_x(slurm_cluster, tmp_path):
        job = slurm_cluster.sbatch(["-o", str(tmp_path / "out"), "--wrap", "hostname"])
        assert slurm_cluster.wait(job, timeout=60) == "COMPLETED"
        subprocess.run(["squeue"], env=slurm_cluster.full_env(), check=True)

    def test_submitit(slurm_cluster, monkeypatch):
        slurm_cluster.apply_env(monkeypatch)   # SLURM_CONF etc. in os.environ for Submitit's own sbatch/sacct

``slurm_cluster`` runs ``slurm/local-cluster/start.sh`` (one node, partition ``debug``, accounting through
slurmdbd + MariaDB, so ``sacct`` and Submitit see real job states). ``slurm_multihost_cluster`` runs
``start-multi.sh --hosts 2`` (two fake hosts in network namespaces, one slurmd each).

Policy when a cluster cannot start: the fixture FAILS with the daemon log tails when ``CI`` is true or
``ASTROM3_REQUIRE_SLURM=1``, otherwise the test is skipped with the reason. A cluster that was already
running is left running; a cluster the fixture started is stopped at the end of the session (unless
``ASTROM3_KEEP_SLURM=1`` or another live pytest session still uses it).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "slurm" / "local-cluster"

#: States after which a job (allocation) will not change any more.
TERMINAL_STATES = frozenset(
    {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
     "TIMEOUT", "REVOKED"}
)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def slurm_required() -> bool:
    """True when a missing cluster must fail the tests rather than skip them (CI, or asked for)."""
    return _truthy(os.environ.get("CI")) or _truthy(os.environ.get("ASTROM3_REQUIRE_SLURM"))


def _clean_base_env() -> dict[str, str]:
    """os.environ without the SLURM_* variables of an enclosing job (they would leak into sbatch/srun)."""
    env = {k: v for k, v in os.environ.items() if not (k.startswith("SLURM_") or k.startswith("SBATCH_")
                                                       or k.startswith("SRUN_") or k.startswith("SALLOC_"))}
    path = env.get("PATH", "")
    for d in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if d not in path.split(os.pathsep):
            path = f"{path}{os.pathsep}{d}" if path else d
    env["PATH"] = path
    return env


@dataclass
class SlurmCluster:
    """Handle to a running local cluster. ``env`` is what to merge into a subprocess environment."""

    state_dir: Path
    env: dict[str, str]
    nodes: list[str] = field(default_factory=list)
    partition: str = "debug"
    started_here: bool = False  # this process started it (and will stop it at session end)
    start_seconds: float = 0.0  # how long start.sh took

    # ------------------------------------------------------------------ plumbing
    def full_env(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """A complete environment for a SLURM client command: os.environ (minus SLURM_* job variables) + ``env``."""
        merged = _clean_base_env()
        merged.update(self.env)
        if env:
            merged.update(env)
        return merged

    def run(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 60,
            check: bool = True, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
        """Run a SLURM client command (``["squeue", ...]``) against this cluster; text output captured."""
        proc = subprocess.run(args, env=self.full_env(env), capture_output=True, text=True, timeout=timeout,
                              cwd=cwd)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} failed (rc={proc.returncode}):\n"
                               f"{proc.stdout}\n{proc.stderr}")
        return proc

    def apply_env(self, monkeypatch) -> None:
        """Point this process at the cluster (for code that runs SLURM commands itself, e.g. Submitit):
        sets SLURM_CONF/PATH/... in os.environ and removes SLURM_* variables of an enclosing job."""
        for key in list(os.environ):
            if key.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")):
                monkeypatch.delenv(key, raising=False)
        for key, val in self.env.items():
            monkeypatch.setenv(key, val)

    # ------------------------------------------------------------------ jobs
    def sbatch(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 60,
               cwd: str | os.PathLike | None = None) -> str:
        """Submit with ``sbatch --parsable ARGS``; returns the job id (``"12"``). With ``--wait`` in ARGS it
        returns once the job ended (raising if it failed, like sbatch's exit status)."""
        out = self.run(["sbatch", "--parsable", *map(str, args)], env=env, timeout=timeout, cwd=cwd).stdout
        lines = [ln for ln in out.splitlines() if ln.strip()]
        if not lines:
            raise RuntimeError(f"sbatch printed no job id: {out!r}")
        return lines[0].split(";")[0].strip()  # "<id>[;cluster]"

    def sacct(self, job_id: str | int, steps: bool = False) -> dict[str, str]:
        """``{JobID: State}`` from accounting (allocations only unless ``steps``); ``CANCELLED by 0`` -> ``CANCELLED``.
        Array jobs give one entry per task (``12_0``, ``12_1``, ... or ``12_[2-3]`` while pending)."""
        args = ["sacct", "-n", "-P", "-j", str(job_id), "-o", "JobID,State"]
        if not steps:
            args.insert(1, "-X")
        proc = self.run(args, check=False, timeout=30)
        states: dict[str, str] = {}
        for line in proc.stdout.splitlines():
            if "|" not in line:
                continue
            jid, state = line.split("|", 1)
            states[jid.strip()] = state.split()[0] if state.strip() else ""
        return states

    def in_queue(self, job_id: str | int) -> bool:
        """Whether the controller still lists the job (or any of its array tasks) as pending/running/completing."""
        proc = self.run(["squeue", "-h", "-j", str(job_id), "-o", "%i %T"], check=False, timeout=30)
        return proc.returncode == 0 and bool(proc.stdout.strip())

    def wait(self, job_id: str | int, timeout: float = 60, poll: float = 0.25) -> str:
        """Wait until the job left the queue and accounting shows a final state; return that state.
        For an array job: the common state of all tasks, or the distinct states joined by "," if they differ."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while True:
            if not self.in_queue(job_id):
                states = self.sacct(job_id)
                # Accounting lags the controller: every record the controller knows (each array task)
                # must have reached slurmdbd with a final state.
                expected = self._controller_ids(job_id)
                if states and expected <= set(states) and all(s in TERMINAL_STATES for s in states.values()) \
                        and not any("[" in jid for jid in states):
                    distinct = sorted(set(states.values()))
                    return ",".join(distinct)
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not finished after {timeout}s; "
                                   f"sacct: {states or self.sacct(job_id)}; "
                                   f"squeue: {self.run(['squeue', '-j', str(job_id)], check=False).stdout}")
            time.sleep(poll)

    def _controller_ids(self, job_id: str | int) -> set[str]:
        """Job ids (``12`` or ``12_3``) the controller still remembers for ``job_id`` (empty once purged)."""
        proc = self.run(["scontrol", "-o", "show", "job", str(job_id)], check=False, timeout=30)
        ids: set[str] = set()
        if proc.returncode != 0:
            return ids
        for line in proc.stdout.splitlines():
            fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if "ArrayJobId" in fields and "ArrayTaskId" in fields:
                ids.add(f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}")
            elif "JobId" in fields:
                ids.add(fields["JobId"])
        return ids

    def wait_state(self, job_id: str | int, wanted: set[str] | str, timeout: float = 60, poll: float = 0.2) -> str:
        """Wait until squeue reports the job in one of ``wanted`` (e.g. "RUNNING"); return that state."""
        wanted = {wanted} if isinstance(wanted, str) else set(wanted)
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            proc = self.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], check=False, timeout=30)
            state = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""
            if state in wanted:
                return state
            time.sleep(poll)
        raise TimeoutError(f"job {job_id} not in {sorted(wanted)} after {timeout}s (last: {state!r})")

    def scancel(self, job_id: str | int, *args: str) -> None:
        self.run(["scancel", *args, str(job_id)])

    def scontrol(self, *args: str) -> str:
        return self.run(["scontrol", *args]).stdout


# ---------------------------------------------------------------------- lifecycle
class _ClusterManager:
    """Start a cluster once per process, share it between fixture definitions, stop it if we started it."""

    def __init__(self, kind: str, start_args: list[str], stop_script: str, default_dir: str, dir_env: str):
        self.kind = kind
        self.start_args = start_args
        self.stop_script = stop_script
        self.dir_env = dir_env
        self.state_dir = Path(os.environ.get(dir_env) or default_dir)
        self.users = 0
        self.cluster: SlurmCluster | None = None
        self.error: str | None = None
        self.started_here = False

    def _script_env(self) -> dict[str, str]:
        env = _clean_base_env()
        env[self.dir_env] = str(self.state_dir)
        return env

    def _client_file(self) -> Path:
        return self.state_dir / "clients" / str(os.getpid())

    def _other_live_clients(self) -> list[int]:
        live = []
        for f in (self.state_dir / "clients").glob("*"):
            try:
                pid = int(f.name)
            except ValueError:
                continue
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
                live.append(pid)
            except ProcessLookupError:
                f.unlink(missing_ok=True)
            except PermissionError:
                live.append(pid)
        return live

    def acquire(self) -> SlurmCluster:
        if self.cluster is None and self.error is None:
            self._start()
        if self.error is not None:
            msg = f"local SLURM cluster ({self.kind}) unavailable: {self.error}"
            if slurm_required():
                pytest.fail(msg, pytrace=False)
            pytest.skip(msg)
        self.users += 1
        return self.cluster

    def _start(self) -> None:
        script = SCRIPTS / self.start_args[0]
        if os.name != "posix" or not script.exists():
            self.error = f"{script} not usable on this platform"
            return
        t0 = time.monotonic()
        try:
            proc = subprocess.run(["bash", str(script), *self.start_args[1:]], env=self._script_env(),
                                  capture_output=True, text=True,
                                  timeout=float(os.environ.get("ASTROM3_SLURM_FIXTURE_TIMEOUT", "600")))
        except subprocess.TimeoutExpired as exc:
            self.error = f"{script.name} timed out after {exc.timeout}s:\n{exc.stderr or ''}"
            return
        except OSError as exc:
            self.error = f"cannot run {script}: {exc}"
            return
        if proc.returncode != 0:
            self.error = f"{script.name} exited with {proc.returncode}:\n{_head_and_tail(proc.stderr)}"
            return
        self.started_here = "# astrom3-local-cluster: started" in proc.stdout
        env = {}
        for line in proc.stdout.splitlines():
            if line.startswith("export ") and "=" in line:
                key, val = line[len("export "):].split("=", 1)
                env[key.strip()] = val.strip().strip("'\"")
        if "SLURM_CONF" not in env:
            self.error = f"{script.name} printed no SLURM_CONF:\n{proc.stdout}\n{proc.stderr[-4000:]}"
            return
        env["PATH"] = _clean_base_env()["PATH"]
        nodes = [n for n in env.get("ASTROM3_SLURM_NODES", "").split(",") if n]
        self.cluster = SlurmCluster(state_dir=Path(env.get("ASTROM3_SLURM_DIR", self.state_dir)), env=env,
                                    nodes=nodes, started_here=self.started_here,
                                    start_seconds=time.monotonic() - t0)
        (self.state_dir / "clients").mkdir(parents=True, exist_ok=True)
        self._client_file().touch()

    def release(self) -> None:
        self.users -= 1
        if self.users > 0 or self.cluster is None:
            return
        self._client_file().unlink(missing_ok=True)
        if not self.started_here or _truthy(os.environ.get("ASTROM3_KEEP_SLURM")):
            return
        if self._other_live_clients():
            return  # another pytest session still uses it; the last one leaves it running
        subprocess.run(["bash", str(SCRIPTS / self.stop_script)], env=self._script_env(),
                       capture_output=True, text=True, timeout=120)
        self.cluster = None
        self.started_here = False


_MANAGERS: dict[str, _ClusterManager] = {}


def _manager(kind: str) -> _ClusterManager:
    if kind not in _MANAGERS:
        if kind == "single":
            _MANAGERS[kind] = _ClusterManager("single node", ["start.sh"], "stop.sh", "/tmp/astrom3-slurm",
                                              "ASTROM3_SLURM_DIR")
        else:
            hosts = os.environ.get("ASTROM3_SLURM_HOSTS", "2")
            _MANAGERS[kind] = _ClusterManager(f"{hosts} fake hosts", ["start-multi.sh", "--hosts", hosts],
                                              "stop-multi.sh", "/tmp/astrom3-slurm-multi",
                                              "ASTROM3_SLURM_MULTI_DIR")
    return _MANAGERS[kind]


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node local SLURM cluster (see module docstring)."""
    mgr = _manager("single")
    cluster = mgr.acquire()
    try:
        yield cluster
    finally:
        mgr.release()


@pytest.fixture(scope="session")
def slurm_multihost_cluster():
    """A running local SLURM cluster of fake hosts (network namespaces), ``.nodes`` lists their names."""
    mgr = _manager("multi")
    cluster = mgr.acquire()
    try:
        yield cluster
    finally:
        mgr.release()


def _head_and_tail(text: str, head: int = 2000, tail: int = 6000) -> str:
    """The scripts print their error first and the daemons' log tails after it: a plain tail cut the error off."""
    if len(text) <= head + tail:
        return text
    return f"{text[:head]}\n[... {len(text) - head - tail} characters ...]\n{text[-tail:]}"
