"""A run directory: resolved config, per-epoch metrics.jsonl, per-step steps.jsonl, final metrics.json, train.log.

Only rank 0 writes here (checkpoints and train.log aside). `metrics.json` appears, atomically, only when a run
succeeds: its presence is what the collector and `--resume-missing` take as "this task is done".
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..core.atomic import append_jsonl, read_jsonl, write_json, write_text
from ..core.config import RunConfig, dump_config
from ..core.errors import first_line

log = logging.getLogger("astrom3")

LOG_NAME = "train.log"
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
        self.close()

    def record_error(self, exc: BaseException, what: str = "failed") -> None:
        """Write the error that ends this rank, with its traceback, to the file only (the CLI already prints
        it on the terminal). A refusal to run in this directory (it holds another run) is not this log's."""
        if not getattr(exc, "recorded_in_run_log", True):
            return
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
            self.record_error(e, what)
            raise
        finally:
            self.detach()


class RunDir:
    def __init__(self, path: str | Path, is_main: bool = True, rank: int | None = None):
        self.path = Path(path)
        self.is_main = is_main
        if is_main:
            (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.log = RunLog(self.path, (0 if is_main else 1) if rank is None else rank).attach()

    def close(self) -> None:
        """Stop logging into this run directory (the process may go on, e.g. a test or a sweep worker)."""
        self.log.detach()

    @property
    def ckpt_dir(self) -> Path:
        return self.path / "checkpoints"

    def write_config(self, cfg: RunConfig, info: dict[str, Any]) -> None:
        if self.is_main:
            dump_config(cfg, self.path / "config.yaml")
            write_run_json(self.path, info)

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
        data = yaml.safe_load(p.read_text())
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
