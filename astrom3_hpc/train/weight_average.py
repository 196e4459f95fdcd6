"""An exponential moving average of a model's weights (train.ema_epochs), the weights that validation, the best
model and the test then use.

The horizon is set in epochs, not steps, so one setting means the same smoothing on a survey of 2,000 objects
(50 steps an epoch) and one of 10,000. Parameters are replicated across data-parallel ranks (ZeRO stages 0-2
keep whole parameters on every rank), so every rank keeps the same average without communicating.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, horizon_epochs: float, steps_per_epoch: int):
        self.decay = 1.0 - 1.0 / max(horizon_epochs * steps_per_epoch, 1.0)
        # Floating entries only (integer buffers such as counters are copied as they are when swapped in).
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        state = model.state_dict()
        for k, avg in self.shadow.items():
            avg.lerp_(state[k].float(), 1.0 - self.decay)

    @contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """The average in the model's own tensors (in place: an engine's references to them stay valid), the
        trained weights back afterwards, also when the body raises."""
        state = model.state_dict()
        saved = {k: state[k].detach().clone() for k in self.shadow}
        with torch.no_grad():
            for k, avg in self.shadow.items():
                state[k].copy_(avg)
        try:
            yield
        finally:
            with torch.no_grad():
                for k, w in saved.items():
                    state[k].copy_(w)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.shadow.items()}

    def load_state_dict(self, d: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(d)
        if missing:
            raise KeyError(f"checkpoint's weight average lacks {sorted(missing)[:3]}")
        for k in self.shadow:
            self.shadow[k].copy_(d[k])
