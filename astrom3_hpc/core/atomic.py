"""Atomic writes: readers see either the old file or the complete new one, never a half-written one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import naming_full_disk, temporary_of
from .signals import JOB_SIGNALS, handling

# What a user or a batch system sends to stop a process: held across the last writes (finishing).
SIGNALS_HELD = (*JOB_SIGNALS, signal.SIGINT)
log = logging.getLogger("astrom3")


def _umask() -> int:
    """The process umask, read without changing it (os.umask can only set it, which races with threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def follow_umask(path: str | os.PathLike, directory: bool = False) -> None:
    """mkstemp and mkdtemp create private (0600 / 0700) entries; give them the mode an ordinary open or mkdir
    would (0644 / 0755 under umask 022), so colleagues on a shared cluster can read the results."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    with naming_full_disk(path):  # a full disk's own error names no file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        follow_umask(tmp)
    tmp_path = Path(tmp)
    try:
        with naming_full_disk(path):  # inside: the free space is measured before the partial file goes
            yield tmp_path
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temps(directory: str | os.PathLike) -> int:
    """Remove the temporary files that writes into `directory` killed mid-way (SIGKILL, a node failure) left
    behind; return the bytes freed. Call it only while no other process writes there (a run dir's lock held):
    a live writer's temporary file looks the same. A stale best_model.pt temporary is the size of the model."""
    freed, names = 0, []
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            ours = entry.name.endswith(".tmp") and temporary_of(Path(entry.path))  # atomic_path's, not a .tmp-
            if ours and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    size = entry.stat(follow_symlinks=False).st_size
                    os.unlink(entry.path)
                    freed += size
                    names.append(entry.name)
    if names:
        log.info("%s: removed %d temporary file(s) an interrupted write left behind (%s; %.1f MB)", directory,
                 len(names), ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else ""), freed / 1e6)
    return freed


def write_text(path: str | os.PathLike, text: str) -> None:
    # UTF-8 whatever the locale: ingest reads UTF-8, and a class name the locale cannot encode failed a finished
    # run at its last write (a Latin-1 locale would have written files nobody reads back as UTF-8).
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one JSON line. A crash can at worst leave a truncated last line, which readers skip."""
    with naming_full_disk(path), open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, default=_json_default) + "\n")
        f.flush()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                # Only a torn final line can fail to parse (append is the only writer).
                continue
    return rows


@contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place when the block succeeds.

    An interrupted build leaves only a `.tmp-` sibling, which never looks like a finished result.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    follow_umask(tmp, directory=True)
    try:
        yield tmp
        replace_dir(tmp, path, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(src: Path, dst: Path, overwrite: bool = True) -> None:
    """Move a finished directory into place, replacing an old one with the shortest possible gap.

    overwrite=False: raise FileExistsError rather than replace anything at `dst`, also what appeared there after
    the caller's own check (another build of the same path finishing first); `src` is then left for the caller.

    The gap (old moved aside, new not yet in) is closed to signals: a job signal or Ctrl-C there used to end the
    process with no directory at `dst`, and the interrupted build's cleanup then deleted the new one. A signal
    that arrives meanwhile is logged once the new directory is in (`finishing`). Only SIGKILL or a lost node can
    leave the gap open; `clean-store-temp` then puts the old directory back (data/tempdirs.py)."""
    if not overwrite:
        _rename_no_replace(src, dst)
        return
    if not dst.exists():
        os.replace(src, dst)
        return
    # Unique, not per process: an earlier trash that rmtree could not empty (NFS silly-renames) under a reused
    # pid would make the rename fail and throw away the finished directory.
    trash = dst.parent / f".{dst.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with finishing(f"the new {dst}"):
            os.replace(dst, trash)
            try:
                os.replace(src, dst)
            except BaseException:
                os.replace(trash, dst)
                raise
    finally:
        remove_tree(trash)


@contextmanager
def finishing(what: str) -> Iterator[None]:
    """Around the last writes of a command's results (several files, or a directory swapped in): a signal that
    arrives meanwhile is held until they are all written, then logged and not acted on. Raised where it came, it
    left some files new and some old, and the command said its results were not written; raised after them, it
    said so of results that were complete (an --overwrite ingest exited 130 "interrupted" with the new store in).
    Recorded by Python-level handlers, not blocked: a blocked signal still reaches another thread (zarr's,
    torch's), and the main thread's handler then ran at any point."""
    held: list[int] = []
    with handling(SIGNALS_HELD, lambda signum, frame: held.append(signum)):
        yield
    if held:
        names = ", ".join(sorted({signal.Signals(s).name for s in held}))
        log.warning("%s arrived while %s was being written; it is complete, so the signal was not acted on",
                    names, what)


def remove_tree(path: Path) -> None:
    """Remove a directory, or only the link where `path` is a symbolic link: rmtree refuses a link (and with
    ignore_errors left it behind silently), and what a link points to is not this code's to delete."""
    if path.is_symlink():
        with contextlib.suppress(OSError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _rename_no_replace(src: Path, dst: Path) -> None:
    """rename(2) of a directory fails where the target is a non-empty directory (ENOTEMPTY or EEXIST) or not a
    directory (ENOTDIR), and the file server decides that in the rename itself (one NFS RENAME call, one Lustre
    metadata operation), so a store that appeared after any check here is never replaced, whatever this client
    cached. The alternatives hold only on some file systems: renameat2(RENAME_NOREPLACE) is not in the stdlib and
    NFS answers it EINVAL; an flock needs NFS's lock manager or Lustre's flock mount option, and core/locks.py
    goes on unlocked without them; an os.mkdir claim left by a killed build would block every later one. What
    rename still replaces is an empty directory: the check below refuses one already there, and one made in the
    instant between holds nothing to lose."""
    appeared = f"{dst} was created by another process while this one built it; it was left unchanged"
    if os.path.lexists(dst):
        raise FileExistsError(appeared)
    try:
        os.rename(src, dst)
    except OSError:
        if os.path.lexists(dst):
            raise FileExistsError(appeared) from None
        raise


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
