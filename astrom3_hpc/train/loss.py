"""Multimodal contrastive (CLIP) loss over every pair of modalities, with cross-rank negatives.

Single process, all modalities present, this is the reference loss (spec section 3): for each pair (a, b)
``CE(s * A @ B.T, arange) + CE(s * B @ A.T, arange)``, not halved, summed over pairs.

Distributed (the loss owns the gather, as in open_clip): per step all modalities' embeddings (and presence
masks) are gathered ONCE, in one packed collective, with gradients (`astrom3_hpc.distributed.gather`). Each rank
computes its local rows against the global columns: logits (B_local x N_global) -- never N x N --, labels
``offset_r + arange(B_r)``. Rank r returns

    loss_r = sum_pairs  W / N_valid * sum_{valid local rows i} [CE_ab(i) + CE_ba(i)]

so that the MEAN over ranks of loss_r is exactly the single-process full-batch loss (each CE a mean over all
valid rows of the global batch), and, because data-parallel training averages parameter gradients over ranks
(DDP, DeepSpeed), the averaged gradient equals the single-process full-batch gradient. With equal batches
and no masks, loss_r is simply rank r's local mean CE. Unequal per-rank batch sizes are handled the same way
(W / N weighting), so the mean over ranks is still the full-batch value.

Missing modalities (`present` masks): for pair (a, b) only objects having both count. Rows of objects missing
a or b are excluded from the CE mean; columns of such objects are set to -inf before the softmax; N_valid is
the number of such objects in the GLOBAL batch (from the gathered masks). A pair with no valid object
contributes 0. Embeddings of absent objects are zeroed before use, so NaN/garbage there cannot leak into
values or gradients.
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn

from astrom3_hpc.distributed.collectives import active
from astrom3_hpc.distributed.gather import all_gather_with_grad, gather_sizes

Pair = tuple[str, str]


class ContrastiveLoss(nn.Module):
    """Sum of symmetric CLIP losses over all pairs of `modalities` (any number >= 2).

    forward(embeddings, logit_scales, present=None) -> (total, {(a, b): pair_loss})
      embeddings:   {modality: (B, D) L2-normalised}, same B for every modality on this rank.
      logit_scales: {(a, b): scale} -- the multiplier itself (already exp'd/clamped), a tensor of shape () or
                    (1,) or a float. (b, a) is accepted for (a, b).
      present:      optional {modality: (B,) bool}; a missing key means "all present".
    gather: use cross-rank negatives when torch.distributed is initialised with > 1 rank (else identical to
    the single-process loss on the local batch). Half/bfloat16 embeddings are gathered as they are and the
    logits are computed in float32 (`upcast=True`).
    """

    def __init__(self, modalities: Sequence[str], gather: bool = True, *, group=None, upcast: bool = True,
                 allow_unequal: bool = True):
        super().__init__()
        modalities = list(modalities)
        if len(modalities) < 2 or len(set(modalities)) != len(modalities):
            raise ValueError(f"need at least two distinct modalities, got {modalities}")
        self.modalities = modalities
        self.pairs: list[Pair] = list(itertools.combinations(modalities, 2))
        self.gather = gather
        self.group = group
        self.upcast = upcast
        self.allow_unequal = allow_unequal

    def extra_repr(self) -> str:
        return f"modalities={self.modalities}, gather={self.gather}"

    @staticmethod
    def _scale(logit_scales: Mapping[Pair, torch.Tensor | float], a: str, b: str):
        s = logit_scales.get((a, b), logit_scales.get((b, a)))
        if s is None:
            raise KeyError(f"no logit scale for pair ({a!r}, {b!r}); have {list(logit_scales)}")
        if isinstance(s, torch.Tensor):
            if s.numel() != 1:
                raise ValueError(f"logit scale for ({a}, {b}) must have one element, got shape {tuple(s.shape)}")
            return s.reshape(())
        return float(s)

    def forward(self, embeddings: Mapping[str, torch.Tensor],
                logit_scales: Mapping[Pair, torch.Tensor | float],
                present: Mapping[str, torch.Tensor] | None = None, sizes: Sequence[int] | None = None):
        """`sizes`: every rank's batch size when the caller knows them (training batches are equal): skips the
        size exchange, a collective and a host sync per step."""
        mods = self.modalities
        missing = [m for m in mods if m not in embeddings]
        if missing:
            raise KeyError(f"embeddings missing modalities {missing}")
        embs = [embeddings[m] for m in mods]
        batch = embs[0].shape[0]
        for m, e in zip(mods, embs):
            if e.dim() != 2 or e.shape[0] != batch:
                raise ValueError(f"embedding {m!r} has shape {tuple(e.shape)}, expected ({batch}, D)")
        dtype = embs[0].dtype
        device = embs[0].device
        if any(e.dtype != dtype for e in embs):
            embs = [e.to(dtype) for e in embs]

        masks = None
        if present is not None:
            masks = []
            for m, e in zip(mods, embs):
                p = present.get(m)
                if p is None:
                    p = torch.ones(batch, dtype=torch.bool, device=device)
                p = p.to(device=device, dtype=torch.bool).reshape(-1)
                if p.shape[0] != batch:
                    raise ValueError(f"present[{m!r}] has {p.shape[0]} entries, batch is {batch}")
                masks.append(p)
            # Absent objects: zero rows (torch.where passes no gradient into the discarded branch).
            embs = [torch.where(p[:, None], e, torch.zeros((), dtype=e.dtype, device=device))
                    for p, e in zip(masks, embs)]

        # ---- one packed gather for all modalities (+ masks as extra 0/1 columns, no gradient through them)
        dims = [e.shape[1] for e in embs]
        if self.gather and active(self.group):
            world = tdist.get_world_size(self.group)
            rank = tdist.get_rank(self.group)
            parts = list(embs)
            if masks is not None:
                parts.append(torch.stack(masks, 1).to(dtype))
            packed = torch.cat(parts, 1)
            if sizes is None:
                sizes = gather_sizes(packed, self.group)
            sizes = [int(s) for s in sizes]
            if not self.allow_unequal and len(set(sizes)) > 1:
                desc = ", ".join(f"rank {i}: {s}" for i, s in enumerate(sizes))
                raise ValueError(f"ContrastiveLoss: unequal per-rank batch sizes ({desc})")
            glob = all_gather_with_grad(packed, sizes, self.group)
            glob_embs = list(torch.split(glob[:, :sum(dims)], dims, 1))
            glob_masks = None
            if masks is not None:
                gm = glob[:, sum(dims):].detach() > 0.5
                glob_masks = [gm[:, i] for i in range(len(mods))]
            offset = sum(sizes[:rank])
            n_global = sum(sizes)
        else:
            world, offset, n_global = 1, 0, batch
            glob_embs, glob_masks = embs, masks

        if self.upcast and dtype in (torch.float16, torch.bfloat16):
            embs = [e.float() for e in embs]
            glob_embs = [e.float() for e in glob_embs]

        idx = {m: i for i, m in enumerate(mods)}
        labels = torch.arange(batch, device=device) + offset
        losses: dict[Pair, torch.Tensor] = {}
        for a, b in self.pairs:
            ia, ib = idx[a], idx[b]
            s = self._scale(logit_scales, a, b)
            logits_ab = s * (embs[ia] @ glob_embs[ib].T)   # (B_local, N_global)
            logits_ba = s * (embs[ib] @ glob_embs[ia].T)
            if masks is None:
                ce = (F.cross_entropy(logits_ab, labels, reduction="sum")
                      + F.cross_entropy(logits_ba, labels, reduction="sum"))
                losses[(a, b)] = ce * (world / max(n_global, 1))
                continue
            row_ok = masks[ia] & masks[ib]                          # (B_local,)
            col_ok = glob_masks[ia] & glob_masks[ib]                # (N_global,)
            n_valid = col_ok.sum().clamp(min=1).to(logits_ab.dtype)
            terms = []
            for logits in (logits_ab, logits_ba):
                logits = logits.masked_fill(~col_ok[None, :], float("-inf"))
                # Excluded rows get neutral finite logits so nothing there can turn into NaN.
                logits = logits.masked_fill(~row_ok[:, None], 0.0)
                ce = F.cross_entropy(logits, labels, reduction="none")
                terms.append(torch.where(row_ok, ce, torch.zeros((), dtype=ce.dtype, device=device)).sum())
            losses[(a, b)] = (terms[0] + terms[1]) * world / n_valid
        total = torch.stack(list(losses.values())).sum()
        return total, losses


__all__ = ["ContrastiveLoss"]
