"""Metadata encoder (spec section 3): Linear(34, 512) -> ReLU -> Dropout -> Linear(512, 512) -> ReLU -> Dropout,
the reference's layer order (both hidden layers end in ReLU and dropout, no output-only linear)."""

from __future__ import annotations

import torch
from torch import nn

from ..core.constants import META_COLUMNS
from .fast_ops import Dropout


class MetaMLP(nn.Module):
    """forward(meta (B, n_features)) -> (B, hidden)."""

    def __init__(self, *, in_features: int = len(META_COLUMNS), hidden: int = 512, dropout: float = 0.0):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), Dropout(dropout),
        )
        self.out_features = hidden

    def forward(self, meta: torch.Tensor) -> torch.Tensor:
        return self.model(meta.to(self.model[0].weight.dtype))


def build_meta_mlp(cfg) -> MetaMLP:
    """Encoder factory for the "meta" modality from a resolved ModelConfig."""
    return MetaMLP(hidden=cfg.meta_hidden, dropout=cfg.meta_dropout)
