"""Scheduler log files of a sweep: which files belong to which task, and the line that says why a task failed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

LOG_SUFFIXES = (".out", ".err", ".log")


def _last_line(path: Path, max_bytes: int = 65536) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in tail.replace("\r", "\n").splitlines() if ln.strip()]
    # The launcher's own closing lines (`srun: error: ... Exited with exit code 2`, slurmstepd, mpiexec, torchrun)
    # say only that a task failed; the task's error is the last line that states one, else its last own line.
    own = [ln for ln in lines if not _LAUNCHER_NOISE.match(ln)] or lines
    errors = [ln for ln in own if _ERROR_LINE.search(ln)]
    if not own:
        return None
    line = (errors or own)[-1]
    return line if len(line) <= 300 else line[:297] + "..."


_LAUNCHER_NOISE = re.compile(r"^(srun: |slurmstepd: |=+$|BAD TERMINATION|YOUR APPLICATION TERMINATED|"
                             r"\[mpiexec@|torch\.distributed\.elastic|\[\d+\]:|exitcode\s*:|error_file\s*:|"
                             r"traceback\s*:|host\s*:|rank\s*:|time\s*:|Root Cause|Failures:|<NO_OTHER_FAILURES>)")
_ERROR_LINE = re.compile(r"^astrom3 [\w-]+: (?:rank \d+: )?error: |^[\w.]*(?:Error|Exception|Interrupt)\b.*:")


_SUBMITIT_RANK = re.compile(r"^(?P<job>\d+)_(?P<idx>\d+)_(?P<rank>\d+)_log\.(?:out|err)$")
_SUBMITIT = re.compile(r"^(?P<job>\d+)_(?P<idx>\d+)_log\.(?:out|err)$")
_SLURM = re.compile(r"(?:^|[_.\-])(?P<job>\d+)_(?P<idx>\d+)\.(?:out|err|log)$")
_SUFFIX = re.compile(r"_(?P<idx>\d+)(?:_log)?\.(?:out|err)$")


def parse_log_name(name: str) -> tuple[str | None, int] | None:
    """(array job id or None, task index) that a scheduler log file name encodes, or None.

    SLURM `--output=<prefix>_%A_%a.out` -> `ft_123_7.out`; Submitit arrays -> `123_7_0_log.out` (job, index, rank),
    also `123_7_log.out`; anything else ending in `_<index>.out|.err` or `_<index>_log.out|.err`."""
    for rx in (_SUBMITIT_RANK, _SUBMITIT, _SLURM):
        m = rx.search(name)
        if m:
            return m.group("job"), int(m.group("idx"))
    m = _SUFFIX.search(name)
    if m:
        return None, int(m.group("idx"))
    return None


def read_job_ids(sweep_root: Path) -> set[str]:
    """Array job ids listed in <sweep>/jobs.json, in any of the obvious shapes: a list of ids, {"job_ids": [...]},
    {"jobs": [{"job_id": ...}, ...]}, {"finetune": {"array_job_id": ...}}. Submitit ids "123_7" count as "123"."""
    p = sweep_root / "jobs.json"
    if not p.exists():
        return set()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return set()
    ids: set[str] = set()
    id_keys = {"job_id", "jobid", "array_job_id", "job_ids", "jobids", "id", "ids"}

    def add(v: Any) -> None:
        if isinstance(v, bool):
            return
        if isinstance(v, (int, str)) and re.fullmatch(r"\d+(?:_\d+)?", str(v)):
            ids.add(str(v).split("_")[0])
        elif isinstance(v, list):
            for x in v:
                add(x)

    def walk(v: Any, top: bool = False) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if str(k).lower() in id_keys:
                    add(x)
                walk(x)
        elif isinstance(v, list):
            for x in v:
                if top:
                    add(x)
                walk(x)

    walk(data, top=True)
    return ids


def read_array_tasks(sweep_root: Path) -> dict[str, dict[int, int]]:
    """Per Submitit array job id in <sweep>/jobs.json: array position -> manifest task index
    (``array_index_to_task``). Submitit numbers array tasks by position, so the SLURM_ARRAY_TASK_ID a task's
    run.json records is its position, not its task index, once the array is a subset (--resume-missing)."""
    try:
        data = json.loads((sweep_root / "jobs.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    out: dict[str, dict[int, int]] = {}
    subs = data.get("submissions") if isinstance(data, dict) else None
    for sub in subs if isinstance(subs, list) else []:
        for arr in (sub.get("finetune") or []) if isinstance(sub, dict) else []:
            mapping = arr.get("array_index_to_task") if isinstance(arr, dict) else None
            if isinstance(mapping, dict) and arr.get("array_job_id") is not None:
                try:
                    out[str(arr["array_job_id"])] = {int(k): int(v) for k, v in mapping.items()}
                except (TypeError, ValueError):  # a hand-edited record: only this array's logs go unmatched
                    continue
    return out


class LogIndex:
    """The scheduler log files of a sweep, by task index."""

    def __init__(self, sweep_root: Path):
        self.root = sweep_root
        self.job_ids = read_job_ids(sweep_root)
        self.array_tasks = read_array_tasks(sweep_root)
        self.files: list[tuple[Path, str | None, int]] = []
        self.all_files: list[Path] = []
        logs = sweep_root / "logs"
        if logs.is_dir():
            for p in sorted(logs.rglob("*")):
                if p.is_file() and p.suffix in LOG_SUFFIXES:
                    self.all_files.append(p)
                    parsed = parse_log_name(p.name)
                    if parsed is not None:
                        self.files.append((p, *parsed))
        # Decided once for the whole sweep: per task, a task that never started under the current jobs would
        # inherit an older submission's log of the same index.
        self.by_job_id = any(job in self.job_ids for _, job, _ in self.files)

    def for_task(self, index: int | None, run_ids: dict[str, str] | None = None) -> list[Path]:
        """Log files of task `index` (by array job id from jobs.json and index; by index alone when no id of
        jobs.json names any log file), plus those named after the SLURM ids the run itself recorded in run.json."""
        hits: set[Path] = set()
        if index is not None:
            hits = {p for p, job, idx in self.files if idx == index and (job in self.job_ids or not self.by_job_id)}
        run_ids = run_ids or {}
        array_job, task_id = run_ids.get("SLURM_ARRAY_JOB_ID"), run_ids.get("SLURM_ARRAY_TASK_ID")
        if array_job and task_id and task_id.isdigit():
            task = int(task_id)
            if array_job in self.array_tasks:  # a Submitit array: its logs/ links are named by task index
                task = self.array_tasks[array_job].get(task, -1)
            hits |= {p for p, job, idx in self.files if job == array_job and idx == task}
        job_id = run_ids.get("SLURM_JOB_ID")
        if job_id and not array_job:
            hits |= {p for p in self.all_files if job_id in re.split(r"[_.\-]", p.name)}
        return sorted(hits, key=lambda p: (p.stat().st_mtime, p.name))

    def for_pretrain(self, seed: int) -> list[Path]:
        hits = [p for p in self.all_files if "pretrain" in p.name.lower() or p.name.lower().startswith("pt_")]
        tagged = [p for p in hits if re.search(rf"(?:^|[_.\-])s?{seed}(?:[_.\-]|$)", p.stem)]
        return sorted(tagged or hits, key=lambda p: (p.stat().st_mtime, p.name))


def recorded_slurm_ids(d: Path) -> dict[str, str]:
    """The SLURM ids a run recorded in its run.json (rundir.env_info), if any."""
    try:
        info = json.loads((d / "run.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    if not isinstance(info, dict):
        return {}
    return {k: str(info[k]) for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID") if k in info}
