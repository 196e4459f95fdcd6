"""Advisory file locks (flock) between the processes of a cluster: jobs sharing a store cache, a run directory,
a sweep's job record. The kernel drops a lock when its holder dies, SIGKILL included, so nothing stale is ever
left to clear by hand. Where a file system offers no locks (ENOLCK, EOPNOTSUPP) or the lock file can neither be
made nor opened, the work goes on without one: a lock guards against a race, it must not stop a job on its own.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger("astrom3")


class LockHeld(RuntimeError):
    """Another live process holds the lock."""


def _lock_fd(lock: Path) -> int | None:
    """A descriptor of the lock file, created where missing; read-only where this user cannot write it (a
    colleague's store: a lock needs no write access, so a job there still waits for the colleague's); None where
    it neither exists nor can be made."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        return os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        try:
            return os.open(lock, os.O_RDONLY)
        except OSError:
            return None


@contextmanager
def held(lock: Path, wait: str | None = None) -> Iterator[None]:
    """Hold `lock` for the block. wait=None: raise LockHeld at once where another process holds it; else wait for
    it, logging `wait` (what the other process is doing) once."""
    lock = Path(lock)
    fd = _lock_fd(lock)
    if fd is None:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if wait is None:
                raise LockHeld(str(lock)) from None
            t0 = time.monotonic()
            log.info("%s: %s; waiting for it (it holds %s)", lock.parent, wait, lock.name)
            fcntl.flock(fd, fcntl.LOCK_EX)
            log.info("%s: waited %.0f s for %s", lock.parent, time.monotonic() - t0, lock.name)
        except OSError as e:
            log.debug("%s: no lock (%s)", lock.parent, e)
        yield
    finally:
        os.close(fd)  # releases the lock
