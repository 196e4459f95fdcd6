"""Learning-rate schedule and early stopping (astrom3_hpc/train/schedule.py): exact values per epoch.

The paper's schedule: linear warm-up from 1e-5 x lr over the warm-up epochs (torch LinearLR), then
ReduceLROnPlateau on the validation loss (mode min, relative threshold 1e-4, no cooldown); cosine is the
option. Each test names the bug it catches.
"""

from __future__ import annotations

import math
import re

import pytest

from astrom3_hpc.core.config import ConfigError, OptimConfig, load_config
from astrom3_hpc.train.schedule import EarlyStopping, LRSchedule

LR = 1e-3


def _sched(kind="plateau", warmup=3, total=20, factor=0.1, patience=2) -> LRSchedule:
    return LRSchedule(base_lr=LR, warmup_epochs=warmup, start_factor=1e-5, kind=kind, total_epochs=total,
                      factor=factor, patience=patience)


def test_warmup_rises_linearly_from_1e5_times_lr():
    """Catches a warm-up that starts at 0 (or at lr), ends one epoch early/late, or ignores start_factor."""
    s = _sched()
    assert s.lr(0) == pytest.approx(1e-8, rel=1e-12)
    assert s.lr(1) == pytest.approx(LR * (1e-5 + (1 - 1e-5) / 3), rel=1e-12)
    assert s.lr(2) == pytest.approx(LR * (1e-5 + (1 - 1e-5) * 2 / 3), rel=1e-12)
    assert s.lr(3) == LR and s.lr(10) == LR
    assert _sched(warmup=0).lr(0) == LR


def test_from_config_takes_the_paper_defaults():
    """Catches from_config wiring a field to the wrong slot (e.g. patience <-> warm-up)."""
    o = OptimConfig()
    s = LRSchedule.from_config(o, total_epochs=100)
    assert (s.base_lr, s.warmup_epochs, s.start_factor, s.kind, s.factor, s.patience, s.total_epochs) == \
        (o.lr, o.warmup_epochs, 1e-5, "plateau", o.plateau_factor, o.plateau_patience, 100)


def test_plateau_reduces_by_the_factor_after_patience_bad_epochs():
    """Catches an off-by-one in patience (reducing after `patience` bad epochs instead of patience + 1, as
    torch does), a reduction that does not compound, bad epochs counted during the warm-up, and a missing
    relative threshold."""
    s = _sched(warmup=3, patience=2, factor=0.1)
    for epoch in range(3):  # warm-up epochs, the last one's low loss too, leave the plateau state alone
        s.end_epoch(epoch, 0.1 if epoch == 2 else 5.0)
    assert s.best == math.inf and s.bad_epochs == 0
    s.end_epoch(3, 1.0)   # first full-rate epoch: its loss is the first best (the reference's first plateau step)
    lrs = []
    for epoch, loss in zip(range(4, 13), [1.0, 0.99995, 1.0,      # 3 bad (0.99995 is within the 1e-4 rel. threshold)
                                          0.5, 0.6, 0.7, 0.8,     # new best, then 3 bad
                                          0.9, 1.0]):             # 2 bad: not yet
        lrs.append(s.lr(epoch))
        s.end_epoch(epoch, loss)
    lrs.append(s.lr(13))
    assert lrs[:3] == [LR, LR, LR]
    assert lrs[3] == pytest.approx(0.1 * LR)            # reduced after epoch 6, the third bad epoch
    assert lrs[4:7] == pytest.approx([0.1 * LR] * 3)
    assert lrs[7] == pytest.approx(0.01 * LR)           # compounded after epoch 10
    assert lrs[8:] == pytest.approx([0.01 * LR] * 2)


@pytest.mark.parametrize("losses", [
    [5.0 - 0.3 * e for e in range(10)] + [2.31] * 12,                      # best in the last warm-up epoch
    [4.0, 3.0, 2.5, 2.2, 2.0, 1.9, 1.85, 1.8, 1.79, 1.5, 1.6, 1.4, 1.45, 1.41, 1.42, 1.43, 1.44, 1.3, 1.3, 1.3,
     1.3, 1.3, 1.3]])
