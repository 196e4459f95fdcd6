"""Informer light-curve encoder with ProbSparse self-attention (spec section 3).

Parameterisation follows the reference (an Informer encoder as used by AstroM3):

- input embedding: Conv1d(c_in -> d_model, kernel 3, circular padding, no bias) + fixed sinusoidal positions,
  dropout 0.1 (the reference never passes its light-curve dropout to the embedding);
- `n_layers` post-LayerNorm encoder layers: attention (Q/K/V/out Linear layers with bias) -> residual ->
  LayerNorm -> Conv1d(k=1, d_model -> d_ff) -> GELU -> dropout -> Conv1d(k=1, d_ff -> d_model) -> dropout ->
  residual -> LayerNorm; then a final LayerNorm and dropout;
- ProbSparse attention (non-causal): u = factor * ceil(ln L) keys are sampled per query, the sparsity measure
  M(q) = max_j s_qj - sum_j s_qj / L_K over the sampled scores ranks the queries (the reference divides the
  sampled sum by L_K, not by the number of samples); the top-u queries per head get full softmax attention,
  all other queries output mean(V).

Options (all off in the `paper` preset):

- `deterministic_eval`: when not training, the sparsity measure uses *all* keys instead of a random sample,
  i.e. M(q) = max_j s_qj - mean_j s_qj over every (real) key. No randomness is drawn at eval time at all.
- `padding_mask`: padded input steps are zeroed before the embedding (so the circular convolution only sees
  zeros there, exactly what the loader's zero padding gives), padded keys are excluded from the sampling,
  from the sparsity measure and from the softmax, mean(V) runs over real steps only, padded queries are never
  chosen among the top-u. Real-step outputs then do not depend on the values in padded steps.
- `pooling`: "flatten" (paper: padded steps zeroed, L * d_model features) or "mean" (masked mean over real
  steps, d_model features).
- `head_layout`: "reference" reproduces the reference's merge of heads, a plain `view` of the
  (B, H, L, D) attention output as (B, L, H * D), which mixes positions across heads; "standard" transposes
  to (B, L, H, D) first (the fix Informer2020 made in its issue #100).

Every dropout is `fast_ops.Dropout`: plain `nn.Dropout` unless `fast_ops.set_fast_kernels` switches on its
cheaper mask generator (training mode only; the training jobs do, see `train.kernels`).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.constants import LC_CHANNELS, SEQ_LEN
from .fast_ops import Dropout, fast_feed_forward
from .sparse_attention import projected_attention

EMBED_DROPOUT = 0.1  # the reference's DataEmbedding default; its light-curve dropout is not passed there


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """(length, d_model) fixed positional encoding: sin on even channels, cos on odd ones."""
    pe = torch.zeros(length, d_model, dtype=torch.float32)
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div[: d_model // 2])
    return pe


class DataEmbedding(nn.Module):
    """Token convolution + fixed sinusoidal positions + dropout."""

    def __init__(self, c_in: int, d_model: int, max_len: int, dropout: float = EMBED_DROPOUT):
        super().__init__()
        self.token_conv = nn.Conv1d(c_in, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.token_conv.weight, mode="fan_in", nonlinearity="leaky_relu")
        # Not persistent: fully determined by the shape, keeps checkpoints to learnable state only.
        self.register_buffer("pe", sinusoidal_positions(max_len, d_model), persistent=False)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, L, c_in)
        L = x.shape[1]
        if L > self.pe.shape[0]:
            raise ValueError(f"sequence length {L} exceeds the positional table ({self.pe.shape[0]})")
        h = self.token_conv(x.transpose(1, 2)).transpose(1, 2)
        return self.dropout(h + self.pe[:L].to(h.dtype))


def _sampled_scores_rowwise(q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """q_i . k_pos[i, s] for q, k (B, H, L, D) -> (B, H, L_Q, n), one sample column at a time.

    pos: (L_Q, n) key positions shared by the batch, or (B, L_Q, n) per sequence. Works position-major,
    (L, B, H, D), so that a sample column is a gather of whole B*H*D rows (free when q and k are head views of
    an (L, B, H*D) projection, as on the fast path).
    """
    B, H, L_Q, D = q.shape
    qT = q.permute(2, 0, 1, 3).contiguous()
    kT = k.permute(2, 0, 1, 3).contiguous()
    out = torch.empty(L_Q, B, H, pos.shape[-1], dtype=q.dtype, device=q.device)
    for s in range(pos.shape[-1]):
        if pos.dim() == 2:
            ks = kT.index_select(0, pos[:, s])
        else:
            ks = kT.gather(0, pos[:, :, s].t()[:, :, None, None].expand(L_Q, B, H, D))
        out[..., s] = (qT * ks).sum(-1)
    return out.permute(1, 2, 0, 3)


class ProbSparseAttention(nn.Module):
    """Non-causal ProbSparse attention on (B, H, L, D) queries/keys/values; no learnable parameters."""

    def __init__(self, factor: int = 1, deterministic_eval: bool = False, padding_mask: bool = False):
        super().__init__()
        self.factor = factor
        self.deterministic_eval = deterministic_eval
        self.padding_mask = padding_mask

    def n_top(self, L_Q: int) -> int:
        return min(self.factor * math.ceil(math.log(L_Q)), L_Q)

    def uses_mask(self, mask: torch.Tensor | None) -> bool:
        return self.padding_mask and mask is not None

    @torch.no_grad()
    def select(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None,
               rowwise: bool = False) -> torch.Tensor:
        """The top-u queries per head, (B, H, n_top) indices; draws the key samples (not differentiable).

        `rowwise` (the fast path) scores the samples one column at a time on (B, L, H, D) rows instead of
        materialising the (B, H, L, n_sample, D) sampled keys: the same draws, ~5x less time, and sums in a
        different order (fp32 rounding), so a near-tie between two queries may resolve differently.
        """
        B, H, L_Q, D = q.shape
        L_K = k.shape[2]
        n_sample = min(self.factor * math.ceil(math.log(L_K)), L_K)
        use_mask = self.uses_mask(mask)
        qd, kd = q.detach(), k.detach()
        if use_mask:
            keymask = mask[:, None, None, :]  # (B, 1, 1, L_K)
            n_real = mask.sum(-1).clamp(min=1)  # (B,)
        if self.training or not self.deterministic_eval:
            if use_mask:
                # Uniform samples (with replacement) among each sequence's real keys.
                order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # real positions first
                r = (torch.rand(B, L_Q * n_sample, device=q.device) * n_real[:, None]).long()
                r = torch.minimum(r, (n_real - 1)[:, None])
                pos = order.gather(1, r).view(B, L_Q, n_sample)
                denom = n_real.to(q.dtype)[:, None, None]
            else:
                # Reference: one (L_Q, n_sample) index table with replacement, shared by batch and heads,
                # drawn from the CPU generator whatever the device (as the reference does), so a GPU run
                # under torch.manual_seed draws the same samples as a CPU one.
                idx = torch.randint(L_K, (L_Q, n_sample)).to(q.device, non_blocking=True)
                pos = idx
                denom = L_K
            if rowwise:
                qk = _sampled_scores_rowwise(qd, kd, pos)
            elif use_mask:
                k_sample = kd[torch.arange(B, device=q.device)[:, None, None, None],
                              torch.arange(H, device=q.device)[None, :, None, None], pos[:, None]]
                qk = torch.matmul(qd.unsqueeze(-2), k_sample.transpose(-2, -1)).squeeze(-2)  # (B,H,L_Q,n)
            else:
                k_sample = kd[:, :, idx]  # (B, H, L_Q, n_sample, D)
                qk = torch.matmul(qd.unsqueeze(-2), k_sample.transpose(-2, -1)).squeeze(-2)  # (B,H,L_Q,n)
            m = qk.amax(-1) - qk.sum(-1) / denom
        else:
            s = torch.matmul(qd, kd.transpose(-2, -1))  # every key: (B, H, L_Q, L_K)
            if use_mask:
                m = (s.masked_fill(~keymask, float("-inf")).amax(-1)
                     - s.masked_fill(~keymask, 0.0).sum(-1) / n_real.to(s.dtype)[:, None, None])
            else:
                m = s.amax(-1) - s.sum(-1) / L_K
        if use_mask:
            m = m.masked_fill(~mask[:, None, :], float("-inf"))  # padded queries never in the top-u
        return m.topk(self.n_top(L_Q), dim=-1, sorted=False).indices

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """q, k, v: (B, H, L, D); mask: (B, L) bool, True = real step (used only with padding_mask).

        Returns the context (B, H, L, D).
        """
        B, H, L_Q, D = q.shape
        use_mask = self.uses_mask(mask)
        top = self.select(q, k, mask)  # (B, H, n_top)
        n_top = top.shape[-1]
        if use_mask:
            keymask = mask[:, None, None, :]
            n_real = mask.sum(-1).clamp(min=1)

        q_top = q.gather(2, top.unsqueeze(-1).expand(B, H, n_top, D))
        scores_top = torch.matmul(q_top, k.transpose(-2, -1)) * (1.0 / math.sqrt(D))  # (B, H, n_top, L_K)
        if use_mask:
            scores_top = scores_top.masked_fill(~keymask, float("-inf"))
        attn = torch.softmax(scores_top, dim=-1)
        out_top = torch.matmul(attn, v)  # (B, H, n_top, D)

        if use_mask:
            w = mask.to(v.dtype)[:, None, :, None]
            v_mean = (v * w).sum(2, keepdim=True) / n_real.to(v.dtype)[:, None, None, None]
        else:
            v_mean = v.mean(2, keepdim=True)
        context = v_mean.expand(B, H, L_Q, v.shape[-1])
        return context.scatter(2, top.unsqueeze(-1).expand(B, H, n_top, v.shape[-1]), out_top)


class AttentionLayer(nn.Module):
    """Q/K/V/out projections (with bias) around the inner attention.

    With `fast` (switched by `fast_ops.set_fast_kernels`) and no autocast, the same function runs through its
    projections (model/sparse_attention.py): no V, no backward through Q and K, the out projection on a few rows.
    """

    fast: bool = False

    def __init__(self, attention: ProbSparseAttention, d_model: int, n_heads: int, head_layout: str):
        super().__init__()
        if head_layout not in ("reference", "standard"):
            raise ValueError(f"head_layout must be 'reference' or 'standard', got {head_layout!r}")
        d_head = d_model // n_heads
        self.inner_attention = attention
        self.query_projection = nn.Linear(d_model, d_head * n_heads)
        self.key_projection = nn.Linear(d_model, d_head * n_heads)
        self.value_projection = nn.Linear(d_model, d_head * n_heads)
        self.out_projection = nn.Linear(d_head * n_heads, d_model)
        self.n_heads = n_heads
        self.head_layout = head_layout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.fast and not torch.is_autocast_enabled(x.device.type):  # an fp32 path; autocast keeps its casts
            return projected_attention(self, x, mask)
        B, L, _ = x.shape
        H = self.n_heads
        q = self.query_projection(x).view(B, L, H, -1).transpose(1, 2)
        k = self.key_projection(x).view(B, L, H, -1).transpose(1, 2)
        v = self.value_projection(x).view(B, L, H, -1).transpose(1, 2)
        out = self.inner_attention(q, k, v, mask)  # (B, H, L, D)
        if self.head_layout == "reference":
            out = out.contiguous().view(B, L, -1)  # the reference's head/position mixing, kept on purpose
        else:
            out = out.transpose(1, 2).reshape(B, L, -1)
        return self.out_projection(out)


class EncoderLayer(nn.Module):
    """Post-LayerNorm encoder layer with a kernel-1 convolutional feed-forward block."""

    def __init__(self, attention: AttentionLayer, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.attention = attention
        self.conv1 = nn.Conv1d(d_model, d_ff, kernel_size=1)
        self.conv2 = nn.Conv1d(d_ff, d_model, kernel_size=1)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attention(x, mask)))
        # Kernel-1 convolutions applied as the equivalent position-wise linear maps on (B, L, C): same weights
        # and state_dict as Conv1d(k=1), no transposes, and a plain matmul (much faster than conv backward).
        w1, w2 = self.conv1.weight.squeeze(-1), self.conv2.weight.squeeze(-1)
        # The fused block is an fp32 kernel: under autocast (bf16) the unfused ops get autocast's casts.
        if (self.dropout.fast and self.training and 0.0 < self.dropout.p < 1.0
                and not torch.is_autocast_enabled(x.device.type)):
            y = fast_feed_forward(x, w1, self.conv1.bias, w2, self.conv2.bias, self.dropout.p)
        else:
            y = self.dropout(F.gelu(F.linear(x, w1, self.conv1.bias)))
            y = self.dropout(F.linear(y, w2, self.conv2.bias))
        return self.norm2(x + y)


def _no_autocast(device_type: str):
    """Autocast off on devices that have it; others (the `meta` device of shape checks) have none to turn off."""
    if device_type in ("cpu", "cuda", "xpu", "mps"):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class InformerEncoder(nn.Module):
    """Light-curve encoder: forward(lc (B, L, c_in), lc_mask (B, L) 0/1) -> (B, out_features)."""

    def __init__(self, *, c_in: int = LC_CHANNELS, seq_len: int = SEQ_LEN, d_model: int = 128,
                 n_layers: int = 8, n_heads: int = 4, d_ff: int = 512, factor: int = 1, dropout: float = 0.1,
                 deterministic_eval: bool = False, padding_mask: bool = False, pooling: str = "flatten",
                 head_layout: str = "reference", embed_dropout: float = EMBED_DROPOUT):
        super().__init__()
        if pooling not in ("flatten", "mean"):
            raise ValueError(f"pooling must be 'flatten' or 'mean', got {pooling!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.seq_len = seq_len
        self.d_model = d_model
        self.pooling = pooling
        self.padding_mask = padding_mask
        self.embedding = DataEmbedding(c_in, d_model, seq_len, embed_dropout)
        self.layers = nn.ModuleList([
            EncoderLayer(
                AttentionLayer(ProbSparseAttention(factor, deterministic_eval, padding_mask),
                               d_model, n_heads, head_layout),
                d_model, d_ff, dropout)
            for _ in range(n_layers)
        ])
        self.norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)
        self.out_features = seq_len * d_model if pooling == "flatten" else d_model

    def forward(self, lc: torch.Tensor, lc_mask: torch.Tensor) -> torch.Tensor:
        dtype = self.embedding.token_conv.weight.dtype
        lc = lc.to(dtype)
        if lc.shape[1] != self.seq_len and self.pooling == "flatten":
            raise ValueError(f"flatten pooling needs sequences of length {self.seq_len}, got {lc.shape[1]}")
        w = lc_mask.to(dtype)  # (B, L) 1 = real step
        mask = None
        if self.padding_mask:
            real = lc_mask > 0
            # A sequence without any real step (a missing modality) attends over everything instead of NaNs;
            # its output is zeroed below anyway.
            mask = real | ~real.any(dim=1, keepdim=True)
            lc = lc * w.unsqueeze(-1)
        # fp32 even under bf16 autocast: bf16 keeps 2^-8 of the time span (days over a multi-year curve).
        with _no_autocast(lc.device.type):
            x = self.embedding(lc)
        for layer in self.layers:
            x = layer(x, mask)
        x = self.dropout(self.norm(x))
        x = x * w.unsqueeze(-1)  # zero the padded steps
        if self.pooling == "flatten":
            return x.reshape(x.shape[0], -1)
        return x.sum(1) / w.sum(1, keepdim=True).clamp(min=1.0)


def build_informer(cfg) -> InformerEncoder:
    """Encoder factory for the "photo" modality from a resolved ModelConfig."""
    return InformerEncoder(
        d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_ff=cfg.d_ff,
        factor=cfg.prob_factor, dropout=cfg.lc_dropout, deterministic_eval=bool(cfg.deterministic_eval),
        padding_mask=bool(cfg.attn_padding_mask), pooling=cfg.lc_pooling, head_layout=cfg.attn_head_layout,
    )
