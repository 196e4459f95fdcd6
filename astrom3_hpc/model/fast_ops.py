"""Faster CPU kernels for the training step, switched per model (`set_fast_kernels`), numerics unchanged.

Why: a torch.profiler view of the `paper` preset's CPU step put `aten::bernoulli_` (dropout masks) at ~25 % of
self CPU time, more than the matrix multiplies; the masks of the (B, L, d_ff) feed-forward activations alone
are 6.5 M draws per layer. torch's CPU bernoulli draws one float per element; here one 64-bit word makes four
masks (`random_words`: numpy's SFC64 seeded by one draw of the torch generator per mask).

`Dropout` is an `nn.Dropout` (same repr, no state) that, with `fast = True` and in training mode, keeps an
element when its 16-bit uniform lane u (0..65535) satisfies u >= round(p * 65536), and scales kept elements
by 1 / (1 - p_q), p_q = round(p * 65536) / 65536. The mask is therefore Bernoulli(1 - p_q) per element and
E[out] = x exactly; p_q differs from p by at most 2^-17 (torch's own CPU masks quantise p to its float draw,
2^-24). Every mask is seeded from torch's default CPU generator, so `torch.manual_seed` and checkpointed RNG
state replay them exactly; they are a different stream from `nn.Dropout`'s (switching kernels changes which
elements drop, not the distribution). Eval mode and `fast = False` are plain `nn.Dropout`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_LANES = 65536


def keep_threshold(p: float) -> tuple[int, float]:
    """(signed 16-bit threshold k, scale): keep where lane >= k; scale = 1 / P(keep)."""
    drop = round(p * _LANES)
    return drop - _LANES // 2, _LANES / (_LANES - drop)


def random_words(count: int, device: torch.device) -> torch.Tensor:
    """`count` uniform int64 words, seeded from torch's default generator (one draw per call).

    On the CPU the words come from numpy's SFC64, seeded by that draw: 2.9 ms for 1.6 M words against 6.3 ms for
    torch's mt19937 `random_` (single-threaded, the largest non-matmul op of the fast step). `torch.manual_seed`
    and a checkpointed torch RNG state still replay every mask.
    """
    seed = torch.empty((), dtype=torch.int64).random_(-(2**63), 2**63 - 1).item()
    if torch.device(device).type == "cpu":
        return torch.from_numpy(np.random.SFC64(seed % 2**64).random_raw(count).view(np.int64))
    words = torch.empty(count, dtype=torch.int64, device=device)
    # The full int64 range: random_() without bounds leaves the sign bit 0, which would bias the top lane.
    return words.random_(-(2**63), 2**63 - 1)


def keep_mask(shape: torch.Size, p: float, device: torch.device, dtype: torch.dtype = torch.float32,
              value: float = 1.0) -> torch.Tensor:
    """Keep-mask of `shape` in `dtype`: `value` where kept, 0 where dropped; Bernoulli(1 - p_q) per element.

    One int64 draw of the torch generator gives four 16-bit lanes. The mask is a float tensor, not a bool one,
    because applying it is then one vectorised multiply: on the 2-core CPU class a (12800, 512) `where(bool)`
    takes 3.7 ms, `masked_fill_` 6.1 ms, a float multiply 0.9 ms, and writing the comparison straight into a
    float tensor 1.1 ms.
    """
    n = 1
    for s in shape:
        n *= s
    words = random_words((n + 3) // 4, device)
    k, _ = keep_threshold(p)
    mask = torch.ge(words.view(torch.int16)[:n].view(shape), k, out=torch.empty(shape, dtype=dtype, device=device))
    return mask.mul_(value) if value != 1.0 else mask


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout with 16-bit-lane masks (see the module docstring)."""
    if p <= 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    return _MaskedScale.apply(x, keep_mask(x.shape, p, x.device, x.dtype, keep_threshold(p)[1]))


class _FeedForward(torch.autograd.Function):
    """dropout(dropout(gelu(x W1^T + b1)) W2^T + b2) on (N, C) rows, both dropout scales folded into the matmuls.

    The scales s1, s2 ride on the second matmul (addmm's alpha and beta) and on W2 in the backward, so the wide
    (N, d_ff) activation is touched by gelu and one mask multiply forward, one mask multiply and gelu's backward
    backward, with 0/1 masks.
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, keep1, keep2, s1, s2):
        h = torch.addmm(b1, x, w1.t())
        a = F.gelu(h).mul_(keep1)
        out = torch.addmm(b2, a, w2.t(), beta=s2, alpha=s1 * s2).mul_(keep2)
        ctx.save_for_backward(x, w1, w2, h, a, keep1, keep2)
        ctx.scales = (s1, s2)
        return out

    @staticmethod
    def backward(ctx, g):
        x, w1, w2, h, a, keep1, keep2 = ctx.saved_tensors
        s1, s2 = ctx.scales
        go = g * keep2
        dw2 = torch.mm(go.t(), a).mul_(s1 * s2)
        db2 = go.sum(0).mul_(s2)
        da = torch.mm(go, w2 * (s1 * s2)).mul_(keep1)
        dh = torch.ops.aten.gelu_backward(da, h)
        return torch.mm(dh, w1), torch.mm(dh.t(), x), dh.sum(0), dw2, db2, None, None, None, None


def fast_feed_forward(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                      p: float) -> torch.Tensor:
    """Training-mode dropout(dropout(gelu(linear(x, w1, b1)), p) @ w2^T + b2, p) on x (..., C), fast masks.

    The masks are drawn in the order the unfused `Dropout` layers draw them (first the wide one), so under one
    seed this equals the unfused fast path up to fp32 rounding.
    """
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    n = x2.shape[0]
    keep1 = keep_mask((n, w1.shape[0]), p, x.device, x.dtype)
    keep2 = keep_mask((n, w2.shape[0]), p, x.device, x.dtype)
    s = keep_threshold(p)[1]
    out = _FeedForward.apply(x2, w1, b1, w2, b2, keep1, keep2, s, s)
    return out.view(*lead, w2.shape[0])


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