def test_every_epochs_rate_is_the_references_torch_schedulers(losses):
    """The reference steps LinearLR(start_factor=1e-5, total_iters=warmup) after each warm-up epoch and
    ReduceLROnPlateau(val_loss) after every later one (its trainer's `epoch < warmup_epochs` branch). Catches a
    plateau fed the last warm-up epoch's loss, which cut the rate one epoch early."""
    import torch

    o = load_config("configs/paper.yaml").optim
    s = LRSchedule.from_config(o, total_epochs=len(losses))
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=o.lr)
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-5, total_iters=o.warmup_epochs)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=o.plateau_factor, patience=o.plateau_patience)
    for epoch, loss in enumerate(losses):
        assert s.lr(epoch) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12), epoch
        opt.step()
        if epoch < o.warmup_epochs:
            warm.step()
        else:
            plateau.step(loss)
        s.end_epoch(epoch, loss)
    assert s.plateau_scale < 1  # the sequences do reach the plateau's cuts


def test_plateau_state_round_trips_for_exact_resume():
    """Catches schedule state lost on resume (a resumed run would reset the plateau and jump back to lr)."""
    s = _sched(warmup=0, patience=0, factor=0.5)
    for e, loss in enumerate([1.0, 2.0, 2.0]):
        s.end_epoch(e, loss)
    t = _sched(warmup=0, patience=0, factor=0.5)
    t.load_state_dict(s.state_dict())
    assert t.lr(3) == s.lr(3) == pytest.approx(0.25 * LR)
    t.end_epoch(3, 3.0)
    assert t.lr(4) == pytest.approx(0.125 * LR)


def test_cosine_decays_from_lr_to_zero_after_the_warmup():
    """Catches a cosine whose span includes the warm-up, or one that ignores the warm-up offset."""
    s = _sched(kind="cosine", warmup=2, total=12)
    assert s.lr(1) == pytest.approx(LR * (1e-5 + (1 - 1e-5) / 2))
    assert s.lr(2) == pytest.approx(LR)
    assert s.lr(7) == pytest.approx(0.5 * LR)
    assert s.lr(4) == pytest.approx(0.5 * LR * (1 + math.cos(math.pi * 2 / 10)))
    assert s.lr(12) == pytest.approx(0.0, abs=1e-15)
    s.end_epoch(5, 10.0)  # the plateau logic stays out of cosine runs
    s.end_epoch(6, 10.0)
    assert s.plateau_scale == 1.0


def test_early_stopping_after_patience_epochs_without_improvement():
    """Catches stopping one epoch early or late, an improvement that does not reset the count, and a best
    epoch that is not the one with the lowest loss."""
    e = EarlyStopping(patience=3)
    assert e.update(0, 1.0) is True and not e.should_stop
    assert e.update(1, 1.0) is False           # equal is not better
    assert e.update(2, 1.2) is False and not e.should_stop
    assert e.update(3, 0.9) is True and e.bad_epochs == 0 and e.best_epoch == 3
    for epoch in (4, 5):
        e.update(epoch, 1.0)
        assert not e.should_stop
    e.update(6, 0.95)
    assert e.should_stop and e.best == 0.9 and e.best_epoch == 3
    f = EarlyStopping(patience=3)
    f.load_state_dict(e.state_dict())
    assert f.should_stop and f.best_epoch == 3


def test_patience_zero_never_stops_early():
    """Catches 0 read as "stop after any epoch": bad_epochs >= 0 held even while the loss fell, so a run with
    patience 0 ended after its first epoch."""
    e = EarlyStopping(patience=0)
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 1.2, 1.3, 2.0]):
        e.update(epoch, loss)
        assert not e.should_stop
    assert e.best_epoch == 1 and e.bad_epochs == 4


@pytest.mark.parametrize("override, key", [
    ("train.early_stop_patience=-1", "train.early_stop_patience"),
    ("train.checkpoint_every_epochs=0", "train.checkpoint_every_epochs"),
    ("optim.plateau_factor=1.5", "optim.plateau_factor"),
    ("optim.plateau_factor=0", "optim.plateau_factor"),
    ("optim.plateau_patience=-2", "optim.plateau_patience"),
    ("optim.warmup_start_factor=0", "optim.warmup_start_factor"),
    ("train.max_steps_per_epoch=-1", "train.max_steps_per_epoch"),
    ("train.eval_max_batches=0", "train.eval_max_batches"),
])
def test_a_schedule_value_out_of_range_is_refused_by_name(override, key):
    """Catches values that used to load and then misbehaved: a negative patience stopped after epoch 1, a
    checkpoint interval of 0 divided by zero at the end of the first epoch, a step cap of -1 made an epoch of -1
    steps and a cap of 0 meant no cap, a plateau factor >= 1 raised the rate on a plateau and 0 ended training at
    rate 0; a warm-up start factor of 0 spent the first epoch at rate 0 (torch's LinearLR refuses it too)."""
    with pytest.raises(ConfigError, match=f"config key '{re.escape(key)}'"):
        load_config(None, [override])
