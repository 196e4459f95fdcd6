"""One rank fails, the job fails: a fatal error on any rank ends the whole job within seconds.

A rank that merely returns from its error would run Python's exit path: the process group's teardown, DeepSpeed
and mpi4py exit hooks (MPI_Finalize is collective), each of which can wait for peers that are themselves
blocked in a collective until gloo's 30-minute timeout. So after printing its error a failing rank of a
multi-process job ends at once: `MPI_Abort` when mpi4py initialised MPI (mpiexec kills every rank), otherwise
`os._exit(code)`; its peers' next collective then fails on the closed connections (they print one line, not a
second copy of the error), and torchrun, srun and Submitit see a non-zero task.
"""

from __future__ import annotations

import logging
import os
import sys
import time

# What a peer's collective raises when another rank died (gloo's messages; torch's DistBackendError).
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "DistBackendError",
              "connection refused", "Socket closed")


def job_world_size() -> int:
    """Ranks in this job, from the launcher's variables alone (no process group or MPI needed)."""
    from .env import detect

    try:
        return detect(use_scontrol=False, use_mpi4py=False).world_size
    except Exception:  # noqa: BLE001 - a malformed launcher environment: treat as one process
        return 1


def peer_failed(e: BaseException) -> bool:
    """This rank's error is the echo of another rank's failure (its collective lost a peer)."""
    text = f"{type(e).__name__}: {e}"
    return any(s.lower() in text.lower() for s in _PEER_GONE)


def end_job(code: int) -> None:
    """End this process now with `code`, taking the rest of a multi-process job with it. Never returns."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None:
        # MPI_Abort tears the job down at once; give the launcher a moment to forward what this rank printed.
        time.sleep(0.5)
        try:
            if mpi.Is_initialized() and not mpi.Is_finalized() and mpi.COMM_WORLD.Get_size() > 1:
                mpi.COMM_WORLD.Abort(code)
        except Exception:  # noqa: BLE001 - fall through to a plain exit
            pass
    os._exit(code)


def rank_prefix() -> str:
    from .env import detect

    try:
        env = detect(use_scontrol=False, use_mpi4py=False)
    except Exception:  # noqa: BLE001
        return ""
    return f"rank {env.rank}: " if env.world_size > 1 else ""


def fail_job(prog: str, e: BaseException, code: int, known: bool) -> None:
    """A training command's error in a multi-process job: print it once and take the whole job down now.
    In a one-process job, return (the CLI's ordinary error path follows)."""
    if job_world_size() <= 1:
        return
    where = f"{prog}: {rank_prefix()}"
    if peer_failed(e):
        print(f"{where}stopped: another rank failed (see its error); here: {str(e).splitlines()[0][:200]}",
              file=sys.stderr)
    elif not known:
        import traceback

        traceback.print_exc()
    elif rank_prefix() in ("", "rank 0: ") or not same_on_every_rank(e):
        print(f"{where}error: {e}", file=sys.stderr)
    else:
        # Raised alike on every rank (config, run dir, leak check): rank 0 speaks for all; the others give it a
        # moment to print and abort (an MPI_Abort from them could kill rank 0 before it printed).
        time.sleep(10)
    end_job(code)


def same_on_every_rank(e: BaseException) -> bool:
    from ..core.config import ConfigError

    return isinstance(e, ConfigError) or bool(getattr(e, "same_on_every_rank", False))
