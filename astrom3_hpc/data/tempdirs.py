"""Temporary store directories: removed when a build is interrupted, and found again when a killed one
(SIGKILL, a node failure) could not remove its own.

A store is built as `.<name>.tmp-<id>` next to its final path (data/ingest.py); a build replacing an existing
store briefly moves the old one to `.<name>.old-<pid>` (atomic.replace_dir).
"""

from __future__ import annotations

import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that cleanup runs; the CLI exits 143 (128 + SIGTERM) quietly."""

    exit_code = 143


def _raise_terminated(signum, frame):
    raise Terminated(f"terminated by signal {signum}")


@contextmanager
def removed_if_interrupted() -> Iterator[list[Path]]:
    """Yield a list; directories appended to it are removed if the block ends with any exception, SIGTERM
    and Ctrl-C included (SIGTERM is handled in the main thread only, as Python's signal module requires)."""
    pending: list[Path] = []
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield pending
    except BaseException:
        for p in pending:
            shutil.rmtree(p, ignore_errors=True)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def leftovers(store: str | Path) -> list[Path]:
    store = Path(store).resolve()
    if not store.parent.is_dir():
        return []
    return sorted(p for pat in (f".{store.name}.tmp-*", f".{store.name}.old-*") for p in store.parent.glob(pat)
                  if p.is_dir())


def clean(store: str | Path) -> list[Path]:
    """Remove the temporary directories that interrupted builds of `store` left behind. Only run it while no
    build of that store is running: a running build's directory looks the same."""
    found = leftovers(store)
    for p in found:
        shutil.rmtree(p)
    return found
