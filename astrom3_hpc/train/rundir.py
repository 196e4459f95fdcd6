"""A run directory: resolved config, per-epoch metrics.jsonl, per-step steps.jsonl, final metrics.json, train.log.

Only rank 0 writes here (checkpoints and train.log aside). `metrics.json` appears, atomically, only when a run
succeeds: its presence is what the collector and `--resume-missing` take as "this task is done".

One job at a time writes a run directory: it holds `<run dir>/.lock` (`writing`) from before its run-dir check to
its end. The identity check alone let two jobs started together both pass before either had written identity.json,
and then mix their files (one run's metrics.json under the other's config).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..core.atomic import append_jsonl, read_jsonl, remove_stale_temps, write_json, write_text
from ..core.config import RunConfig, dump_config
from ..core.errors import first_line
from ..core.locks import LockHeld, held
from .fingerprint import OtherRunError

log = logging.getLogger("astrom3")

LOG_NAME = "train.log"
LOCK_NAME = ".lock"
CKPT_NAME = "checkpoints"
# A requeued job waits this long for the lock of its own earlier attempt: after a node failure the file server
# keeps the dead node's locks until its lease runs out (NFSv4: 90 s; Lustre: until it evicts the node).
REQUEUE_WAIT_S = 300.0
REQUEUE_POLL_S = 5.0
# Loggers that do not propagate to the root logger but whose warnings belong in the run's log.
_NON_PROPAGATING = ("DeepSpeed",)


class RunLog(logging.FileHandler):
    """`<run dir>/train.log`: every rank's warnings and errors (any library's), rank 0's astrom3 info lines,
    each line naming its rank.

    Opened in append mode, so a resumed or requeued run continues the same file; an ordinary open, so the file
    follows the umask like the rest of the run directory. Ranks append whole lines (O_APPEND), which local file
    systems and Lustre/GPFS keep intact. The file opens at the first record, so a rank that starts before rank 0
    has created the directory logs nothing early by accident. What reaches it is also bounded by the logger's
    level (the CLI sets INFO, or DEBUG with -v).
    """

    def __init__(self, run_dir: str | Path, rank: int = 0):
        super().__init__(Path(run_dir) / LOG_NAME, mode="a", encoding="utf-8", delay=True)
        self.rank = rank
        self.failed = False
        self.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        # Other libraries' info (DeepSpeed's compiler probes, ...) would bury the run's own lines.
        self.addFilter(lambda r: r.levelno >= logging.WARNING or r.name.split(".")[0] == log.name)
        self.setFormatter(logging.Formatter(f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s",
                                            datefmt="%Y-%m-%d %H:%M:%S"))

    def attach(self) -> "RunLog":
        for name in ("", *_NON_PROPAGATING):
            logging.getLogger(name).addHandler(self)
        return self

    def detach(self) -> None:
        for name in ("", *_NON_PROPAGATING):
            logging.getLogger(name).removeHandler(self)
        try:
            self.close()
        except OSError:
            # Closing flushes what a full disk did not take: raised here, it replaced the error that ends the
            # job (a one-line DiskFullError became a bare `[Errno 28]` traceback). The lines stay on stderr.
            pass

    def emit(self, record: logging.LogRecord) -> None:
        # logging opens a delayed file outside the guard that routes write errors to handleError: a train.log a
        # full disk or inode quota could not create was a traceback that ended the job at its first line.
        if self.stream is None:
            try:
                self.stream = self._open()
            except OSError:
                self.handleError(record)
                return
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """A line the file did not take (full disk or quota, a file server gone) is said once, in one line,
        and the job goes on; logging's default printed a traceback block on stderr for every line."""
        err = sys.exc_info()[1]
        if not isinstance(err, OSError):
            super().handleError(record)  # a bad log call: its traceback shows where
        elif not self.failed:
            self.failed = True
            print(f"astrom3: cannot write {self.baseFilename} ({err}); the run's log lines are on stderr only "
                  f"from here", file=sys.stderr)

    def record_error(self, exc: BaseException, what: str = "failed") -> None:
        """Write the error that ends this rank, with its traceback, to the file only (the CLI already prints
        it on the terminal). A refusal to run in this directory (it holds another run) is not this log's."""
        from ..distributed.abort import same_on_every_rank

        if not getattr(exc, "recorded_in_run_log", True) or (self.rank != 0 and same_on_every_rank(exc)):
            return  # another run's refusal; or rank 0's record says it for every rank
        if isinstance(exc, KeyboardInterrupt):  # Ctrl-C or a job signal (core/signals.py): where it came, no more
            rec = log.makeRecord(log.name, logging.WARNING, __file__, 0, "%s: %s", (what, exc or "interrupted"), None)
        else:
            rec = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s: %s: %s",
                                 (what, type(exc).__name__, exc), (type(exc), exc, exc.__traceback__))
        self.handle(rec)

    @contextmanager
    def recording(self, what: str) -> Iterator["RunLog"]:
        """The job's body: an error that escapes it is recorded (`what` names the job), and the handler is
        detached at the end whatever happens."""
        try:
            yield self
        except BaseException as e:
            try:
                self.record_error(e, what)
            except OSError:
                pass  # the error itself must reach the user, not this log's (a full disk, say)
            raise
        finally:
            self.detach()


