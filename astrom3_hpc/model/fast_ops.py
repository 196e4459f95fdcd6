"""Faster CPU kernels for the training step, switched per model (`set_fast_kernels`), numerics unchanged.

Why: a torch.profiler view of the `paper` preset's CPU step put `aten::bernoulli_` (dropout masks) at ~25 % of
self CPU time, more than the matrix multiplies; the masks of the (B, L, d_ff) feed-forward activations alone
are 6.5 M draws per layer. torch's CPU bernoulli draws one float per element; here one 64-bit draw of the torch
generator makes four masks.

`Dropout` is an `nn.Dropout` (same repr, no state) that, with `fast = True` and in training mode, keeps an
element when its 16-bit uniform lane u (0..65535) satisfies u >= round(p * 65536), and scales kept elements
by 1 / (1 - p_q), p_q = round(p * 65536) / 65536. The mask is therefore Bernoulli(1 - p_q) per element and
E[out] = x exactly; p_q differs from p by at most 2^-17 (torch's own CPU masks quantise p to its float draw,
2^-24). The draws come from torch's default CPU generator, so `torch.manual_seed` and checkpointed RNG state
replay them exactly; they are a different stream from `nn.Dropout`'s (switching kernels changes which
elements drop, not the distribution). Eval mode and `fast = False` are plain `nn.Dropout`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch
from torch import nn

_LANES = 65536


def keep_threshold(p: float) -> tuple[int, float]:
    """(signed 16-bit threshold k, scale): keep where lane >= k; scale = 1 / P(keep)."""
    drop = round(p * _LANES)
    return drop - _LANES // 2, _LANES / (_LANES - drop)


def dropout_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Boolean keep-mask of `shape`, Bernoulli(1 - p_q) per element, from int64 draws split in 16-bit lanes."""
    n = 1
    for s in shape:
        n *= s
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    # The full int64 range: random_() without bounds leaves the sign bit 0, which would bias the top lane.
    words.random_(-(2**63), 2**63 - 1)
    k, _ = keep_threshold(p)
    return words.view(torch.int16)[:n].view(shape) >= k


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        # where + in-place scale: two passes, and far cheaper than multiplying by a bool tensor (type promotion).
        return torch.where(keep, x, 0.0).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0.0).mul_(ctx.scale), None, None


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout with 16-bit-lane masks (see the module docstring)."""
    if p <= 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    keep = dropout_mask(x.shape, p, x.device)
    return _MaskedScale.apply(x, keep, keep_threshold(p)[1])


class Dropout(nn.Dropout):
    """nn.Dropout with an opt-in fast mask generator (`fast`, off by default; see `set_fast_kernels`)."""

    fast: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast and self.training and not self.inplace:
            return fast_dropout(x, self.p)
        return super().forward(x)


def set_fast_kernels(model: nn.Module, on: bool = True) -> int:
    """Switch every module with a `fast` attribute (the Dropout layers) on or off; returns how many."""
    n = 0
    for m in model.modules():
        if hasattr(type(m), "fast"):
            m.fast = bool(on)
            n += 1
    return n


def tune_malloc(mmap_threshold: int = 32 * 2**20) -> bool:
    """Keep freed activation buffers in the process heap (glibc only; returns whether it applied).

    glibc serves allocations above its dynamic mmap threshold with fresh mmaps and gives them back on free, so
    every large activation of every step is page-faulted in again (~120,000 minor faults per `paper` step at
    batch 64; ~2.7 us per 4 KB page on this VM class). A fixed threshold (the glibc maximum, 32 MiB) plus a
    high trim threshold keeps those buffers for reuse: ~20,000 faults per step remain (tensors > 32 MiB).
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs without mallopt
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
