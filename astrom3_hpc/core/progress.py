"""Progress reporting: a tqdm bar on a terminal, plain periodic log lines in batch logs (SLURM output files)."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("astrom3")


class Progress:
    def __init__(self, total: int, desc: str, enabled: bool = True, every_fraction: float = 0.1):
        self.total = max(int(total), 1)
        self.desc = desc
        self.n = 0
        self.enabled = enabled
        self._bar = None
        self._next_log = every_fraction
        self._every = every_fraction
        self._t0 = time.perf_counter()
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
        elif self.n / self.total >= self._next_log:
            rate = self.n / max(time.perf_counter() - self._t0, 1e-9)
            extra = " ".join(f"{k}={v}" for k, v in postfix.items())
            log.info("%s: %d/%d (%.0f%%, %.1f/s) %s", self.desc, self.n, self.total,
                     100 * self.n / self.total, rate, extra)
            while self._next_log <= self.n / self.total:
                self._next_log += self._every

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
