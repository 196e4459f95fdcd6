"""Stop a run at the first non-finite loss or gradient, and never checkpoint non-finite weights.

No host synchronisation per step: every step folds `isfinite(loss) and isfinite(gradient norm)` into a
device-side "first bad step" tensor (a few device ops, nothing read back), and keeps the step's position and
object ids on the host (small integers, already on the CPU). `check()` reads the flag back and compares it
across ranks (one small collective); the trainer calls it where it reads results back anyway: at logging
steps, at the end of each epoch's training, and before every checkpoint or best-weights write. A bad step is
therefore caught at most `train.log_every_steps` steps late, and reported by its own step, batch and objects.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.errors import EXIT_NON_FINITE
from ..distributed.collectives import gather_objects


class NonFiniteError(RuntimeError):
    """The loss or a gradient became NaN or infinite; the message names step, epoch, batch and object ids."""

    exit_code = EXIT_NON_FINITE
    # Raised where every rank holds the same verdict (a gathered report, a reduced loss, identical weights):
    # rank 0 prints it for all, instead of N copies of an N-line report.
    same_on_every_rank = True


def _grad_norm_sq(model: torch.nn.Module) -> torch.Tensor | None:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return None  # ZeRO-2 keeps gradients in its own partitions: the weights check covers those
    # One fused kernel per dtype/device group (as clip_grad_norm_ does), not one per parameter.
    return torch.stack([n.float() for n in torch._foreach_norm(grads)]).pow(2).sum()


def all_finite(module: torch.nn.Module) -> bool:
    """One read-back: are all floating-point parameters and buffers finite?"""
    flags = [torch.isfinite(t).all() for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


class FiniteGuard:
    def __init__(self, device: torch.device):
        self.device = device
        self._bad = torch.tensor(-1, dtype=torch.int64, device=device)  # first bad step, -1: none yet
        self._where: dict[int, dict[str, Any]] = {}  # step -> position and ids, since the last check

    def observe(self, step: int, epoch: int, batch_in_epoch: int, object_id: torch.Tensor | None,
                loss: torch.Tensor, model: torch.nn.Module) -> None:
        """After backward, before the optimizer step: fold this step's finiteness in (no read-back)."""
        ok = torch.isfinite(loss.detach().float()).all()
        g = _grad_norm_sq(model)
        if g is not None:
            ok = ok & torch.isfinite(g)
        # `step` as a Python scalar is a kernel argument; a tensor made from it would be a host-to-device copy,
        # which CUDA orders after the queued work (a hidden sync).
        self._bad = torch.where(ok | (self._bad >= 0), self._bad, step)
        ids = object_id.tolist() if object_id is not None else []
        self._where[step] = {"epoch": epoch, "batch": batch_in_epoch, "object_ids": ids}

    def check(self, model: torch.nn.Module | None = None, what: str = "") -> None:
        """Raise NonFiniteError on every rank if any rank saw a non-finite step (or, given `model`, holds
        non-finite weights). Collective: every rank must call it at the same point."""
        bad = int(self._bad)
        weights_ok = all_finite(model) if model is not None else True
        reports = gather_objects((bad, self._where.get(bad), weights_ok))
        self._where = {s: w for s, w in self._where.items() if s == bad}
        lines = []
        for rank, (b, where, ok) in enumerate(reports):
            if b >= 0:
                w = where or {}
                ids = w.get("object_ids", [])
                shown = ", ".join(map(str, ids[:16])) + (f", ... ({len(ids)} objects)" if len(ids) > 16 else "")
                lines.append(f"rank {rank}: non-finite loss or gradient at step {b + 1} (epoch {w.get('epoch')}, "
                             f"batch {w.get('batch')}), object ids [{shown}]")
            elif not ok:
                lines.append(f"rank {rank}: non-finite weights")
        if lines:
            stage = f" {what}" if what else ""
            raise NonFiniteError("training stopped" + stage + ", nothing was checkpointed from this point:\n"
                                 + "\n".join(lines) + "\n(`astrom3 verify` on the store names objects whose "
                                 "values are not finite; otherwise lower optim.lr)")
