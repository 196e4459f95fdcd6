"""Preemption: SIGUSR1 or SIGTERM asks every rank to checkpoint at the next step boundary and exit.

The handler only sets a flag; ranks agree on it through an all-reduce at each log boundary (every
``train.log_every_steps`` steps, with the logged loss: no per-step host sync), so all of them stop after the
same step even if the signal reached them at different moments.

Inside a Submitit job (``SUBMITIT_EXECUTOR`` set) Submitit's own preemption signal (``SUBMITIT_PREEMPT_SIGNAL``,
USR2 by default, sent ``signal_delay_s`` before the time limit) is handled the same way: while training runs our
handler replaces Submitit's (which would checkpoint and requeue from rank 0 alone, mid-step); ``restore()`` gives
it back, and the Submitit job function (astrom3_hpc.orchestration.submitit_jobs) then triggers Submitit's requeue
once every rank has written the checkpoint.
"""

from __future__ import annotations

import logging
import signal
from contextlib import ExitStack

from ..core.signals import handling, job_signals
from ..distributed.collectives import any_rank

log = logging.getLogger("astrom3")


class Preemption:
    def __init__(self, signals=None):
        self.requested = False
        self.signal_name: str | None = None
        self._handlers = ExitStack()
        # The signals handled (none outside the main thread, e.g. inside some test runners).
        self.signals = self._handlers.enter_context(handling(job_signals() if signals is None else signals,
                                                             self._handle))

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def request(self, reason: str = "request") -> None:
        self.requested = True
        self.signal_name = reason

    def agreed(self) -> bool:
        """True on every rank if any rank was signalled."""
        return any_rank(self.requested)

    def restore(self) -> None:
        self._handlers.close()