def refuse_store(run_dir: str | Path, flag: str = "--run-dir") -> None:
    """Refuse (ValueError: exit 2) a run dir that is a Zarr store or lies inside one (a zarr.json in it or above
    it): the run's files went into the store, which `verify` still found intact and a later `ingest --overwrite`
    of it deleted with the run. Every rank checks, so that all stop together before any writes."""
    target = Path(run_dir).resolve()
    for p in (target, *target.parents):
        if (p / "zarr.json").is_file():
            where = "is a Zarr store" if p == target else f"lies inside the Zarr store {p}"
            raise ValueError(f"{flag} {run_dir} {where}: a run there mixes its files with the data, and rebuilding "
                             f"the store deletes them; choose a directory outside the store")


class RunDir:
    def __init__(self, path: str | Path, is_main: bool = True, rank: int | None = None):
        self.path = Path(path)
        self.is_main = is_main
        refuse_store(self.path)
        if is_main:
            # checkpoints/ only once the run dir is known to be this run's (open_checkpoints): `sweep status`
            # reads it as "started", which a job refused on its data or its run dir never was.
            self.path.mkdir(parents=True, exist_ok=True)
        self.log = RunLog(self.path, (0 if is_main else 1) if rank is None else rank).attach()

    def close(self) -> None:
        """Stop logging into this run directory (the process may go on, e.g. a test or a sweep worker)."""
        self.log.detach()

    @property
    def ckpt_dir(self) -> Path:
        return self.path / CKPT_NAME

    def open_checkpoints(self) -> None:
        if self.is_main:
            self.ckpt_dir.mkdir(exist_ok=True)

    def write_config(self, cfg: RunConfig, info: dict[str, Any]) -> None:
        if self.is_main:
            dump_config(cfg, self.path / "config.yaml")
            write_run_json(self.path, info)

    def record_resumption(self, cfg: RunConfig, info: dict[str, Any]) -> None:
        """A resumed run's config.yaml names the store it reads now (a moved store: the old path was gone, and
        the tools that read config.yaml failed on it), and run.json lists each resumption (where, which job, how
        many threads) after the first attempt's own record."""
        if not self.is_main:
            return
        dump_config(cfg, self.path / "config.yaml")
        try:
            first = json.loads((self.path / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            first = None
        if not isinstance(first, dict):  # lost or damaged: this attempt's record stands for it
            write_run_json(self.path, info)
            return
        was, now = first.get("threads"), info.get("threads")
        if cfg.train.threads == 0 and was is not None and now is not None and was != now:
            log.warning("resumed on %d threads (train.threads 0: this job's cores), the run started on %d: the "
                        "CPU's rounding differs from here on; set train.threads=%d to resume bit for bit", now, was,
                        was)
        attempt = {k: v for k, v in info.items() if k not in ("kind", "store_provenance", "cells_file")}
        attempt["resumed"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(self.path / "run.json", {**first, "resumptions": [*first.get("resumptions", []), attempt]})

    def log_epoch(self, row: dict[str, Any]) -> None:
        if self.is_main:
            append_jsonl(self.path / "metrics.jsonl", row)

    def log_step(self, row: dict[str, Any]) -> None:
        if self.is_main:
            append_jsonl(self.path / "steps.jsonl", row)

    def truncate_after(self, step: int, epoch: int) -> None:
        """On resume, forget rows written after the checkpoint (the steps will run again)."""
        if not self.is_main:
            return
        for name, key, limit in (("steps.jsonl", "step", step), ("metrics.jsonl", "epoch", epoch - 1)):
            p = self.path / name
            if p.exists():
                rows = [r for r in read_jsonl(p) if r.get(key, -1) <= limit]
                write_text(p, "".join(json.dumps(r) + "\n" for r in rows))

    def finish(self, metrics: dict[str, Any]) -> None:
        if self.is_main:
            write_json(self.path / "metrics.json", {**metrics, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def done(self) -> bool:
        return (self.path / "metrics.json").exists()


def read_run_config(run_dir: str | Path) -> dict:
    import yaml

    p = Path(run_dir) / "config.yaml"
    if not p.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{p} is damaged: not readable YAML ({first_line(e)})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p} is damaged: not a run config (a mapping of sections expected)")
    return data


def write_run_json(run: Path, info: dict[str, Any]) -> None:
    """run.json: how and where the job ran (launcher, SLURM ids: the collector finds a task's logs by them)."""
    write_json(run / "run.json", {**info, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})


def env_info() -> dict[str, Any]:
    return {k: os.environ[k] for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
                                       "SLURM_RESTART_COUNT", "HOSTNAME") if k in os.environ}


class RunDirBusy(OtherRunError):
    """Another live job holds the run directory's lock: it is writing there now (exit 6, as for another run)."""


@contextmanager
def writing(run_dir: str | Path, take: bool = True, agree: Callable[[str | None], str | None] | None = None,
            flag: str = "--run-dir") -> Iterator[None]:
    """Hold `<run_dir>/.lock` for the block, or raise RunDirBusy at once (one line naming the run dir and its
    holder) where another live job holds it. The kernel drops the lock when its holder dies, SIGKILL included, so
    a job requeued or rerun after a crash takes it again; a file system without locks goes on unlocked.

    Only one process per job takes it (`take`: rank 0): its ranks would refuse each other. `agree` hands rank 0's
    verdict (None: held) to every rank, a collective every rank must reach, so that they stop together instead of
    waiting in rank 0's first collective. `flag` names the option that chooses another directory."""
    run_dir = Path(run_dir)
    refuse_store(run_dir, flag)  # before the lock file, which would be the run's first file in the store
    with contextlib.ExitStack() as stack:
        busy = _take(run_dir / LOCK_NAME, stack, flag) if take else None
        if agree is not None:
            busy = agree(busy)
        if busy:
            raise RunDirBusy(busy)
        if take:  # held: no other writer, so a temporary file here is one a killed write left (the model's size)
            for d in (run_dir, run_dir / CKPT_NAME):
                remove_stale_temps(d)
        yield


def _take(lock: Path, stack: contextlib.ExitStack, flag: str) -> str | None:
    """None once `lock` is held (for the stack's lifetime); else the refusal."""
    deadline = time.monotonic() + REQUEUE_WAIT_S
    waited = False
    while True:
        try:
            stack.enter_context(held(lock))
        except LockHeld:
            holder = _holder(lock)
            if not _earlier_attempt(holder) or time.monotonic() > deadline:
                who = f" ({_describe(holder)})" if holder else ""
                return (f"run dir {lock.parent}: another job is writing it now{who}; wait for it to end, or use "
                        f"another {flag}")
            if not waited:
                log.info("%s: held by an earlier attempt of this job (%s), whose lock the file server has not "
                         "dropped yet; waiting for it (at most %.0f s)", lock, _describe(holder), REQUEUE_WAIT_S)
                waited = True
            time.sleep(REQUEUE_POLL_S)
            continue
        _record_holder(lock)
        return None


def _me() -> dict[str, Any]:
    restart = os.environ.get("SLURM_RESTART_COUNT", "")
    return {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "restart": int(restart) if restart.isdigit() else 0}


def _record_holder(lock: Path) -> None:
    # Who holds it, for the refusal to name: the lock file's content, rewritten by each holder.
    try:
        lock.write_text(json.dumps(_me()) + "\n")
    except OSError:
        pass  # a read-only lock file (a colleague's directory): the lock itself still holds


def _holder(lock: Path) -> dict[str, Any]:
    try:
        found = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _earlier_attempt(holder: dict[str, Any]) -> bool:
    """The holder is this SLURM job before its requeue: dead, although its lock may outlive it on a file server."""
    me = _me()
    return me["slurm_job"] is not None and holder.get("slurm_job") == me["slurm_job"] \
        and isinstance(holder.get("restart"), int) and holder["restart"] < me["restart"]


def _describe(holder: dict[str, Any]) -> str:
    job = f", SLURM job {holder['slurm_job']}" if holder.get("slurm_job") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}"
