"""Progress reporting: a tqdm bar on a terminal, plain periodic log lines in batch logs (SLURM output files)."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("astrom3")


class Progress:
    """In a batch log, a line at each `every_fraction` of the work once `min_interval_s` have passed since the
    last: work of a few seconds (a fine-tuning epoch of ZTF's 434 objects) adds no line beside its own summary,
    where one per tenth made ten lines an epoch, 400 a run; an hour's epoch still logs every tenth."""

    def __init__(self, total: int, desc: str, enabled: bool = True, every_fraction: float = 0.1,
                 min_interval_s: float = 30.0):
        self.total = max(int(total), 1)
        self.desc = desc
        self.n = 0
        self.enabled = enabled
        self._bar = None
        self._every = every_fraction
        self._step = 0  # tenths (or other fractions) passed so far
        self._min_interval = min_interval_s
        self._t0 = self._last = time.perf_counter()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)

    def update(self, k: int = 1, **postfix) -> None:
        self.n += k
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(k)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            return
        # Rounded: 6/20 is 2.9999999999999996 tenths, and summing 0.1s missed steps the same way.
        step = int(round(self.n / self.total / self._every, 9))
        if step > self._step:
            self._step = step
            now = time.perf_counter()
            if now - self._last >= self._min_interval:
                self._last = now
                rate = self.n / max(now - self._t0, 1e-9)
                extra = "".join(f" {k}={v}" for k, v in postfix.items())
                log.info("%s: %d/%d (%.0f%%, %.1f/s)%s", self.desc, self.n, self.total,
                         100 * self.n / self.total, rate, extra)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
