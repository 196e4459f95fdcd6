"""The signals a batch system sends a job, and the one way the suite installs a handler for them.

SLURM sends SIGUSR1 ahead of the time limit (``--signal=USR1@90`` in slurm/*.sh) and SIGTERM on preemption or
``scancel``; Submitit sends its own preemption signal (``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default). Training
answers them with a checkpoint at the next step boundary and exit code 75 (train/preempt.py). A job with nothing
to checkpoint (`astrom3 baseline`, `predict`, `embed`: minutes, their files written at their end) stops at once
instead (``stopped_by``): it writes nothing more and exits 75 too, so the job script requeues it rather than
SLURM marking the task failed.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

from .errors import EXIT_PREEMPTED

# What a batch system may send every process of a job step (worker processes ignore them all: core/processes.py).
JOB_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def job_signals() -> tuple[signal.Signals, ...]:
    """SIGUSR1 and SIGTERM, plus Submitit's preemption signal inside a Submitit job."""
    sigs = [signal.SIGUSR1, signal.SIGTERM]
    if os.environ.get("SUBMITIT_EXECUTOR"):
        extra = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
        if extra is not None and extra not in sigs:
            sigs.append(extra)
    return tuple(sigs)


@contextmanager
def handling(signals: Iterable[signal.Signals], handler: Callable) -> Iterator[list[signal.Signals]]:
    """`handler` for `signals` inside the block, the previous handlers after it; yields the signals it took.
    Python runs signal handlers in the main thread only: elsewhere (a test runner's thread) none is installed."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for s in signals:
            previous[s] = signal.signal(s, handler)
    try:
        yield list(previous)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Stopped(KeyboardInterrupt):
    """A job signal, raised where the job was, so that its `finally` and `except BaseException` blocks clean up
    (temporary files, worker processes); the CLI prints the message and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@contextmanager
def stopped_by(what: str, signals: Iterable[signal.Signals] | None = None,
               exit_code: int = EXIT_PREEMPTED) -> Iterator[None]:
    """Inside the block a job signal (default: job_signals()) raises Stopped with `exit_code`."""
    def stop(signum, frame):
        raise Stopped(f"{what} stopped by {signal.Signals(signum).name} before it finished; its results were not "
                      f"written (exit {exit_code}: the job scripts requeue it)", exit_code)

    with handling(job_signals() if signals is None else signals, stop):
        yield
