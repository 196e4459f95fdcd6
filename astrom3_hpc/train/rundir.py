"""A run directory: resolved config, per-epoch metrics.jsonl, per-step steps.jsonl, final metrics.json.

Only rank 0 writes here (checkpoints aside). `metrics.json` appears, atomically, only when a run succeeds: its
presence is what the collector and `--resume-missing` take as "this task is done".
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from ..core.atomic import append_jsonl, read_jsonl, write_json, write_text
from ..core.config import RunConfig, dump_config

log = logging.getLogger("astrom3")


class RunDir:
    def __init__(self, path: str | Path, is_main: bool = True):
        self.path = Path(path)
        self.is_main = is_main
        if is_main:
            (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)

    @property
    def ckpt_dir(self) -> Path:
        return self.path / "checkpoints"

    def write_config(self, cfg: RunConfig, info: dict[str, Any]) -> None:
        if self.is_main:
            dump_config(cfg, self.path / "config.yaml")
            write_json(self.path / "run.json", {**info, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})

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
    return yaml.safe_load(p.read_text())


def env_info() -> dict[str, Any]:
    return {k: os.environ[k] for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
                                       "SLURM_RESTART_COUNT", "HOSTNAME") if k in os.environ}
