"""Several classifiers of one architecture trained side by side in one engine (`finetune.members`).

A network trained on a few thousand objects lands, depending on its initial weights alone, several macro-F1 points
apart from its twin (docs/lightcurves_results.md); the mean of a few members' class probabilities is steadier and
usually better than its average member. Training them in one module, rather than as separate runs averaged
afterwards (`astrom3 ensemble`), keeps one run: one command, one run directory, one checkpoint to resume, one
model for `astrom3 predict` and sweeps. Each member has its own loss on the same batches (so the optimizer's
per-parameter state keeps them independent); validation, the kept epoch and the learning-rate plateau follow the
members' averaged probabilities, which is the model that is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..core.config import RunConfig


class Members(nn.Module):
    """`forward` stacks the members' logits: (n_members, batch, n_classes)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"Members needs at least two classifiers, got {len(members)}")
        self.members = nn.ModuleList(members)

    @property
    def encoders(self) -> dict[str, nn.Module]:
        """Every member's encoders by "<member>.<modality>" (what the engine compiles, one module at a time)."""
        return {f"{k}.{m}": enc for k, member in enumerate(self.members) for m, enc in member.encoders.items()}

    def forward(self, batch: dict) -> torch.Tensor:
        return torch.stack([m(batch) for m in self.members])


def member_seeds(seed: int, n: int) -> list[int]:
    """The initial weights' seed of each of n members: the run's seed, then the next ones."""
    return [seed + k for k in range(n)]


def build_members(build: Callable[[], nn.Module], n: int, seed: int) -> nn.Module:
    """`build()` itself for n == 1; else `Members` of n builds, member k's weights drawn with torch seed `seed` + k
    for k >= 1 and member 0's from the current generator, as a single model's are: after seeding with `seed`,
    the weights runs with `train.model_seed` = seed, seed + 1, ... would start from."""
    if n == 1:
        return build()
    members = [build()]
    for member_seed in member_seeds(seed, n)[1:]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(member_seed)
            members.append(build())
    return Members(members)


def finetune_classifier(cfg: RunConfig, n_classes: int, seed: int = 0) -> nn.Module:
    """The model a fine-tune run of `cfg` trains: finetune.members classifiers of its mode (`build_members`), or
    one. `seed` only matters for members' initial weights (a trained run's are loaded over them)."""
    from .classifier import build_classifier

    f = cfg.finetune
    return build_members(lambda: build_classifier(cfg.model, f.mode, n_classes, f.fusion), f.members, seed)


def each_member(model: nn.Module) -> list[nn.Module]:
    """The classifiers of `model`: its members, or the model itself."""
    return list(model.members) if isinstance(model, Members) else [model]


def log_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(batch, n_classes) log class probabilities from a classifier's logits; with members, the log of their mean
    probabilities (through logsumexp: a class every member rules out stays finite)."""
    logp = torch.log_softmax(logits.float(), -1)
    if logits.dim() == 3:
        return torch.logsumexp(logp, 0) - math.log(logits.shape[0])
    return logp


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(batch, n_classes) probabilities from a classifier's logits, averaged over members where it has them."""
    probs = torch.softmax(logits.float(), -1)
    return probs.mean(0) if logits.dim() == 3 else probs


class ClassifierEmbedding(nn.Module):
    """A fine-tuned model seen as an embedding model (`astrom3 embed` and the science tools on a fine-tune run):
    one view, named by the run's mode, whose vector is what the head classifies (the encoder's output, or the
    fused embedding of mode "all"), L2-normalised. With members, their unit vectors side by side scaled by
    1/sqrt(n): a unit vector whose cosine similarity is the mean of the members' own (their feature spaces are
    unrelated, so averaging the vectors themselves would mean nothing)."""

    def __init__(self, model: nn.Module, mode: str):
        super().__init__()
        self.model = model
        self.modalities: tuple[str, ...] = (mode,)
        self.reads: tuple[str, ...] = tuple(each_member(model)[0].modalities)  # what the batches must carry
        self.embed_dim = sum(m.head.in_features for m in each_member(model))

    def encode(self, view: str, batch: dict) -> torch.Tensor:
        parts = [nn.functional.normalize(m.features(batch).float(), dim=-1) for m in each_member(self.model)]
        return torch.cat(parts, -1) / math.sqrt(len(parts))
