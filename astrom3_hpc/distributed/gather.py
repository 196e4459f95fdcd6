"""All-gather along the batch dimension with gradients flowing back to each rank's own rows.

Backward rule: rank r's loss L_r depends on every rank's rows through the gathered tensor, so the gradient of
rank r's own rows is sum_s dL_s/dx_r: the backward all-reduces (sums) the gradient of the gathered tensor and
keeps its own slice; implemented as a reduce-scatter (sum) of that gradient (gloo in torch 2.13 has it too),
with an all-reduce + slice fallback for backends without reduce-scatter. Together with the data-parallel mean
of parameter gradients (DDP/DeepSpeed), each parameter's gradient is d(mean_s L_s)/d(theta): exactly the
single-process gradient when mean_s L_s equals the single-process loss (see `astrom3_hpc.train.loss`).
Every rank must call the gather (and run backward through it) the same number of times in the same order.

Unequal per-rank batch sizes (the last batch of an epoch without drop_last) are handled: sizes are exchanged
first, rows are zero-padded to the largest size for the collective and the padding is dropped again, so the
result has sum(sizes) rows in rank order. `allow_unequal=False` raises a ValueError naming ranks and sizes.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as tdist
import torch.nn.functional as F

from .collectives import active
from .device import comm_device

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8,
           torch.bool, torch.int8, torch.int16)


def _all_gather_single(out, x, group=None):
    # torch 2.13 renamed all_gather_into_tensor (now deprecated, FutureWarning) to all_gather_single.
    fn = getattr(tdist, "all_gather_single", None) or tdist.all_gather_into_tensor
    return fn(out, x, group=group)


def _reduce_scatter_single(out, x, group=None):
    fn = getattr(tdist, "reduce_scatter_single", None) or tdist.reduce_scatter_tensor
    return fn(out, x, op=tdist.ReduceOp.SUM, group=group)


def gather_shapes(x: torch.Tensor, group=None) -> list[tuple[int, ...]]:
    """Every rank's x.shape (one tiny all_gather). Checks ndim/trailing dims/dtype agree; ValueError if not."""
    if not active(group):
        return [tuple(x.shape)]
    if x.dim() > 8:
        raise ValueError("all_gather_with_grad supports at most 8 dimensions")
    world = tdist.get_world_size(group)
    dtype_id = _DTYPES.index(x.dtype) if x.dtype in _DTYPES else -1
    meta = torch.tensor([x.dim(), dtype_id, *x.shape] + [0] * (8 - x.dim()), dtype=torch.int64,
                        device=comm_device(group))
    out = torch.empty(world * meta.numel(), dtype=torch.int64, device=meta.device)
    _all_gather_single(out, meta, group)
    rows = out.view(world, -1).tolist()
    shapes = [tuple(r[2:2 + r[0]]) for r in rows]
    if len({(r[0], r[1]) for r in rows}) != 1 or len({s[1:] for s in shapes}) != 1:
        desc = ", ".join(f"rank {i}: shape {s} dtype {_DTYPES[r[1]] if r[1] >= 0 else '?'}"
                         for i, (s, r) in enumerate(zip(shapes, rows)))
        raise ValueError(f"all_gather_with_grad: ranks disagree on trailing shape or dtype ({desc})")
    return shapes


def gather_sizes(x: torch.Tensor, group=None) -> list[int]:
    """Every rank's batch size (dim 0), with the shape/dtype agreement check of `gather_shapes`."""
    return [s[0] for s in gather_shapes(x, group)]


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group):  # x: equal-size (padded) local rows
        world = tdist.get_world_size(group)
        ctx.group, ctx.rank, ctx.rows = group, tdist.get_rank(group), x.shape[0]
        x = x.contiguous()
        out = torch.empty((world * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
        _all_gather_single(out, x, group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        mine = torch.empty((ctx.rows, *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
        if _REDUCE_SCATTER_OK.get(tdist.get_backend(ctx.group), True):
            try:
                _reduce_scatter_single(mine, grad, ctx.group)
                return mine, None
            except getattr(tdist, "DistBackendError", ()):  # a real communication failure: do not mask it
                raise
            except (RuntimeError, NotImplementedError, AttributeError):
                # Backend without reduce-scatter (checked before any communication): remember, fall back.
                _REDUCE_SCATTER_OK[tdist.get_backend(ctx.group)] = False
        grad = grad.clone()
        tdist.all_reduce(grad, op=tdist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None


_REDUCE_SCATTER_OK: dict[str, bool] = {}


def all_gather_with_grad(x: torch.Tensor, sizes: Sequence[int] | None = None, group=None, *,
                         allow_unequal: bool = True) -> torch.Tensor:
    """Concatenate every rank's `x` (B_r, ...) along dim 0 -> (sum_r B_r, ...), differentiable.

    Identity when torch.distributed is not initialised or the world has one rank. `sizes`: every rank's
    batch size if the caller already knows them (from `gather_sizes`); otherwise they are gathered here (one
    extra tiny collective). Unequal sizes are handled by padding (see module docstring) unless
    `allow_unequal=False`, which raises ValueError.
    """
    if not active(group):
        return x
    if sizes is None:
        sizes = gather_sizes(x, group)
    sizes = [int(s) for s in sizes]
    rank = tdist.get_rank(group)
    if len(sizes) != tdist.get_world_size(group) or sizes[rank] != x.shape[0]:
        raise ValueError(f"sizes {sizes} do not match world size {tdist.get_world_size(group)} / this rank's "
                         f"batch {x.shape[0]} (rank {rank})")
    top = max(sizes)
    if min(sizes) == top:
        return _AllGatherWithGrad.apply(x, group)
    if not allow_unequal:
        desc = ", ".join(f"rank {i}: {s}" for i, s in enumerate(sizes))
        raise ValueError(f"unequal per-rank batch sizes ({desc}); use drop_last=True or allow_unequal=True")
    pad = [0, 0] * (x.dim() - 1) + [0, top - x.shape[0]]
    gathered = _AllGatherWithGrad.apply(F.pad(x, pad), group)
    index = torch.cat([torch.arange(r * top, r * top + s, device=x.device) for r, s in enumerate(sizes)])
    return gathered.index_select(0, index)


__all__ = ["all_gather_with_grad", "gather_sizes", "gather_shapes"]
