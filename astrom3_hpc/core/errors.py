"""Exit codes of the job suite and how a command turns an expected error into one.

The codes are a contract with the job scripts (slurm/*.sh requeue on EXIT_PREEMPTED) and with Submitit's job
functions, so the CLI and every library entry point that runs a job (a sweep task, a Submitit job) report them
the same way: bad input is one line naming the object and EXIT_BAD_INPUT, never a traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

# Every exit code the suite's commands give, in one table (docs: the README's "Exit codes").
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DAMAGED = 3  # a store's bytes differ from its checksums (verify, or a chunk read in training)
EXIT_UNVERIFIABLE = 4  # verify: a store built before checksums, nothing to compare with
EXIT_NON_FINITE = 5  # the loss or a gradient became NaN or infinite
EXIT_OTHER_RUN = 6  # the run dir holds another run, or another job writes it now
EXIT_WEIGHTS_MISMATCH = 7  # pretrained weights do not fit the classifier
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by a job signal (core/signals.py), checkpoint written if any: requeue me
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a reader that went away


def setup_logging(verbose: bool = False) -> None:
    """The suite's log format on stderr (first call wins, as logging.basicConfig does). `verbose`: the suite's own
    DEBUG lines; the root logger at DEBUG gave a hundred lines of zarr's and numcodecs' internals per epoch."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    if verbose:
        logging.getLogger("astrom3").setLevel(logging.DEBUG)


def first_line(e: BaseException, limit: int = 120) -> str:
    """`Type: first line of the message`, cut to `limit` characters: what a one-line error quotes of the
    exception that revealed a damaged file (a JSON or YAML parser's message, a zip error)."""
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:limit]}"


Expected = tuple[type[BaseException], ...]


def require_scikit_learn(what: str) -> None:
    """One line naming the `science` extra (ValueError: exit 2) where the classical baseline's packages are not
    installed (scikit-learn, threadpoolctl: not install_requires), for every command that fits the baseline to call
    before any work, not an ImportError traceback midway. `what` names the command or run that needs them."""
    try:
        import sklearn.ensemble  # noqa: F401
        import threadpoolctl  # noqa: F401
    except ImportError:
        raise ValueError(f"{what} needs scikit-learn: pip install 'astrom3-hpc[science]'") from None


class DiskFullError(OSError):
    """A write failed because the file system or the user's quota is full: one line naming the file, the space
    left and how to go on. Not requeued (exit 1): a rerun fails the same way until space is freed."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, code: int = errno.ENOSPC) -> None:
        super().__init__(message)  # str(e) is the message alone, without "[Errno 28]"
        self.errno = code


# Below this many bytes free, a failed write ran out of space: a writer stops only when its next block does not fit.
FULL_BELOW = 1 << 20
_FULL_ERRNOS = tuple(c for c in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if c is not None)


def _full_errno(e: BaseException) -> int | None:
    """ENOSPC or EDQUOT where one is in `e`'s chain (writers wrap the OSError: zarr, numpy, torch)."""
    return next((x.errno for x in causes(e) if isinstance(x, OSError) and x.errno in _FULL_ERRNOS), None)


def no_space(e: BaseException, directory: str | os.PathLike) -> tuple[int, str] | None:
    """(errno, why) where the write that raised `e` into `directory` ran out of space (why: "no space left on
    device (N bytes free)", no free inodes, or "disk quota exceeded"), or None where nothing says so: ENOSPC or
    EDQUOT in its chain, under FULL_BELOW bytes free there, or a probe write there failing with either (a quota,
    which the free space does not show). Writers hide the errno: torch's zip writer reports ENOSPC as `RuntimeError: ...
    unexpected pos`. Call it before the partial file is removed, which frees what it had taken."""
    code = _full_errno(e)
    free = _free_bytes(directory)
    if code is None and free is not None and free < FULL_BELOW:
        code = errno.ENOSPC
    if code is None:
        code = _probe(directory)
    if code is None:
        return None
    if code == errno.ENOSPC:
        if _no_free_inodes(directory):  # bytes free and no file entries: "N bytes free" sent users after bytes
            return code, "no free inodes (file entries) left on the file system" + (
                f", though {free} bytes are free" if free is not None else "")
        return code, "no space left on device" + (f" ({free} bytes free)" if free is not None else "")
    return code, "disk quota exceeded (of bytes or of files: `quota -s`, or `lfs quota -u $USER` on Lustre, says which)"


