"""The small collectives the training and science code shares: gather objects, agree on a flag, average a number.

Each is a no-op (the process's own value) without a process group or with one rank, so callers need not ask
first. Like every collective, each must be called by every rank at the same point, in the same order.
Tensors built only to be reduced live on the backend's device (`device.comm_device`: NCCL takes CUDA tensors,
gloo CPU ones); `gather_objects` leaves that choice to torch's `all_gather_object`, which picks it alike.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as tdist

from .device import comm_device
from .env import barrier  # noqa: F401 - one barrier for the package; listed here with its siblings


def active(group=None) -> bool:
    """A process group is up and holds more than one rank: only then do collectives communicate."""
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size(group) > 1


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order (a list of one without a process group)."""
    if active():
        out = [None] * tdist.get_world_size()
        tdist.all_gather_object(out, obj)
        return out
    return [obj]


def mean_over_ranks(value: float, weight: float = 1.0) -> float:
    """Weighted mean of `value` over ranks (float64); NaN when every weight is 0."""
    t = torch.tensor([value * weight, weight], dtype=torch.float64, device=comm_device())
    if active():
        tdist.all_reduce(t)
    return float(t[0] / t[1]) if t[1] > 0 else math.nan


def any_rank(flag: bool) -> bool:
    """True on every rank if `flag` is true on any (a MAX all-reduce)."""
    t = torch.tensor([1.0 if flag else 0.0], device=comm_device())
    if active():
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item() > 0)


__all__ = ["active", "gather_objects", "mean_over_ranks", "any_rank", "barrier"]
