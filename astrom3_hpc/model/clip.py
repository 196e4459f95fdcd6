"""AstroM3 CLIP model: one encoder + linear projection per modality, L2-normalised embeddings, and one
learnable temperature per unordered modality pair. The contrastive loss lives in astrom3_hpc.train.loss (it
gathers across ranks; the model does not know about them).

Attribute names are part of the checkpoint format (classifiers load encoders by these names):

    encoders          nn.ModuleDict  modality -> encoder (has `out_features`)
    projections       nn.ModuleDict  modality -> Linear(out_features, embed_dim)
    log_logit_scales  nn.ParameterDict "a__b" -> log temperature, shape (1,) (a 0-dim parameter crashes
                      deepspeed.initialize), init log(logit_scale_init)
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import ModelConfig
from .presets import resolve
from .registry import get_modality


def pair_key(a: str, b: str) -> str:
    return f"{a}__{b}"


def modality_pairs(modalities: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """Unordered pairs in config order: (m0,m1), (m0,m2), ..., (m1,m2), ..."""
    return list(itertools.combinations(modalities, 2))


def _batch_args(name: str, keys: tuple[str, ...], batch: dict) -> list[torch.Tensor]:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"modality '{name}' needs batch key(s) {missing}; batch has {sorted(batch)}")
    return [batch[k] for k in keys]


class AstroM3CLIP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg = resolve(cfg)
        self.cfg = cfg
        self.modalities: tuple[str, ...] = tuple(cfg.modalities)
        specs = {m: get_modality(m) for m in self.modalities}
        self.input_keys: dict[str, tuple[str, ...]] = {m: specs[m].keys_for(cfg) for m in self.modalities}
        self.encoders = nn.ModuleDict({m: specs[m].build(cfg) for m in self.modalities})
        self.projections = nn.ModuleDict(
            {m: nn.Linear(self.encoders[m].out_features, cfg.embed_dim) for m in self.modalities})
        self._pairs = modality_pairs(self.modalities)
        init = math.log(cfg.logit_scale_init)
        self.log_logit_scales = nn.ParameterDict(
            {pair_key(a, b): nn.Parameter(torch.full((1,), init)) for a, b in self._pairs})
        self.logit_scale_max = float(cfg.logit_scale_max)

    def pairs(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def logit_scales(self) -> dict[tuple[str, str], torch.Tensor]:
        """Temperatures per pair: exp(log scale) clamped to [1, logit_scale_max], shape (1,)."""
        return {(a, b): self.log_logit_scales[pair_key(a, b)].exp().clamp(1.0, self.logit_scale_max)
                for a, b in self._pairs}

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def encode(self, modality: str, batch: dict) -> torch.Tensor:
        """Normalised (B, embed_dim) embedding of one modality."""
        feats = self.encoders[modality](*_batch_args(modality, self.input_keys[modality], batch))
        proj = self.projections[modality]
        return F.normalize(proj(feats.to(proj.weight.dtype)), dim=-1)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Normalised embeddings per modality. Rows of missing modalities (batch["present"] False) are computed
        from whatever the loader filled in; masking them out of the loss is the loss's job."""
        return {m: self.encode(m, batch) for m in self.modalities}


def build_clip(cfg: ModelConfig) -> AstroM3CLIP:
    return AstroM3CLIP(cfg)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameter_breakdown(model: AstroM3CLIP) -> dict[str, int]:
    """Parameter counts: encoder.<m>, projection.<m>, logit_scales, total."""
    out: dict[str, int] = {}
    for m in model.modalities:
        out[f"encoder.{m}"] = count_parameters(model.encoders[m])
    for m in model.modalities:
        out[f"projection.{m}"] = count_parameters(model.projections[m])
    out["logit_scales"] = sum(p.numel() for p in model.log_logit_scales.values())
    out["total"] = count_parameters(model)
    return out
