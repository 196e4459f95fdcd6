"""Run a Python function in N real processes (gloo on CPU) and collect per-rank results from files.

    from dist_helpers import run_distributed
    results = run_distributed(my_fn, world_size=2, args=(...,))   # list indexed by rank
    results = run_distributed(my_fn, 2, launcher="mpiexec")         # under `mpiexec -n 2`

`fn` must be importable by the children: a module-level function of an importable module (a test module is
fine: the children put that module's directory and the repo root on sys.path and import it by name), or a
"module:qualname" string. Each rank runs this file as a script: it optionally calls
`astrom3_hpc.distributed.env.init(backend="gloo")` (so `fn` finds torch.distributed initialised), calls
`fn(*args, **kwargs)`, and `torch.save`s {"rank", "env", "result"} to ``<tmp>/rank<r>.pt``; a failing rank
writes its traceback to ``rank<r>.err``. Results come from those files, never from stdout (mpiexec loses
stdout lines here).

Hygiene (ENVIRONMENT.md): children get GLOO_SOCKET_IFNAME=lo, OMP_NUM_THREADS=1, MASTER_ADDR=127.0.0.1, a
fresh free MASTER_PORT per run (launcher "env"), the venv's bin first on PATH (so the bare ``mpiexec`` is the
venv's), inherited launcher variables (RANK, SLURM_*, PMI_*, OMPI_*...) removed, and a hard timeout after
which the processes this helper started are killed by process group.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
_LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "LOCAL_SIZE", "GROUP_RANK",
                  "ROLE_RANK", "MASTER_ADDR", "MASTER_PORT", "CROSS_RANK", "CROSS_SIZE", "MPI_LOCALRANKID",
                  "MPI_LOCALNRANKS", "ASTROM3_DIST_LAUNCHER")
_LAUNCHER_PREFIXES = ("SLURM_", "PMI_", "PMIX_", "OMPI_", "HYDRA_", "TORCHELASTIC_")


class DistributedRunError(RuntimeError):
    pass


def free_port() -> int:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _target_of(fn: Callable | str) -> tuple[str, str]:
    """('module:qualname', directory to put on sys.path)."""
    if isinstance(fn, str):
        return fn, ""
    mod = sys.modules.get(fn.__module__)
    if fn.__module__ == "__main__" or mod is None or "<locals>" in fn.__qualname__:
        raise ValueError(f"{fn!r} is not importable by child processes: define it at module level")
    mod_file = getattr(mod, "__file__", None)
    path = ""
    if mod_file:
        # For package modules (tests.test_x) the directory above the top package; else the module's own dir.
        p = Path(mod_file).resolve().parent
        for _ in range(fn.__module__.count(".")):
            p = p.parent
        path = str(p)
    return f"{fn.__module__}:{fn.__qualname__}", path


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in _LAUNCHER_VARS and not k.startswith(_LAUNCHER_PREFIXES)}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DS_ACCELERATOR="cpu",
               PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    if extra:
        env.update(extra)
    return env


_FORKSERVER_CTX = None


def _forkserver_ctx():
    global _FORKSERVER_CTX
    if _FORKSERVER_CTX is None:
        import multiprocessing as mp
        ctx = mp.get_context("forkserver")
        # Imported once in the server; each rank is a fork of it (no per-rank torch import).
        ctx.set_forkserver_preload(["torch", "torch.distributed", "astrom3_hpc.distributed.env",
                                    "astrom3_hpc.distributed.gather", "astrom3_hpc.train.loss"])
        _FORKSERVER_CTX = ctx
    return _FORKSERVER_CTX


def _forkserver_entry(argv: list[str], env: dict[str, str], log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    sys.exit(_child_main(argv))


class _ForkserverProc:
    """Popen-like wrapper (poll/returncode/wait/kill) around a forkserver multiprocessing.Process."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path):
        self._p = _forkserver_ctx().Process(target=_forkserver_entry, args=(argv, env, str(log)), daemon=True)
        self._p.start()
        self.pid = self._p.pid

    def poll(self):
        return self._p.exitcode

    @property
    def returncode(self):
        return self._p.exitcode

    def wait(self, timeout=None):
        self._p.join(timeout)
        if self._p.exitcode is None:
            raise subprocess.TimeoutExpired("forkserver rank", timeout)
        return self._p.exitcode

    def kill(self):
        self._p.kill()


def _kill(procs: Sequence[Any]) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                if isinstance(p, _ForkserverProc):
                    p.kill()
                else:
                    os.killpg(p.pid, signal.SIGKILL)  # our own child's session (start_new_session=True)
            except (ProcessLookupError, PermissionError):
                pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def run_distributed(fn: Callable | str, world_size: int, args: Sequence[Any] = (),
                    kwargs: dict[str, Any] | None = None, *, launcher: str = "env", timeout: float = 120.0,
                    init: bool = True, env: dict[str, str] | None = None, workdir: str | os.PathLike | None = None,
                    retries_on_port_clash: int = 1, return_records: bool = False) -> list[Any]:
    """Run `fn(*args, **kwargs)` on `world_size` ranks; return the per-rank return values (by rank).

    launcher: "env" (one subprocess per rank with RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* set, like torchrun),
    "forkserver" (the same variables, but ranks are forked from a multiprocessing forkserver that imported
    torch once: much faster startup on a loaded machine; the env vars are applied in the child before
    anything reads them, and torch threads are set from OMP_NUM_THREADS) or "mpiexec" (``mpiexec -n N``;
    the children get NO rank/master variables: `detect()` must find them).
    init: call `astrom3_hpc.distributed.env.init(backend="gloo")` in each child before `fn` (and `cleanup()` after).
    return_records: return {"rank", "env" (the child's DistEnv as a dict), "result"} per rank instead.
    """
    import torch

    target, path = _target_of(fn)
    own_tmp = None
    if workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="distrun-")
        workdir = own_tmp.name
    try:
        for attempt in range(retries_on_port_clash + 1):
            out = Path(workdir) / f"run{attempt}"
            out.mkdir(parents=True, exist_ok=True)
            torch.save({"args": tuple(args), "kwargs": dict(kwargs or {})}, out / "call.pt")
            try:
                recs = _run_once(target, path, world_size, out, launcher, timeout, init, env)
                return recs if return_records else [r["result"] for r in recs]
            except DistributedRunError as e:
                if attempt < retries_on_port_clash and "address already in use" in str(e).lower():
                    continue
                raise
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()
    raise AssertionError("unreachable")


