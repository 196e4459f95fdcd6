"""Progress lines in batch logs (no terminal): one per tenth of the work, but none sooner than the interval."""

from __future__ import annotations

import logging

from astrom3_hpc.core import progress


def _lines(caplog, monkeypatch, seconds_per_step: float, steps: int = 20, **kw) -> list[str]:
    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="astrom3"), progress.Progress(steps, "epoch 3", **kw) as bar:
        for _ in range(steps):
            now[0] += seconds_per_step
            bar.update(1, skipped=0)
    return [r.getMessage() for r in caplog.records]


def test_short_work_adds_no_lines_and_long_work_logs_each_tenth(caplog, monkeypatch):
    """Catches the ten lines per epoch a fine-tune of a few hundred objects wrote (400 per run) coming back."""
    assert _lines(caplog, monkeypatch, seconds_per_step=0.1) == []
    slow = _lines(caplog, monkeypatch, seconds_per_step=20.0)  # 400 s in all: every tenth is 40 s apart
    assert len(slow) == 10 and slow[0] == "epoch 3: 2/20 (10%, 0.1/s) skipped=0", slow
    assert slow[-1].startswith("epoch 3: 20/20 (100%")


def test_lines_wait_for_the_interval_between_tenths(caplog, monkeypatch):
    lines = _lines(caplog, monkeypatch, seconds_per_step=10.0)  # a tenth every 20 s, a line every 30 s at most
    assert [m.split(" (")[0] for m in lines] == [f"epoch 3: {n}/20" for n in (4, 8, 12, 16, 20)]
    assert len(_lines(caplog, monkeypatch, seconds_per_step=10.0, min_interval_s=0)) == 10
