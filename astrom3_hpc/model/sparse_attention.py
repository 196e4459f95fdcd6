"""ProbSparse attention computed through its projections: the same function with ~1/6 of the work.

Why: in ProbSparse attention only u = ceil(ln L) queries per head (6 of 200) attend; every other query outputs
mean(V). The reference nevertheless runs all four (B*L, d) x (d, d) projections forward and backward on every
position, a third of the encoder's FLOPs. Linearity gives the same outputs without them:

- Q and K are needed in full only to *choose* the top-u queries, which is not differentiable: they are computed
  without autograd (forward only, and with the very same `F.linear` calls, so the choice is bit-identical).
- The chosen queries are re-projected with autograd from their input rows: q_top = x_top Wq_h^T + bq_h.
- Scores: q_top K^T = (q_top Wk_h) X^T + (q_top . bk_h): K itself is never formed.
- Values: attn V = (attn X) Wv_h^T + bv_h because each attention row sums to one, and mean(V) = mean(X) Wv_h^T +
  bv_h: V itself is never formed.
- Output projection: the context is mean(V) per head everywhere except the chosen rows, so each row of the
  out-projection input is one of a few head patterns (`_row_patterns`) plus a sparse correction per chosen query.
  The pattern outputs are projected once per batch row and expanded; the corrections are added with `index_add`.

Both head layouts are handled: "reference" (the (B, H, L, D) context viewed as (B, L, H*D), which mixes
positions across heads) and "standard". Results equal the dense path within fp32 rounding (different summation
order; tests/test_sparse_attention.py compares outputs and gradients), and the key samples are drawn by the same
`ProbSparseAttention.select` in the same order, so RNG streams and checkpoints are unchanged.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=32)
def _row_patterns(L: int, H: int, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """For the out-projection input viewed as (L rows, H blocks of D): which head fills block j of row r.

    Returns (patterns (n_pat, H) head per block, pattern_of_row (L,)); with every query at mean(V) a row's
    content depends only on this head pattern.
    """
    r = torch.arange(L)[:, None]
    j = torch.arange(H)[None, :]
    heads = (r * H + j) // L if layout == "reference" else j.expand(L, H)
    patterns, pattern_of_row = torch.unique(heads, dim=0, return_inverse=True)
    return patterns, pattern_of_row


def _row_and_block(top: torch.Tensor, L: int, H: int, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Row r and block j of the out-projection input that the context of (head h, query l) lands in."""
    if layout == "reference":
        h = torch.arange(H, device=top.device)[None, :, None]
        unit = h * L + top  # position of the D-block in the flat (H, L) order
        return unit // H, unit % H
    return top, torch.arange(H, device=top.device)[None, :, None].expand_as(top)


def projected_attention(layer, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """`layer` (an informer.AttentionLayer) applied to x (B, L, C); same result as its dense forward."""
    B, L, C = x.shape
    H = layer.n_heads
    D = C // H
    inner = layer.inner_attention
    qp, kp, vp, op = layer.query_projection, layer.key_projection, layer.value_projection, layer.out_projection
    with torch.no_grad():
        # Position-major (L, B, H*D) projections: the key sampling then gathers whole rows.
        xT = x.detach().transpose(0, 1).contiguous()
        q = F.linear(xT, qp.weight, qp.bias).view(L, B, H, D).permute(1, 2, 0, 3)
        k = F.linear(xT, kp.weight, kp.bias).view(L, B, H, D).permute(1, 2, 0, 3)
        top = inner.select(q, k, mask, rowwise=True)  # (B, H, u)
        del q, k, xT
    u = top.shape[-1]
    use_mask = inner.uses_mask(mask)

    # The chosen queries, projected again with autograd: (B, H, u, D).
    x_top = x.gather(1, top.reshape(B, H * u, 1).expand(B, H * u, C)).view(B, H, u, C)
    q_top = torch.einsum("bhuc,hdc->bhud", x_top, qp.weight.view(H, D, C)) + qp.bias.view(1, H, 1, D)

    # Scores against every key without forming K. The q_top . bk term is one constant per row, which the softmax
    # cancels; it is kept (it costs B*H*u dot products) so that bk gets its gradient, zero up to rounding, as in
    # the dense path, rather than none (Adam would then skip bk's weight decay and moment updates).
    a = torch.einsum("bhud,hdc->bhuc", q_top, kp.weight.view(H, D, C)).reshape(B, H * u, C)
    q_bk = (q_top * kp.bias.view(1, H, 1, D)).sum(-1, keepdim=True)
    scores = (torch.bmm(a, x.transpose(1, 2)).view(B, H, u, L) + q_bk) * (1.0 / math.sqrt(D))
    if use_mask:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    attn = torch.softmax(scores, dim=-1)

    wv = vp.weight.view(H, D, C)
    ax = torch.bmm(attn.view(B, H * u, L), x).view(B, H, u, C)
    out_top = torch.einsum("bhuc,hdc->bhud", ax, wv) + vp.bias.view(1, H, 1, D)
    if use_mask:
        w = mask.to(x.dtype)
        x_mean = (x * w[:, :, None]).sum(1) / w.sum(1, keepdim=True).clamp(min=1.0)
    else:
        x_mean = x.mean(1)
    v_mean = torch.einsum("bc,hdc->bhd", x_mean, wv) + vp.bias.view(1, H, D)

    # Output projection: per-block slices of Wo, (H blocks, D, C_out).
    wo = op.weight.view(op.weight.shape[0], H, D).permute(1, 2, 0)
    per_block = torch.einsum("bhd,jdo->bhjo", v_mean, wo)  # (B, head, block, C_out)
    patterns, pattern_of_row = _row_patterns(L, H, layer.head_layout)
    patterns, pattern_of_row = patterns.to(x.device), pattern_of_row.to(x.device)
    blocks = torch.arange(H, device=x.device)
    pattern_out = per_block[:, patterns, blocks[None, :]].sum(2)  # (B, n_pat, C_out)
    y = pattern_out.index_select(1, pattern_of_row)  # (B, L, C_out): every query at mean(V)

    # Corrections at the chosen queries: (out_top - mean V) through the block of Wo its row position uses.
    delta = out_top - v_mean[:, :, None, :]
    row, block = _row_and_block(top, L, H, layer.head_layout)
    corr = torch.einsum("bhud,jdo->bhujo", delta, wo)  # (B, H, u, block, C_out): small (u = ln L)
    corr = corr.gather(3, block[..., None, None].expand(B, H, u, 1, corr.shape[-1])).squeeze(3)
    flat_rows = (row + torch.arange(B, device=x.device)[:, None, None] * L).reshape(-1)
    y = y.reshape(B * L, -1).index_add(0, flat_rows, corr.reshape(B * H * u, -1)).view(B, L, -1)
    return y + op.bias
