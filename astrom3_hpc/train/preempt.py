"""Preemption: SIGUSR1 or SIGTERM asks every rank to checkpoint at the next step boundary and exit.

The handler only sets a flag; ranks agree on it through an all-reduce at each log boundary (every
``train.log_every_steps`` steps, with the logged loss: no per-step host sync), so all of them stop after the
same step even if the signal reached them at different moments.

Inside a Submitit job (``SUBMITIT_EXECUTOR`` set) Submitit's own preemption signal (``SUBMITIT_PREEMPT_SIGNAL``,
USR2 by default, sent ``signal_delay_s`` before the time limit) is handled the same way: while training runs our
handler replaces Submitit's (which would checkpoint and requeue from rank 0 alone, mid-step); ``restore()`` gives
it back, and the Submitit job function (astrom3_hpc.orchestration.submitit_jobs) then triggers Submitit's requeue once every rank has
written the checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal

import torch
import torch.distributed as dist

log = logging.getLogger("astrom3")

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: the job scripts requeue on this code


def default_signals() -> tuple[signal.Signals, ...]:
    """SIGUSR1 and SIGTERM, plus Submitit's preemption signal inside a Submitit job."""
    sigs = [signal.SIGUSR1, signal.SIGTERM]
    if os.environ.get("SUBMITIT_EXECUTOR"):
        extra = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
        if extra is not None and extra not in sigs:
            sigs.append(extra)
    return tuple(sigs)


class Preemption:
    def __init__(self, signals=None):
        if signals is None:
            signals = default_signals()
        self.requested = False
        self.signal_name: str | None = None
        self._previous = {}
        for s in signals:
            try:
                self._previous[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread (e.g. inside some test runners): no handler
                pass

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def request(self, reason: str = "request") -> None:
        self.requested = True
        self.signal_name = reason

    def agreed(self) -> bool:
        """True on every rank if any rank was signalled."""
        from ..distributed import device as ddev

        flag = torch.tensor([1.0 if self.requested else 0.0], device=ddev.comm_device())
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