# What a write that ran out of space says next, where the caller has nothing more precise (a checkpoint's resume point).
RERUN = "; free space and rerun"


def disk_full(e: BaseException, path: str | os.PathLike, after: str = RERUN) -> DiskFullError | None:
    """`e` as a DiskFullError naming `path` (the file or directory being written) where ENOSPC or EDQUOT is in its
    chain, else None. Only the errno counts, unlike no_space: a write that failed otherwise keeps its own error,
    and a directory without space pays no probe write. The partial file is best still there (the bytes free
    include it otherwise); `after` ends the message. A DiskFullError is itself: it named its file already."""
    if isinstance(e, DiskFullError):
        return e
    code = _full_errno(e)
    if code is None:
        return None
    path = Path(path)
    where = next((p for p in (path, *path.parents) if p.is_dir()), Path("/"))  # the free space of its file system
    why = (no_space(e, where) or (code, "no space left on device"))[1]
    return DiskFullError(f"{path}: {why}{after}", code)


@contextmanager
def naming_full_disk(path: str | os.PathLike, after: str = RERUN) -> Iterator[None]:
    """Around a write of `path`: an error that ran out of space becomes a one-line DiskFullError naming `path`
    (a write's own OSError names no file: `[Errno 28] No space left on device`); any other error stays itself,
    and so does a DiskFullError from within, which named its file and said how to go on already."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:  # noqa: BLE001 - a writer may wrap the OSError (zarr, numpy)
        full = disk_full(e, path, after)
        if full is None:
            raise
        raise full from e


def causes(e: BaseException) -> Iterator[BaseException]:
    """`e`, then the exception it was raised from or while handling, and so on (each once)."""
    seen: set[int] = set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        yield x
        x = x.__cause__ or x.__context__


def _free_bytes(directory: str | os.PathLike) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _no_free_inodes(directory: str | os.PathLike) -> bool:
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_files > 0 and st.f_favail == 0  # f_files 0: a file system that does not count inodes


def _probe(directory: str | os.PathLike) -> int | None:
    """The errno of writing FULL_BELOW bytes into `directory` where it is ENOSPC or EDQUOT, else None."""
    name = None
    try:
        fd, name = tempfile.mkstemp(prefix=".astrom3-space-probe.", dir=directory)
        try:
            data = memoryview(bytes(FULL_BELOW))
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)  # network file systems report a full quota only when the data reaches the server
        finally:
            os.close(fd)
    except OSError as x:
        return x.errno if x.errno in _FULL_ERRNOS else None
    finally:
        if name is not None:
            Path(name).unlink(missing_ok=True)
    return None


def run_reporting_errors(command: str, fn: Callable[[], int | None], expected: Expected | Callable[[], Expected],
                         on_error: Callable[[str, BaseException, int, bool], None] | None = None) -> int:
    """``fn()``'s exit code. An ``expected`` error prints ``astrom3 COMMAND: error: ...`` and gives
    EXIT_BAD_INPUT; an error carrying an int ``exit_code`` (damaged store 3, non-finite loss 5, ...) is expected
    too and gives that code; Ctrl-C gives EXIT_INTERRUPTED (or the ``exit_code`` of the KeyboardInterrupt a
    command raised for a job signal, core/signals.py); a closed stdout (``astrom3 info store | head``) gives
    EXIT_BROKEN_PIPE quietly. ``expected`` may be a function giving the tuple, called only to classify an error:
    the classes live in modules that take seconds to import, and Ctrl-C or a job signal meanwhile escaped with a
    traceback (or killed the job) before ``fn`` had started.
    ``on_error(command, error, code, expected)`` runs first (a multi-process job ends every rank there)."""
    try:
        return int(fn() or 0)
    except BrokenPipeError:
        # Stop quietly, as other Unix tools do, and keep the interpreter's final flush of stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt as e:  # Ctrl-C, or a job signal raised as core.signals.Stopped (its own message)
        print(f"astrom3 {command}: {str(e) or 'interrupted'}", file=sys.stderr)
        return int(getattr(e, "exit_code", EXIT_INTERRUPTED))
    except Exception as e:  # noqa: BLE001
        code = getattr(e, "exit_code", None)
        known = isinstance(code, int) or isinstance(e, expected() if callable(expected) else expected) \
            or read_only(e) or out_of_descriptors(e)
        code = code if isinstance(code, int) else EXIT_BAD_INPUT if known else EXIT_FAILED
        if on_error is not None:
            on_error(command, e, code, known)
        if not known:
            raise
        print(f"astrom3 {command}: error: {plain(e)}", file=sys.stderr)
        return code


def out_of_descriptors(e: BaseException) -> bool:
    """EMFILE: the process reached `ulimit -n` (a site's low default, loader workers each mapping chunks); in a
    DataLoader worker, where torch re-raises the error from its text alone (no errno)."""
    if not isinstance(e, OSError):
        return False
    worker = _in_worker(e)
    return e.errno == errno.EMFILE or (worker is not None and f"[Errno {errno.EMFILE}]" in worker[0])


# torch re-raises a DataLoader worker's error in the main process as the same type holding this text.
_WORKER_ERROR = re.compile(r"^Caught \w+ in (DataLoader worker process \d+)\.\nOriginal Traceback")


def _in_worker(e: BaseException) -> tuple[str, str] | None:
    """(the worker's own one-line error, which worker) for an error torch re-raised from a DataLoader worker."""
    text = str(e)
    m = _WORKER_ERROR.match(text)
    if m is None:
        return None
    last = text.rstrip().rsplit("\n", 1)[-1]
    return last.split(": ", 1)[-1] if ": " in last else last, m.group(1)


def _descriptor_hint(e: OSError | str) -> str:
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = "unlimited" if soft == resource.RLIM_INFINITY else soft
    return (f"{e} (this process may open {limit} files, `ulimit -n`): raise the limit in the job script "
            f"(`ulimit -n 4096`, up to `ulimit -Hn`) or lower data.num_workers")


def read_only(e: BaseException) -> bool:
    """An output on a read-only file system (a site's read-only project mount): no OSError subclass says it, and
    its message names the path like a PermissionError's."""
    return isinstance(e, OSError) and e.errno == errno.EROFS and e.filename is not None


# The temporary siblings of atomic writes: `.NAME.tmp-XXXX` (directories, stores), `.NAME.XXXXXXXX.tmp` (files:
# mkstemp's eight characters, exactly, since core.atomic deletes what matches).
_TEMPORARY = re.compile(r"^\.(?P<name>.+?)(?:\.tmp-[0-9A-Za-z_]+|\.[0-9A-Za-z_]{8}\.tmp)$")


def temporary_of(path: Path) -> Path | None:
    """The file or directory whose atomic write's temporary sibling `path` is, or None for any other name."""
    m = _TEMPORARY.match(path.name)
    return path.parent / m.group("name") if m else None


def plain(e: BaseException) -> BaseException | str:
    """What the one-line error says of `e`: `e` itself, but for the errors of a directory created where a file
    lies, whose own words mislead: mkdir's `[Errno 17] File exists: 'out'` for an --out that is a file (or a
    link to nothing), `[Errno 20] Not a directory: 'file/out'` not saying which part is the file. Too many open
    files says what to change."""
    worker = _in_worker(e)
    if out_of_descriptors(e):
        return _descriptor_hint(worker[0] if worker else e)
    if worker is not None:  # its traceback says nothing the user can act on
        return f"{worker[0]} (in {worker[1]})"
    if not isinstance(e, OSError) or e.filename2 is not None or not isinstance(e.filename, (str, os.PathLike)):
        return e
    name = Path(e.filename)
    target = temporary_of(name)
    if target is not None and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and not os.path.lexists(name):
        # The temporary sibling an atomic write could not create is no name the user gave or would look for; one
        # that exists (a leftover clean-store-temp could not delete) is named as it is.
        return f"cannot write {target}: {e.strerror} ({name.parent})"
    if e.errno == errno.EEXIST and os.path.lexists(name) and not name.is_dir():
        return f"{name} is {'a link to a missing path' if name.is_symlink() else 'a file'}, not a directory"
    if e.errno == errno.ENOTDIR:
        blocker = next((p for p in (name, *name.parents) if os.path.lexists(p) and not p.is_dir()), None)
        if blocker is not None:
            return f"{'' if blocker == name else f'{name}: '}{blocker} is a file, not a directory"
    return e
