"""Temporary store directories: removed when a build is interrupted, and found again when a killed one
(SIGKILL, a node failure) could not remove its own.

A store is built as `.<name>.tmp-<id>` next to its final path (data/ingest.py); a build replacing an existing
store briefly moves the old one to `.<name>.old-<pid>-<random>` (atomic.replace_dir).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..core.signals import Stopped, handling


def _raise_terminated(signum, frame):
    # An exception, so that the cleanup below runs; the CLI exits 143 (128 + SIGTERM) with this one line.
    raise Stopped("interrupted by SIGTERM", 128 + signal.SIGTERM)


@contextmanager
def removed_if_interrupted() -> Iterator[list[Path]]:
    """Yield a list; directories appended to it are removed if the block ends with any exception, SIGTERM
    and Ctrl-C included (SIGTERM is handled in the main thread only, as Python's signal module requires)."""
    pending: list[Path] = []
    with handling([signal.SIGTERM], _raise_terminated):
        try:
            yield pending
        except BaseException:
            for p in pending:
                shutil.rmtree(p, ignore_errors=True)
            raise


def leftovers(store: str | Path) -> list[Path]:
    store = Path(store).resolve()
    if not store.parent.is_dir():
        return []
    # Escaped: in a name like `s[1].zarr` the brackets would match (and `clean` delete) `.s1.zarr.tmp-*`.
    name = glob.escape(store.name)
    # A link too (to nothing, as well): what replace_dir moved aside where the store was a symbolic link.
    return sorted(p for pat in (f".{name}.tmp-*", f".{name}.old-*") for p in store.parent.glob(pat)
                  if p.is_dir() or p.is_symlink())


def clean(store: str | Path) -> tuple[list[Path], Path | None]:
    """Remove the temporary directories that interrupted builds of `store` left behind; returns them, and the
    directory put back as `store` if any. Only run it while no build of that store is running: a running build's
    directory looks the same.

    A build killed (SIGKILL, a lost node) between moving the old store aside and moving the new one in leaves no
    `store` and an `.old-` directory: that is the only copy, so the newest one is renamed back, not deleted."""
    store = Path(store).resolve()
    found = leftovers(store)
    restored = None
    olds = [p for p in found if p.name.startswith(f".{store.name}.old-")]
    if olds and not store.exists():
        restored = max(olds, key=lambda p: p.lstat().st_mtime)
        os.replace(restored, store)
        found.remove(restored)
    for p in found:
        if p.is_symlink():
            p.unlink()  # the link only: its target is the user's, not a temporary directory
        else:
            shutil.rmtree(p)
    return found, restored
