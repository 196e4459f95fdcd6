"""The reference implementation's computation of the AstroM3 CLIP model, re-derived as a speed baseline.

Benchmark-only. The authors' code (github MeriDK/AstroM3) cannot be downloaded here, so this module re-derives,
from the op-by-op description in /work/shared/golden/README.md section 2 (no code copied), how the reference
computes the model, and keeps its costly choices on purpose, because it is the baseline the project's training
step is timed against:

- ProbSparse attention indexes an expanded (B, H, L_Q, L_K, D) view of the keys with the (L_Q, U) sample table,
  materialising (B, H, L_Q, U, D) sampled keys; the selected queries' context rows are written into a clone of
  the expanded mean(V) with an indexed assignment; the (B, H, L, D) context is reinterpreted as (B, L, H * D)
  without a transpose back (the reference's head scramble);
- the feed-forward block is two kernel-1 `nn.Conv1d` with a transpose before and after;
- every dropout is an `nn.Dropout` module, placed as in the project's `paper` preset (which follows the reference);
- the token embedding is a circular `nn.Conv1d` applied to the permuted input;
- the loss builds the full logit matrices of the three pairs and sums CE(logits) + CE(logits.T) per pair;
- training is a plain `torch.optim.Adam` loop with gradient-norm clipping.

Module and parameter names equal the project's `AstroM3CLIP`, so `ref.load_state_dict(project.state_dict())`
gives the same weights; with the same RNG draws (torch.manual_seed before the forward, dropout off or the plain
`nn.Dropout` kernels) both compute the same loss within fp32 tolerance (tests/test_fast_path.py checks this).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# The checkout this file sits in, not whatever astrom3_hpc the venv has installed (another branch's tree).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from astrom3_hpc.model.informer import sinusoidal_positions  # noqa: E402
from astrom3_hpc.model.presets import resolve  # noqa: E402

EMBED_DROPOUT = 0.1


class RefEmbedding(nn.Module):
    def __init__(self, c_in: int, d_model: int, max_len: int):
        super().__init__()
        self.token_conv = nn.Conv1d(c_in, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False)
        self.register_buffer("pe", sinusoidal_positions(max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(EMBED_DROPOUT)

    def forward(self, x):
        v = self.token_conv(x.permute(0, 2, 1)).transpose(1, 2)
        return self.dropout(v + self.pe[: x.shape[1]].unsqueeze(0))


class RefAttention(nn.Module):
    """Projections + ProbSparse attention the reference's way (names as the project's AttentionLayer)."""

    def __init__(self, d_model: int, n_heads: int, factor: int):
        super().__init__()
        self.query_projection = nn.Linear(d_model, d_model)
        self.key_projection = nn.Linear(d_model, d_model)
        self.value_projection = nn.Linear(d_model, d_model)
        self.out_projection = nn.Linear(d_model, d_model)
        self.n_heads = n_heads
        self.factor = factor

    def forward(self, x):
        B, L, _ = x.shape
        H = self.n_heads
        q = self.query_projection(x).view(B, L, H, -1).transpose(2, 1)  # (B, H, L, D)
        k = self.key_projection(x).view(B, L, H, -1).transpose(2, 1)
        v = self.value_projection(x).view(B, L, H, -1).transpose(2, 1)
        D = q.shape[-1]
        n_sample = min(self.factor * math.ceil(math.log(L)), L)
        n_top = min(self.factor * math.ceil(math.log(L)), L)
        # Sampled scores over the expanded key view: (B, H, L, U, D) is materialised by the indexing.
        k_expand = k.unsqueeze(-3).expand(B, H, L, L, D)
        sample = torch.randint(L, (L, n_sample))
        k_sample = k_expand[:, :, torch.arange(L).unsqueeze(1), sample, :]
        qk_sample = torch.matmul(q.unsqueeze(-2), k_sample.transpose(-2, -1)).squeeze(-2)
        sparsity = qk_sample.max(-1)[0] - qk_sample.sum(-1) / L
        top = sparsity.topk(n_top, sorted=False)[1]  # (B, H, u)
        b_idx = torch.arange(B)[:, None, None]
        h_idx = torch.arange(H)[None, :, None]
        q_top = q[b_idx, h_idx, top, :]
        scores = torch.matmul(q_top, k.transpose(-2, -1)) / math.sqrt(D)
        context = v.mean(dim=-2).unsqueeze(-2).expand(B, H, L, D).clone()
        context[b_idx, h_idx, top, :] = torch.matmul(torch.softmax(scores, dim=-1), v)
        out = context.contiguous().view(B, L, -1)  # the head scramble
        return self.out_projection(out)


class RefEncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, factor: int, dropout: float):
        super().__init__()
        self.attention = RefAttention(d_model, n_heads, factor)
        self.conv1 = nn.Conv1d(d_model, d_ff, kernel_size=1)
        self.conv2 = nn.Conv1d(d_ff, d_model, kernel_size=1)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.dropout(self.attention(x))
        y = x = self.norm1(x)
        y = self.dropout(F.gelu(self.conv1(y.transpose(-1, 1))))
        y = self.dropout(self.conv2(y).transpose(-1, 1))
        return self.norm2(x + y)


class RefInformer(nn.Module):
    def __init__(self, cfg, c_in: int = 9, seq_len: int = 200):
        super().__init__()
        self.embedding = RefEmbedding(c_in, cfg.d_model, seq_len)
        self.layers = nn.ModuleList([RefEncoderLayer(cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.prob_factor,
                                                     cfg.lc_dropout) for _ in range(cfg.n_layers)])
        self.norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.lc_dropout)

    def forward(self, lc, lc_mask):
        x = self.embedding(lc)
        for layer in self.layers:
            x = layer(x)
        x = self.dropout(self.norm(x))
        x = x * lc_mask.unsqueeze(-1)
        return x.view(x.shape[0], -1)


class RefGalSpecNet(nn.Module):
    def __init__(self, cfg, in_channels: int = 3):
        super().__init__()
        chans = [in_channels, *cfg.spec_channels]
        layers: list[nn.Module] = []
        for i in range(len(cfg.spec_channels)):
            layers += [nn.Conv1d(chans[i], chans[i + 1], kernel_size=3), nn.ReLU()]
            if i < len(cfg.spec_channels) - 1:
                layers.append(nn.MaxPool1d(4))
        self.layers = nn.Sequential(*layers)
        self.dropout = nn.Dropout(cfg.spec_dropout)

    def forward(self, spec):
        return self.dropout(self.layers(spec).view(spec.shape[0], -1))


class RefMeta(nn.Module):
    def __init__(self, cfg, in_features: int = 34):
        super().__init__()
        h = cfg.meta_hidden
        self.model = nn.Sequential(nn.Linear(in_features, h), nn.ReLU(), nn.Dropout(cfg.meta_dropout),
                                   nn.Linear(h, h), nn.ReLU(), nn.Dropout(cfg.meta_dropout))

    def forward(self, meta):
        return self.model(meta)


class RefCLIP(nn.Module):
    """Photometry, spectra, metadata; forward(batch) -> the three pairs' full logit matrices."""

    def __init__(self, cfg):
        super().__init__()
        cfg = resolve(cfg)
        if list(cfg.modalities) != ["photo", "spectra", "meta"] or cfg.preset != "paper":
            raise ValueError("the reference baseline is the paper preset with photo, spectra, meta")
        self.encoders = nn.ModuleDict({"photo": RefInformer(cfg), "spectra": RefGalSpecNet(cfg),
                                       "meta": RefMeta(cfg)})
        feats = {"photo": 200 * cfg.d_model, "spectra": RefGalSpecNet(cfg).layers(torch.zeros(1, 3, 2575)).numel(),
                 "meta": cfg.meta_hidden}
        self.projections = nn.ModuleDict({m: nn.Linear(feats[m], cfg.embed_dim) for m in feats})
        init = math.log(cfg.logit_scale_init)
        self.log_logit_scales = nn.ParameterDict({k: nn.Parameter(torch.full((1,), init))
                                                  for k in ("photo__spectra", "photo__meta", "spectra__meta")})

    def forward(self, batch):
        p = self.projections["photo"](self.encoders["photo"](batch["lc"], batch["lc_mask"]))
        s = self.projections["spectra"](self.encoders["spectra"](batch["spec"]))
        m = self.projections["meta"](self.encoders["meta"](batch["meta"]))
        p, s, m = (e / e.norm(dim=-1, keepdim=True) for e in (p, s, m))
        scale = {k: v.exp().clamp(1.0, 100.0) for k, v in self.log_logit_scales.items()}
        return {"ps": scale["photo__spectra"] * p @ s.T, "sm": scale["spectra__meta"] * s @ m.T,
                "mp": scale["photo__meta"] * m @ p.T}


def reference_loss(logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over the pairs of CE(logits, arange) + CE(logits.T, arange), mean reduction."""
    total = 0.0
    for lg in logits.values():
        labels = torch.arange(lg.shape[0], device=lg.device)
        total = total + F.cross_entropy(lg, labels) + F.cross_entropy(lg.T, labels)
    return total


def main() -> None:
    """A module, not a benchmark: --help says so and where it runs, instead of printing nothing."""
    import argparse

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Nothing runs from here. The baseline is timed by benchmarks/train_step.py (execution `reference`), "
               "benchmarks/gpu_step.py (execution `reference`) and profiled by benchmarks/profile_step.py "
               "--reference; tests/test_fast_path.py checks it against the project's model.")
    ap.parse_args()
    ap.print_help()


if __name__ == "__main__":
    main()