def _run_once(target: str, path: str, world_size: int, out: Path, launcher: str, timeout: float, init: bool,
              env: dict[str, str] | None) -> list[Any]:
    import torch

    cmd_tail = [str(Path(__file__).resolve()), "--target", target, "--path", path, "--out", str(out),
                "--timeout", str(timeout)] + (["--init"] if init else [])
    procs: list[Any] = []
    logs: list[Path] = []
    try:
        if launcher in ("env", "forkserver"):
            port = str(free_port())
            for r in range(world_size):
                e = child_env({"RANK": str(r), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(r),
                               "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1",
                               "MASTER_PORT": port, **(env or {})})
                log = out / f"rank{r}.log"
                logs.append(log)
                if launcher == "forkserver":
                    procs.append(_ForkserverProc(cmd_tail[1:], e, log))
                    continue
                with open(log, "wb") as f:
                    procs.append(subprocess.Popen([sys.executable] + cmd_tail, env=e, stdout=f,
                                                  stderr=subprocess.STDOUT, cwd=str(REPO_ROOT),
                                                  start_new_session=True))
        elif launcher == "mpiexec":
            e = child_env(env)
            log = out / "mpiexec.log"
            logs.append(log)
            with open(log, "wb") as f:
                # Bare name: resolved on the children's PATH, whose first entry is this venv's bin.
                procs.append(subprocess.Popen(["mpiexec", "-n", str(world_size), sys.executable] + cmd_tail,
                                              env=e, stdout=f, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT),
                                              start_new_session=True))
        else:
            raise ValueError(f"unknown launcher {launcher!r}")

        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                _kill(procs)
                raise DistributedRunError(
                    f"{target} on {world_size} ranks ({launcher}) timed out after {timeout:.0f}s\n"
                    + _report(out, world_size, logs))
            # One rank failing usually leaves the others blocked in a collective: stop early.
            if any(p.poll() not in (None, 0) for p in procs):
                time.sleep(1.0)
                _kill(procs)
                break
            time.sleep(0.05)
    finally:
        _kill(procs)

    rcs = [p.returncode for p in procs]
    files = [out / f"rank{r}.pt" for r in range(world_size)]
    if any(rc != 0 for rc in rcs) or not all(f.exists() for f in files):
        raise DistributedRunError(f"{target} on {world_size} ranks ({launcher}) failed: return codes {rcs}\n"
                                  + _report(out, world_size, logs))
    results = []
    for r, f in enumerate(files):
        rec = torch.load(f, weights_only=False)
        if rec["rank"] != r:
            raise DistributedRunError(f"file {f} holds rank {rec['rank']}")
        results.append(rec)
    return results


def _report(out: Path, world_size: int, logs: list[Path]) -> str:
    parts = []
    for r in range(world_size):
        err = out / f"rank{r}.err"
        if err.exists():
            parts.append(f"--- rank {r} traceback ---\n{_tail(err)}")
    for log in logs:
        parts.append(f"--- {log.name} (tail) ---\n{_tail(log)}")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------- child side

def _child_main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--path", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--init", action="store_true")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    if a.path:
        sys.path.insert(0, a.path)
    out = Path(a.out)

    from astrom3_hpc.distributed import env as denv  # noqa: E402

    rank_guess = denv.detect(use_mpi4py=False).rank
    try:
        import torch
        if os.environ.get("OMP_NUM_THREADS", "").isdigit():
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        e = denv.init(backend="gloo", timeout=a.timeout) if a.init else denv.detect()
        rank_guess = e.rank
        call = torch.load(out / "call.pt", weights_only=False)
        mod_name, qual = a.target.split(":", 1)
        obj: Any = importlib.import_module(mod_name)
        for part in qual.split("."):
            obj = getattr(obj, part)
        result = obj(*call["args"], **call["kwargs"])
        tmp = out / f".rank{e.rank}.pt.tmp"
        torch.save({"rank": e.rank, "env": dataclasses.asdict(e), "result": result}, tmp)
        os.replace(tmp, out / f"rank{e.rank}.pt")
        denv.cleanup()
        return 0
    except BaseException:
        (out / f"rank{rank_guess}.err").write_text(traceback.format_exc())
        return 1


if __name__ == "__main__":
    sys.exit(_child_main())


def wait_for(condition, what: str, procs, timeout: float = 120, log: Path | None = None) -> None:
    """Poll `condition` until it holds; fail when one of the processes `procs` ends first or `timeout` passes,
    with the end of `log` (a job's stderr file) in the message."""
    deadline = time.monotonic() + timeout
    while not condition():
        tail = log.read_text()[-3000:] if log is not None else ""
        assert all(p.poll() is None for p in procs), f"a job ended before {what}\n{tail}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s\n{tail}"
        time.sleep(0.05)
