"""Learning-rate schedule and early stopping, with state that checkpoints carry (exact resume).

Paper: linear warm-up over `warmup_epochs` from `warmup_start_factor * lr`, then ReduceLROnPlateau on the
validation loss (factor, patience, torch's default relative threshold 1e-4); cosine decay is the option.
Early stopping watches the same validation loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..core.config import OptimConfig


@dataclass
class LRSchedule:
    base_lr: float
    warmup_epochs: int
    start_factor: float
    kind: str
    total_epochs: int
    factor: float
    patience: int
    threshold: float = 1e-4
    plateau_scale: float = 1.0
    best: float = math.inf
    bad_epochs: int = 0

    @classmethod
    def from_config(cls, o: OptimConfig, total_epochs: int) -> "LRSchedule":
        return cls(o.lr, o.warmup_epochs, o.warmup_start_factor, o.scheduler, total_epochs,
                   o.plateau_factor, o.plateau_patience)

    def lr(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            f = self.start_factor + (1.0 - self.start_factor) * epoch / self.warmup_epochs
            return self.base_lr * f
        if self.kind == "cosine":
            span = max(self.total_epochs - self.warmup_epochs, 1)
            return 0.5 * self.base_lr * (1 + math.cos(math.pi * (epoch - self.warmup_epochs) / span))
        return self.base_lr * self.plateau_scale

    def end_epoch(self, epoch: int, val_loss: float) -> None:
        """Plateau bookkeeping after the warm-up, as torch's ReduceLROnPlateau (mode min, rel threshold).

        The reference steps its plateau scheduler only on epochs the warm-up scheduler no longer steps, so the
        first loss it sees is the first full-rate epoch's: a warm-up epoch's loss, trained at a lower rate, set
        as the best would count the full-rate epochs after it as bad and cut the rate one epoch early."""
        if self.kind != "plateau" or epoch < self.warmup_epochs:
            return
        if val_loss < self.best * (1 - self.threshold):
            self.best, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.plateau_scale *= self.factor
                self.bad_epochs = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, d: dict) -> None:
        for k, v in d.items():
            setattr(self, k, v)


@dataclass
class EarlyStopping:
    patience: int
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record an epoch; True when this epoch is the best so far."""
        if val_loss < self.best:
            self.best, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        # patience 0 is "off" (as for grad_clip and ema_epochs): without the guard every epoch would be enough
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, d: dict) -> None:
        for k, v in d.items():
            setattr(self, k, v)
