"""Classifiers for fine-tuning (spec section 3).

- single modality (`mode` = a modality name): encoders.<mode> + head Linear(out_features, n_classes), the
  reference's `classification=True` encoders (flattened features straight into the head);
- `mode="all"`: encoders + projections of every configured modality, normalised embeddings fused by average
  (head Linear(embed_dim, n_classes)) or concatenation (Linear(M * embed_dim, n_classes)).

Encoder (and projection) attribute names match AstroM3CLIP, so `load_pretrained_encoders` copies CLIP weights by
name with strict key and shape checks.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import ModelConfig
from ..core.constants import MODALITIES as STORE_MODALITIES, N_CLASSES
from ..core.errors import EXIT_WEIGHTS_MISMATCH
from .clip import _batch_args
from .presets import resolve
from .registry import get_modality


class PretrainedLoadError(RuntimeError):
    """CLIP weights do not fit the classifier; the message names the offending keys."""

    exit_code = EXIT_WEIGHTS_MISMATCH  # an expected error of the CLI (message, no traceback)


class AstroM3Classifier(nn.Module):
    def __init__(self, cfg: ModelConfig, mode: str, n_classes: int = N_CLASSES, fusion: str = "avg"):
        super().__init__()
        cfg = resolve(cfg)
        self.cfg = cfg
        self.mode = mode
        mods = mode_modalities(cfg.modalities, mode)
        if fusion not in ("avg", "concat"):
            raise ValueError(f"fusion must be 'avg' or 'concat', got {fusion!r}")
        self.modalities = mods
        self.fusion = fusion if mode == "all" else None
        specs = {m: get_modality(m) for m in mods}
        self.input_keys = {m: specs[m].keys_for(cfg) for m in mods}
        self.encoders = nn.ModuleDict({m: specs[m].build(cfg) for m in mods})
        if mode == "all":
            self.projections = nn.ModuleDict(
                {m: nn.Linear(self.encoders[m].out_features, cfg.embed_dim) for m in mods})
            in_features = cfg.embed_dim * (len(mods) if fusion == "concat" else 1)
        else:
            self.projections = None
            in_features = self.encoders[mode].out_features
        self.head = nn.Linear(in_features, n_classes)

    def features(self, batch: dict) -> torch.Tensor:
        """The vector fed to the head."""
        if self.projections is None:
            m = self.mode
            return self.encoders[m](*_batch_args(m, self.input_keys[m], batch))
        embs = []
        for m in self.modalities:
            proj = self.projections[m]
            f = self.encoders[m](*_batch_args(m, self.input_keys[m], batch))
            embs.append(F.normalize(proj(f.to(proj.weight.dtype)), dim=-1))
        if self.fusion == "concat":
            return torch.cat(embs, dim=-1)
        stack = torch.stack(embs, dim=1)  # (B, M, E)
        present = batch.get("present")
        if present is None:
            return stack.mean(1)
        # Average over the modalities each object has (a full row gives the reference's plain mean). The loader's
        # mask has one column per store modality: a model of fewer reads its own columns.
        if present.shape[1] == len(STORE_MODALITIES) and set(self.modalities) <= set(STORE_MODALITIES):
            present = present[:, [STORE_MODALITIES.index(m) for m in self.modalities]]
        if present.shape != stack.shape[:2]:
            raise ValueError(f"batch['present'] has shape {tuple(present.shape)}, expected "
                             f"{tuple(stack.shape[:2])} (one column per modality in {list(self.modalities)})")
        w = present.to(stack.dtype).unsqueeze(-1)
        return (stack * w).sum(1) / w.sum(1).clamp(min=1.0)

    def forward(self, batch: dict) -> torch.Tensor:
        f = self.features(batch)
        return self.head(f.to(self.head.weight.dtype))


def mode_modalities(modalities, mode: str) -> tuple[str, ...]:
    """The modalities a classifier of `mode` reads: every configured one for "all", else the mode's own."""
    if mode == "all":
        return tuple(modalities)
    if mode in modalities:
        return (mode,)
    raise ValueError(f"classifier mode must be 'all' or one of {list(modalities)}, got {mode!r}")


def build_classifier(cfg: ModelConfig, mode: str, n_classes: int = N_CLASSES, fusion: str = "avg"
                     ) -> AstroM3Classifier:
    return AstroM3Classifier(cfg, mode, n_classes, fusion)


def _strip_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a wrapper prefix ("module.", "_orig_mod.") shared by every key, as DDP/DeepSpeed/compile add."""
    out = dict(sd)
    for prefix in ("module.", "_orig_mod."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def load_pretrained_encoders(classifier: AstroM3Classifier, clip_state_dict: Mapping[str, torch.Tensor],
                             include_projections: bool) -> list[str]:
    """Copy CLIP encoder (and optionally projection) weights into `classifier` by name.

    Strict for the copied part: every classifier key under encoders.<m>. (projections.<m>.) must exist in the
    CLIP state dict with the same shape, and the CLIP state dict must have no extra keys there. Raises
    PretrainedLoadError naming missing, unexpected and shape-mismatched keys. Returns the loaded keys, sorted.
    """
    if include_projections and getattr(classifier, "projections", None) is None:
        raise PretrainedLoadError(
            f"classifier mode '{classifier.mode}' has no projections; use include_projections=False")
    sd = _strip_prefix(clip_state_dict)
    prefixes = [f"encoders.{m}." for m in classifier.modalities]
    if include_projections:
        prefixes += [f"projections.{m}." for m in classifier.modalities]
    own = {k: v for k, v in classifier.state_dict().items() if k.startswith(tuple(prefixes))}
    src = {k: v for k, v in sd.items() if k.startswith(tuple(prefixes))}
    missing = sorted(set(own) - set(src))
    unexpected = sorted(set(src) - set(own))
    mismatched = sorted(f"{k}: checkpoint {tuple(src[k].shape)} vs classifier {tuple(own[k].shape)}"
                        for k in set(own) & set(src) if tuple(src[k].shape) != tuple(own[k].shape))
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing in checkpoint: {missing}")
        if unexpected:
            parts.append(f"not in classifier: {unexpected}")
        if mismatched:
            parts.append(f"shape mismatch: {mismatched}")
        raise PretrainedLoadError("CLIP weights do not fit the classifier (were both built from the same model "
                                  "config/preset?); " + "; ".join(parts))
    with torch.no_grad():
        result = classifier.load_state_dict(src, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    return sorted(src)
