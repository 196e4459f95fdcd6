"""`astrom3 collect SWEEP_DIR`: gather the fine-tuning (and pretraining) results of a sweep into tables and a plot.

Reads
    <sweep>/manifest.json                          the task grid (optional: without it, run dirs are found by scan)
    <sweep>/runs/<task>/metrics.json               one fine-tuning result, written atomically on success only
    <sweep>/pretrain/s<seed>/metrics.json          `embedding_eval` of the pretraining run (or embedding_eval.json)
    <sweep>/logs/, <sweep>/jobs.json               scheduler output, for failed and missing tasks
Writes (atomically, into --out, default <sweep>/results)
    results.md  results.csv  results.json  accuracy_vs_fraction.png

A task counts only if its metrics.json parses, has the expected keys and describes that task; a run directory
without one is "failed" (incomplete), a task without a run directory is "missing". Both are listed with their log
files; the collector still exits 0 (a partial sweep is a normal state, not an error of the collector).

See docs/collect.md.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, TextIO

import numpy as np

from ..core.atomic import atomic_path, write_json, write_text
from ..orchestration.sweep import HPARAM_KEYS, INITS, MANIFEST, MODES, Sweep, cell_hparams

# ------------------------------------------------------------------------------------------------ paper numbers

MODE_NAMES = {"photo": "photometry", "spectra": "spectra", "meta": "metadata", "all": "all three"}
SUBSET_ORDER = ("sub10", "sub25", "sub50", "full")
LABEL_FRACTION = {"sub10": 10, "sub25": 25, "sub50": 50, "full": 100}  # percent of the labels
TEST_SETS = ("test", "test_full")
TEST_SET_TITLES = {"test": "sub-X test set (comparable to the paper)", "test_full": "full test set"}

# Spec section 4: published (AJ) test accuracy %, mean and population std over the 5 split seeds, measured on the
# sub-X test set; "plus" = the paper's paired t-test p < 0.05. The all-three sub10 row used average fusion.
PAPER_RESULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("photo", "sub10"): {"scratch": (84.527, 2.655), "clip": (91.264, 0.974), "plus": True},
    ("photo", "sub25"): {"scratch": (78.382, 2.359), "clip": (88.58, 0.948), "plus": True},
    ("photo", "sub50"): {"scratch": (85.197, 6.209), "clip": (89.572, 0.652), "plus": False},
    ("photo", "full"): {"scratch": (90.724, 1.464), "clip": (91.101, 0.589), "plus": False},
    ("spectra", "sub10"): {"scratch": (46.677, 3.486), "clip": (60.963, 2.584), "plus": True},
    ("spectra", "full"): {"scratch": (76.278, 0.931), "clip": (77.056, 1.033), "plus": False},
    ("meta", "sub10"): {"scratch": (74.888, 1.856), "clip": (77.161, 1.476), "plus": True},
    ("meta", "full"): {"scratch": (85.667, 0.858), "clip": (85.864, 0.739), "plus": False},
    ("all", "sub10"): {"scratch": (88.261, 1.248), "clip": (89.9, 2.0), "plus": False},
    ("all", "full"): {"scratch": (94.127, 0.24), "clip": (93.501, 0.737), "plus": False},
}
# Frozen CLIP embeddings, full data, 1-nearest-neighbour on train embeddings (spec section 4).
PAPER_KNN1 = {"photo": 87.0, "spectra": 72.6, "meta": 81.5, "average": 88.8}
EMBEDDING_VIEWS = ("photo", "spectra", "meta", "average")
EMBEDDING_NAMES = {"photo": "photometry", "spectra": "spectra", "meta": "metadata", "average": "averaged"}

ALPHA = 0.05
ALL_INITS = (*INITS, "baseline")  # "baseline": `astrom3 baseline`, the classical light-curve classifier
_REPORT_KEYS = ("n", "accuracy", "macro_f1")
LOG_SUFFIXES = (".out", ".err", ".log")


def paper_value(mode: str, subset: str, init: str, test_set: str) -> tuple[float, float] | None:
    """The paper's (mean, std) for a group, where comparable: the paper measured sub-X runs on the sub-X test set,
    so on the full test set only the `full` rows have a published counterpart."""
    p = PAPER_RESULTS.get((mode, subset))
    if p is None or init not in p or (test_set == "test_full" and subset != "full"):
        return None
    return p[init]


# ------------------------------------------------------------------------------------------------ reading runs

@dataclass
class RunRecord:
    """One fine-tuning task (or one pretraining run) and what the collector found for it."""
    status: str  # complete | failed | missing
    run_dir: str  # relative to the sweep directory where possible
    mode: str | None = None
    subset: str | None = None
    seed: int | None = None
    init: str | None = None
    index: int | None = None  # task index in the manifest (None without one)
    kind: str = "finetune"
    reason: str | None = None
    metrics: dict[str, Any] | None = field(default=None, repr=False)
    logs: list[str] = field(default_factory=list)
    run_files: list[str] = field(default_factory=list)
    last_log_line: str | None = None
    last_log_file: str | None = None
    last_epoch: int | None = None

    @property
    def key(self) -> tuple:
        return (self.mode, self.subset, self.seed, self.init)

    def label(self) -> str:
        idx = f"task {self.index}" if self.index is not None else self.kind
        if self.kind == "pretrain":
            return f"{idx} seed {self.seed}"
        return f"{idx} {self.mode}/{self.subset}/s{self.seed}/{self.init}"


class BadMetrics(ValueError):
    pass


def _finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_report(rep: Any, name: str) -> None:
    if not isinstance(rep, dict):
        raise BadMetrics(f"'{name}' is not a report")
    for k in _REPORT_KEYS:
        if k not in rep:
            raise BadMetrics(f"'{name}' has no '{k}'")
    if not _finite_number(rep["accuracy"]) or not 0.0 <= rep["accuracy"] <= 1.0:
        raise BadMetrics(f"'{name}.accuracy' is {rep['accuracy']!r}, not a fraction")
    if not isinstance(rep["n"], int) or rep["n"] <= 0:
        raise BadMetrics(f"'{name}.n' is {rep['n']!r}")
    if not (_finite_number(rep["macro_f1"]) or rep["macro_f1"] is None):
        raise BadMetrics(f"'{name}.macro_f1' is {rep['macro_f1']!r}")


def read_metrics(path: Path, kind: str = "finetune") -> dict[str, Any]:
    """A run's metrics.json, or BadMetrics saying why it cannot be trusted."""
    try:
        text = path.read_text()
    except OSError as e:
        raise BadMetrics(f"cannot read {path.name}: {e}") from None
    try:
        m = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadMetrics(f"{path.name} does not parse ({e.msg}, line {e.lineno} column {e.colno}: truncated or "
                         f"corrupt?)") from None
    if not isinstance(m, dict):
        raise BadMetrics(f"{path.name} is not a JSON object")
    if m.get("kind") != kind:
        raise BadMetrics(f"{path.name} has kind {m.get('kind')!r}, expected {kind!r}")
    if kind == "finetune":
        for k in ("mode", "subset", "seed", "init", "test", "test_full", "test_accuracy"):
            if k not in m:
                raise BadMetrics(f"{path.name} has no '{k}'")
        if m["mode"] not in MODES:
            raise BadMetrics(f"{path.name}: unknown mode {m['mode']!r}")
        if m["subset"] not in SUBSET_ORDER:
            raise BadMetrics(f"{path.name}: unknown subset {m['subset']!r}")
        if m["init"] not in ALL_INITS:
            raise BadMetrics(f"{path.name}: init is {m['init']!r}, not one of {ALL_INITS}")
        if not isinstance(m["seed"], int):
            raise BadMetrics(f"{path.name}: seed is {m['seed']!r}")
        _check_report(m["test"], "test")
        _check_report(m["test_full"], "test_full")
    return m


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _run_files(d: Path) -> list[str]:
    if not d.is_dir():
        return []
    return sorted(p.name + ("/" if p.is_dir() else "") for p in d.iterdir() if not p.name.startswith("."))


def _last_epoch(d: Path) -> int | None:
    p = d / "metrics.jsonl"
    if not p.exists():
        return None
    from ..core.atomic import read_jsonl

    try:
        rows = read_jsonl(p)
    except OSError:
        return None
    epochs = [r.get("epoch") for r in rows if isinstance(r.get("epoch"), int)]
    return max(epochs) if epochs else None


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


# ------------------------------------------------------------------------------------------------ log files

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
        data = json.loads(p.read_text())
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


class LogIndex:
    """The scheduler log files of a sweep, by task index."""

    def __init__(self, sweep_root: Path):
        self.root = sweep_root
        self.job_ids = read_job_ids(sweep_root)
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

    def for_task(self, index: int | None, run_ids: dict[str, str] | None = None) -> list[Path]:
        """Log files of task `index` (by array job id from jobs.json and index, else by index alone), plus those
        named after the SLURM ids the run itself recorded in run.json."""
        hits: set[Path] = set()
        if index is not None:
            if self.job_ids:
                hits = {p for p, job, idx in self.files if idx == index and job in self.job_ids}
            if not hits:  # no jobs.json, or its ids match no file name: fall back to the index alone
                hits = {p for p, job, idx in self.files if idx == index}
        run_ids = run_ids or {}
        array_job, task_id = run_ids.get("SLURM_ARRAY_JOB_ID"), run_ids.get("SLURM_ARRAY_TASK_ID")
        if array_job and task_id and task_id.isdigit():
            hits |= {p for p, job, idx in self.files if job == array_job and idx == int(task_id)}
        job_id = run_ids.get("SLURM_JOB_ID")
        if job_id and not array_job:
            hits |= {p for p in self.all_files if job_id in re.split(r"[_.\-]", p.name)}
        return sorted(hits, key=lambda p: (p.stat().st_mtime, p.name))

    def for_pretrain(self, seed: int) -> list[Path]:
        hits = [p for p in self.all_files if "pretrain" in p.name.lower() or p.name.lower().startswith("pt_")]
        tagged = [p for p in hits if re.search(rf"(?:^|[_.\-])s?{seed}(?:[_.\-]|$)", p.stem)]
        return sorted(tagged or hits, key=lambda p: (p.stat().st_mtime, p.name))


def _run_ids(d: Path) -> dict[str, str]:
    """The SLURM ids a run recorded in its run.json (rundir.env_info), if any."""
    try:
        info = json.loads((d / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if not isinstance(info, dict):
        return {}
    return {k: str(info[k]) for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID") if k in info}


def _attach_logs(rec: RunRecord, logs: list[Path], run_dir: Path, root: Path) -> None:
    rec.logs = [_rel(p, root) for p in logs]
    rec.run_files = _run_files(run_dir)
    rec.last_epoch = _last_epoch(run_dir)
    # Newest stderr first; with stderr merged into stdout (a single --output), the newest .out.
    for group in ([p for p in logs if p.suffix == ".err"], [p for p in logs if p.suffix != ".err"]):
        for p in reversed(group):
            line = _last_line(p)
            if line:
                rec.last_log_line, rec.last_log_file = line, _rel(p, root)
                return


# ------------------------------------------------------------------------------------------------ gathering

@dataclass
class Collection:
    root: Path
    has_manifest: bool
    runs: list[RunRecord]
    pretrain: list[RunRecord]
    warnings: list[str]
    seeds: list[int]
    grid: list[tuple[str, str]]  # (mode, subset) rows to show, in display order


def _task_record(sw: Sweep, task, logs: LogIndex) -> RunRecord:
    d = sw.run_dir(task)
    rec = RunRecord(status="complete", run_dir=task.run_dir, mode=task.mode, subset=task.subset, seed=task.seed,
                    init=task.init, index=task.index)
    mpath = d / "metrics.json"
    if not d.exists():
        rec.status, rec.reason = "missing", "run directory does not exist (never started?)"
    elif not mpath.exists():
        rec.status = "failed"
        rec.reason = ("no metrics.json (incomplete: failed, killed or still running)" if (d / "config.yaml").exists()
                      else "no metrics.json and no config.yaml (failed before the run started)")
    else:
        try:
            m = read_metrics(mpath)
            got = (m["mode"], m["subset"], m["seed"], m["init"])
            want = (task.mode, task.subset, task.seed, task.init)
            if got != want:
                raise BadMetrics(f"metrics.json is for {'/'.join(map(str, got))}, the task is "
                                 f"{'/'.join(map(str, want))}")
            rec.metrics = m
        except BadMetrics as e:
            rec.status, rec.reason = "failed", str(e)
    if rec.status != "complete":
        _attach_logs(rec, logs.for_task(task.index, _run_ids(d)), d, sw.root)
    return rec


def _pretrain_record(root: Path, d: Path, seed: int | None, logs: LogIndex | None) -> RunRecord:
    rec = RunRecord(status="complete", run_dir=_rel(d, root), seed=seed, kind="pretrain")
    mpath = d / "metrics.json"
    if not d.exists():
        rec.status, rec.reason = "missing", "pretraining run directory does not exist"
    elif not mpath.exists():
        rec.status, rec.reason = "failed", "no metrics.json (incomplete: failed, killed or still running)"
    else:
        try:
            m = read_metrics(mpath, kind="pretrain")
            rec.seed = m.get("seed", seed)
            emb = m.get("embedding_eval")
            if not isinstance(emb, dict) and (d / "embedding_eval.json").exists():
                try:
                    emb = json.loads((d / "embedding_eval.json").read_text())
                except (OSError, json.JSONDecodeError):
                    emb = None
            rec.metrics = {**m, "embedding_eval": emb if isinstance(emb, dict) else None}
        except BadMetrics as e:
            rec.status, rec.reason = "failed", str(e)
    if rec.status != "complete":
        found = [] if logs is None else (logs.for_pretrain(seed) if seed is not None else []) + \
            [p for p in logs.for_task(None, _run_ids(d))]
        _attach_logs(rec, sorted(set(found), key=lambda p: (p.stat().st_mtime, p.name)), d, root)
    return rec


def _pair_key(mode: str, subset: str) -> tuple[int, int]:
    return (MODES.index(mode) if mode in MODES else 99, SUBSET_ORDER.index(subset) if subset in SUBSET_ORDER else 99)


def _grid_order(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    pairs = set(pairs)
    return sorted(pairs, key=lambda p: _pair_key(*p))


def gather_sweep(root: Path) -> Collection:
    sw = Sweep.load(root)
    logs = LogIndex(sw.root)
    runs = [_task_record(sw, t, logs) for t in sw.tasks]
    warn: list[str] = []
    clip_seeds = sorted({t.seed for t in sw.tasks if t.init == "clip"})
    pre_seeds = set(clip_seeds)
    pdir = sw.root / "pretrain"
    if pdir.is_dir():
        for d in pdir.iterdir():
            m = re.fullmatch(r"s(-?\d+)", d.name)
            if m and d.is_dir():
                pre_seeds.add(int(m.group(1)))
    pretrain = [_pretrain_record(sw.root, sw.pretrain_dir(s), s, logs) for s in sorted(pre_seeds)]
    return Collection(sw.root, True, runs, pretrain, warn, sw.seeds,
                      _grid_order((t.mode, t.subset) for t in sw.tasks))


def _parse_dir_name(name: str) -> dict[str, Any]:
    m = re.fullmatch(r"(?P<mode>[a-z]+)-(?P<subset>sub\d+|full)-s(?P<seed>-?\d+)-(?P<init>clip|scratch)", name)
    if not m:
        return {}
    return {"mode": m["mode"], "subset": m["subset"], "seed": int(m["seed"]), "init": m["init"]}


def _describe_incomplete(d: Path) -> tuple[str, dict[str, Any]]:
    """(kind, {mode, subset, seed, init}) of a run dir without metrics.json, from run.json / config.yaml / name."""
    kind = None
    try:
        kind = json.loads((d / "run.json").read_text()).get("kind")
    except (OSError, json.JSONDecodeError, AttributeError):
        pass
    info = _parse_dir_name(d.name)
    try:
        import yaml

        cfg = yaml.safe_load((d / "config.yaml").read_text()) or {}
        f, data = cfg.get("finetune") or {}, cfg.get("data") or {}
        init = f.get("init")
        info = {"mode": f.get("mode"), "subset": data.get("subset"), "seed": data.get("seed"),
                "init": None if init is None else ("scratch" if init == "scratch" else "clip"), **info}
    except Exception:  # noqa: BLE001 - an unreadable config only costs the description
        pass
    if kind is None:
        kind = "pretrain" if "pretrain" in d.parts[-2:-1] or d.name.startswith("pretrain") else "finetune"
    return kind, info


def gather_dir(root: Path, exclude: Path | None = None) -> Collection:
    """No manifest: every metrics.json below `root` is a run; every config.yaml dir without one is incomplete."""
    root = root.resolve()
    warn: list[str] = []
    runs: list[RunRecord] = []
    pretrain: list[RunRecord] = []
    seen: dict[tuple, str] = {}

    def skip(p: Path) -> bool:
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            return True
        return exclude is not None and (p == exclude or exclude in p.parents)

    run_dirs = sorted({p.parent for pat in ("metrics.json", "config.yaml") for p in root.rglob(pat) if not skip(p)})
    run_dirs = [d for d in run_dirs if d.name != "checkpoints"]
    logs = LogIndex(root)
    for d in run_dirs:
        mpath = d / "metrics.json"
        if mpath.exists():
            try:
                kind = json.loads(mpath.read_text()).get("kind")
            except (OSError, json.JSONDecodeError, AttributeError):
                kind = None
            if kind == "pretrain":
                pretrain.append(_pretrain_record(root, d, None, logs))
                continue
            rec = RunRecord(status="complete", run_dir=_rel(d, root), **_parse_dir_name(d.name))
            try:
                m = read_metrics(mpath)
                rec.mode, rec.subset, rec.seed, rec.init = m["mode"], m["subset"], m["seed"], m["init"]
                rec.metrics = m
                if rec.key in seen:
                    warn.append(f"{rec.run_dir}: duplicate result for {rec.mode}/{rec.subset}/s{rec.seed}/{rec.init} "
                                f"(already have {seen[rec.key]}); ignored")
                    continue
                seen[rec.key] = rec.run_dir
            except BadMetrics as e:
                rec.status, rec.reason = "failed", str(e)
                _, info = _describe_incomplete(d)
                for k, v in info.items():
                    if getattr(rec, k) is None:
                        setattr(rec, k, v)
                _attach_logs(rec, logs.for_task(None, _run_ids(d)), d, root)
            runs.append(rec)
        else:
            kind, info = _describe_incomplete(d)
            if kind == "pretrain":
                pretrain.append(_pretrain_record(root, d, info.get("seed"), logs))
                continue
            rec = RunRecord(status="failed", run_dir=_rel(d, root),
                            reason="no metrics.json (incomplete: failed, killed or still running)", **info)
            _attach_logs(rec, logs.for_task(None, _run_ids(d)), d, root)
            runs.append(rec)
    seeds = sorted({r.seed for r in runs if isinstance(r.seed, int)})
    grid = _grid_order((r.mode, r.subset) for r in runs if r.mode in MODES and r.subset in SUBSET_ORDER)
    return Collection(root, False, runs, pretrain, warn, seeds, grid)


def gather(root: str | Path, exclude: Path | None = None) -> Collection:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    return gather_sweep(root) if (root / MANIFEST).exists() else gather_dir(root, exclude)


# ------------------------------------------------------------------------------------------------ statistics

def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    return x


def describe(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    n = len(a)
    return {"mean": float(a.mean()) if n else float("nan"),
            "std_pop": float(a.std(ddof=0)) if n else float("nan"),
            "std_sample": float(a.std(ddof=1)) if n > 1 else float("nan")}


def paired_ttest(clip: dict[int, float], scratch: dict[int, float]) -> dict[str, Any]:
    """scipy.stats.ttest_rel (two-sided) of CLIP vs scratch over the seeds both have."""
    seeds = sorted(set(clip) & set(scratch))
    out: dict[str, Any] = {"seeds": seeds, "n_pairs": len(seeds), "t": float("nan"), "p_value": float("nan")}
    if len(seeds) < 2:
        return out
    from scipy.stats import ttest_rel

    a = np.array([clip[s] for s in seeds])
    b = np.array([scratch[s] for s in seeds])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ttest_rel(a, b)
    out["t"], out["p_value"] = float(res.statistic), float(res.pvalue)
    return out


def aggregate(runs: list[RunRecord]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Per (mode, subset, init): per-seed accuracies (%) and their statistics on both test sets; per
    (mode, subset, test set): the paired t-test CLIP vs scratch."""
    warn: list[str] = []
    by_group: dict[tuple[str, str, str], list[RunRecord]] = {}
    for r in runs:
        if r.status == "complete":
            by_group.setdefault((r.mode, r.subset, r.init), []).append(r)
    groups = []
    for (mode, subset, init) in sorted(by_group, key=lambda k: (_pair_key(k[0], k[1]), ALL_INITS.index(k[2]))):
        rs = sorted(by_group[(mode, subset, init)], key=lambda r: r.seed)
        g: dict[str, Any] = {"mode": mode, "subset": subset, "init": init, "n_seeds": len(rs),
                             "seeds": [r.seed for r in rs]}
        rfr = {r.metrics.get("use_rfr_score") for r in rs}
        fusion = {r.metrics.get("fusion") for r in rs} - {None}
        g["use_rfr_score"] = rfr.pop() if len(rfr) == 1 else "mixed"
        if g["use_rfr_score"] == "mixed":
            warn.append(f"{mode}/{subset}/{init}: seeds mix use_rfr_score on and off; the mean mixes both")
        if fusion:
            g["fusion"] = fusion.pop() if len(fusion) == 1 else "mixed"
        for ts in TEST_SETS:
            acc = [100.0 * r.metrics[ts]["accuracy"] for r in rs]
            f1 = [100.0 * r.metrics[ts]["macro_f1"] for r in rs if r.metrics[ts].get("macro_f1") is not None]
            paper = paper_value(mode, subset, init, ts)
            g[ts] = {"values": dict(zip(g["seeds"], acc)), **describe(acc),
                     "macro_f1_values": {r.seed: 100.0 * r.metrics[ts]["macro_f1"] for r in rs
                                         if r.metrics[ts].get("macro_f1") is not None},
                     "macro_f1_mean": float(np.mean(f1)) if f1 else float("nan"),
                     "n_objects": {r.seed: r.metrics[ts]["n"] for r in rs},
                     "per_class_recall": _mean_recall(r.metrics[ts] for r in rs),
                     "paper_mean": paper[0] if paper else None, "paper_std": paper[1] if paper else None}
        groups.append(g)
    comps = []
    idx = {(g["mode"], g["subset"], g["init"]): g for g in groups}
    for (mode, subset) in _grid_order({(g["mode"], g["subset"]) for g in groups}):
        c, s = idx.get((mode, subset, "clip")), idx.get((mode, subset, "scratch"))
        if not (c and s):
            continue
        for ts in TEST_SETS:
            tt = paired_ttest(c[ts]["values"], s[ts]["values"])
            p = tt["p_value"]
            plus = bool(math.isfinite(p) and p < ALPHA and c[ts]["mean"] > s[ts]["mean"])
            paper = PAPER_RESULTS.get((mode, subset))
            comps.append({"mode": mode, "subset": subset, "test_set": ts, **tt,
                          "clip_mean": c[ts]["mean"], "scratch_mean": s[ts]["mean"],
                          "diff": c[ts]["mean"] - s[ts]["mean"], "plus": plus,
                          "paper_plus": (paper["plus"] if paper and paper_value(mode, subset, "clip", ts) else None)})
    return groups, comps, warn


def _mean_recall(reports: Iterable[dict]) -> dict[str, float]:
    """Per-class test recall (%), mean over the seeds whose test set has the class."""
    vals: dict[str, list[float]] = {}
    for rep in reports:
        for c, v in (rep.get("per_class_recall") or {}).items():
            vals.setdefault(c, []).append(100.0 * v)
    return {c: float(np.mean(v)) for c, v in vals.items()}


def render_per_class(res: dict[str, Any], ts: str = "test") -> list[str]:
    """Accuracy, macro-F1 and per-class recall of every group, the classical baseline included."""
    groups = res["groups"]
    classes = sorted({c for g in groups for c in g[ts]["per_class_recall"]})
    if not groups:
        return []
    out = [f"## Macro-F1 and per-class recall on the {TEST_SET_TITLES[ts]}", "",
           "Mean over seeds (%); init `baseline` is `astrom3 baseline` (Lomb-Scargle + Fourier + statistics, "
           "gradient boosting) on the same splits.", "",
           "| mode | subset | init | n | accuracy | macro-F1 | " + " | ".join(classes) + " |",
           "|---|---|---|---|---|---|" + "---|" * len(classes)]
    for g in groups:
        rec = g[ts]["per_class_recall"]
        f1 = g[ts]["macro_f1_mean"]
        out.append(f"| {g['mode']} | {g['subset']} | {g['init']} | {g['n_seeds']} "
                   f"| {g[ts]['mean']:.2f} | {f1:.2f} | "
                   + " | ".join(f"{rec[c]:.1f}" if c in rec else "" for c in classes) + " |")
    return out + [""]


def aggregate_pretrain(pretrain: list[RunRecord]) -> dict[str, Any]:
    rows = []
    done = [r for r in pretrain if r.status == "complete" and r.metrics and r.metrics.get("embedding_eval")]
    for view in EMBEDDING_VIEWS:
        row: dict[str, Any] = {"view": view, "paper_knn1": PAPER_KNN1.get(view)}
        for metric in ("centroid", "knn1"):
            vals = {r.seed: 100.0 * r.metrics["embedding_eval"][f"{metric}_{view}"] for r in done
                    if _finite_number(r.metrics["embedding_eval"].get(f"{metric}_{view}"))}
            row[metric] = {"values": vals, "n_seeds": len(vals), **describe(list(vals.values()))}
        if row["centroid"]["n_seeds"] or row["knn1"]["n_seeds"]:
            rows.append(row)
    return {"rows": rows, "n_runs": len(pretrain), "n_with_eval": len(done)}


# ------------------------------------------------------------------------------------------------ rendering

def _fmt(mean: float | None, std: float | None, n: int | None = None, plus: bool = False) -> str:
    if mean is None or not math.isfinite(mean):
        return ""
    if n == 1:
        s = f"{mean:.3f} (1 seed)"
    elif std is None or not math.isfinite(std):
        s = f"{mean:.3f}"
    else:
        s = f"{mean:.3f} ± {std:.3f}"
    return s + (" +" if plus else "")


def _fmt_paper(p: tuple[float, float] | None, plus: bool = False) -> str:
    """A published number as printed in the paper (no padding to more decimals than it has)."""
    return f"{p[0]} ± {p[1]}" + (" +" if plus else "") if p else ""


def _fmt_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return ""
    return f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}"


def summary_line(runs: list[RunRecord]) -> str:
    n = len(runs)
    c = sum(r.status == "complete" for r in runs)
    f = sum(r.status == "failed" for r in runs)
    m = sum(r.status == "missing" for r in runs)
    return f"{c} of {n} tasks complete; {f} failed; {m} missing"


def failure_lines(recs: list[RunRecord]) -> list[str]:
    lines = []
    for r in recs:
        if r.status == "complete":
            continue
        lines.append(f"- {r.status.upper()} {r.label()}: {r.reason}")
        lines.append(f"  run dir: {r.run_dir}" + (f" ({', '.join(r.run_files)})" if r.run_files else "")
                     + (f"; last logged epoch {r.last_epoch}" if r.last_epoch is not None else ""))
        lines.append("  logs: " + (", ".join(r.logs) if r.logs else "none found"))
        if r.last_log_line:
            lines.append(f"  last line of {r.last_log_file}: {r.last_log_line}")
    return lines


def render_markdown(res: dict[str, Any], std: str = "population") -> str:
    skey = "std_pop" if std == "population" else "std_sample"
    groups = {(g["mode"], g["subset"], g["init"]): g for g in res["groups"]}
    comps = {(c["mode"], c["subset"], c["test_set"]): c for c in res["comparisons"]}
    sm = res["summary"]
    pre_line = (f"Pretraining: {sm['pretrain_complete']} of {sm['pretrain_runs']} runs complete "
                f"({res['pretrain']['n_with_eval']} with an embedding evaluation)." if sm["pretrain_runs"] else "")
    out = [f"# AstroM3 fine-tuning results: {res['sweep']}", "",
           f"**{sm['line']}**", *(["", pre_line] if pre_line else []), "",
           f"Test accuracy (%), mean ± {std} std over seeds ({', '.join(map(str, res['seeds'])) or 'none'}); "
           f"n = seeds with a result (no CLIP / CLIP); p = paired t-test CLIP vs no CLIP (two-sided, "
           f"scipy.stats.ttest_rel) over the seeds both have; \"+\" marks p < {ALPHA} with CLIP better. "
           f"Paper columns: spec section 4 (AJ version, 5 seeds, population std).", ""]
    for ts in TEST_SETS:
        out += [f"## Test accuracy on the {TEST_SET_TITLES[ts]}", "",
                "| modality | subset | n | no CLIP | CLIP | p | paper no CLIP | paper CLIP | macro-F1 no CLIP "
                "| macro-F1 CLIP |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for mode, subset in res["grid"]:
            s, c = groups.get((mode, subset, "scratch")), groups.get((mode, subset, "clip"))
            comp = comps.get((mode, subset, ts))
            plus = bool(comp and comp["plus"])
            ps, pc = paper_value(mode, subset, "scratch", ts), paper_value(mode, subset, "clip", ts)
            paper_plus = bool(pc and PAPER_RESULTS[(mode, subset)]["plus"])
            fusion = {g.get("fusion") for g in (s, c) if g} - {None}
            name = MODE_NAMES.get(mode, mode) + (f" ({'/'.join(sorted(fusion))} fusion)" if fusion else "")

            def cell(g: dict | None, p: bool = False) -> str:
                return _fmt(g[ts]["mean"], g[ts][skey], g["n_seeds"], p) if g else "—"

            def f1(g: dict | None) -> str:
                return f"{g[ts]['macro_f1_mean']:.2f}" if g and math.isfinite(g[ts]["macro_f1_mean"]) else ""

            out.append(f"| {name} | {subset} | {s['n_seeds'] if s else 0}/{c['n_seeds'] if c else 0} | {cell(s)} "
                       f"| {cell(c, plus)} | {_fmt_p(comp['p_value']) if comp else ''} "
                       f"| {_fmt_paper(ps)} | {_fmt_paper(pc, paper_plus)} "
                       f"| {f1(s)} | {f1(c)} |")
        if ts == "test" and any(m == "all" for m, _ in res["grid"]):
            out += ["", "Paper, all three: sub10 used average fusion."]
        if ts == "test_full":
            out += ["", "The paper measured sub-X runs on the sub-X test set only, so its numbers appear here for "
                        "the `full` rows alone (see the table above for the sub-X comparison)."]
        out.append("")
    out += render_per_class(res)
    pre = res["pretrain"]
    if pre["rows"]:
        out += ["## Frozen CLIP embeddings (pretraining runs, full test set)", "",
                f"Accuracy (%), mean ± {std} std over {pre['n_with_eval']} pretraining run(s): class-centroid and "
                "1-nearest-neighbour classification of test embeddings from train embeddings.", "",
                "| embedding | n | centroid | 1-NN | paper 1-NN |", "|---|---|---|---|---|"]
        for row in pre["rows"]:
            c, k = row["centroid"], row["knn1"]
            out.append(f"| {EMBEDDING_NAMES.get(row['view'], row['view'])} | {k['n_seeds']} "
                       f"| {_fmt(c['mean'], c[skey], c['n_seeds'])} | {_fmt(k['mean'], k[skey], k['n_seeds'])} "
                       f"| {row['paper_knn1'] if row['paper_knn1'] is not None else ''} |")
        out.append("")
    out += render_cell_table(res.get("cell_hparams", []))
    fails = [r for r in res["_records"] if r.status != "complete"]
    pfails = [r for r in res["_pretrain_records"] if r.status != "complete"]
    if fails or pfails:
        out += ["## Failed and missing runs", "", *failure_lines(fails), *failure_lines(pfails), ""]
    if res["warnings"]:
        out += ["## Warnings", "", *[f"- {w}" for w in res["warnings"]], ""]
    out += [f"**{res['summary']['line']}**", ""]
    return "\n".join(out)


CSV_COLUMNS = ("mode", "subset", "init", "test_set", "n_seeds", "mean", "std_pop", "std_sample", "macro_f1_mean",
               "paper_mean", "paper_std", "p_value")


def render_csv(res: dict[str, Any]) -> str:
    import csv
    import io

    comps = {(c["mode"], c["subset"], c["test_set"]): c for c in res["comparisons"]}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)

    def num(x: Any) -> str:
        return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else repr(float(x))

    for g in res["groups"]:
        for ts in TEST_SETS:
            st = g[ts]
            comp = comps.get((g["mode"], g["subset"], ts))
            w.writerow([g["mode"], g["subset"], g["init"], ts, g["n_seeds"], num(st["mean"]), num(st["std_pop"]),
                        num(st["std_sample"]), num(st["macro_f1_mean"]), num(st["paper_mean"]), num(st["paper_std"]),
                        num(comp["p_value"]) if comp else ""])
    return buf.getvalue()


def plot_accuracy_vs_fraction(res: dict[str, Any], path: str | Path, std: str = "population") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skey = "std_pop" if std == "population" else "std_sample"
    groups = {(g["mode"], g["subset"], g["init"]): g for g in res["groups"]}
    colours = {"clip": "tab:blue", "scratch": "tab:orange"}
    labels = {"clip": "CLIP", "scratch": "no CLIP"}
    offset = {"clip": 1.0, "scratch": -1.0}
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2), sharex=True)
    for ax, mode in zip(axes, MODES):
        any_data = False
        for init in ("scratch", "clip"):
            for ts, style in (("test", "-"), ("test_full", "--")):
                pts = [(LABEL_FRACTION[s], groups[(mode, s, init)]) for s in SUBSET_ORDER if (mode, s, init) in groups]
                if not pts:
                    continue
                any_data = True
                x = np.array([p[0] for p in pts], dtype=float) + offset[init] * (1.0 if ts == "test" else 1.6)
                y = np.array([p[1][ts]["mean"] for p in pts])
                e = np.nan_to_num(np.array([p[1][ts][skey] for p in pts], dtype=float))
                ax.errorbar(x, y, yerr=e, fmt="o" + style, color=colours[init], capsize=3, ms=5,
                            lw=1.6 if ts == "test" else 1.0, alpha=1.0 if ts == "test" else 0.55,
                            label=f"{labels[init]} ({'sub-X test' if ts == 'test' else 'full test'})")
            pp = [(LABEL_FRACTION[s], PAPER_RESULTS[(mode, s)][init]) for s in SUBSET_ORDER
                  if (mode, s) in PAPER_RESULTS]
            if pp:
                ax.errorbar([p[0] + offset[init] * 2.2 for p in pp], [p[1][0] for p in pp],
                            yerr=[p[1][1] for p in pp], fmt="s", mfc="none", mec=colours[init], ecolor=colours[init],
                            ms=7, capsize=2, lw=0.8, alpha=0.8, label=f"{labels[init]} (paper)")
        if not any_data:
            ax.text(0.5, 0.5, "no completed runs", transform=ax.transAxes, ha="center", va="center", color="grey")
        ax.set_title(MODE_NAMES[mode])
        ax.set_xticks([10, 25, 50, 100], ["10%", "25%", "50%", "100%"])
        ax.set_xlim(0, 110)
        ax.set_xlabel("label fraction")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"test accuracy % (mean ± {std} std)")
    handles, labs = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labs:
                handles.append(h)
                labs.append(lab)
    if handles:
        fig.legend(handles, labs, loc="lower center", ncol=min(len(labs), 6), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.05, right=0.99, top=0.92, bottom=0.25, wspace=0.22)  # tight_layout is slow
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ top level

def _record_json(r: RunRecord) -> dict[str, Any]:
    d = asdict(r)
    m = d.pop("metrics")
    if m and r.kind == "finetune":
        d.update({"test_accuracy": 100.0 * m["test"]["accuracy"],
                  "test_full_accuracy": 100.0 * m["test_full"]["accuracy"],
                  "test_macro_f1": None if m["test"].get("macro_f1") is None else 100.0 * m["test"]["macro_f1"],
                  "test_full_macro_f1": (None if m["test_full"].get("macro_f1") is None
                                         else 100.0 * m["test_full"]["macro_f1"]),
                  "n_test": m["test"]["n"], "n_test_full": m["test_full"]["n"],
                  **{k: m.get(k) for k in ("use_rfr_score", "fusion", "best_val", "epochs_run", "world_size",
                                           "init_dir", "finished")}})
    elif m and r.kind == "pretrain":
        d.update({k: m.get(k) for k in ("embedding_eval", "best_val", "epochs_run", "best_epoch", "finished")})
    return d


def cell_table(runs: list[RunRecord], root: Path) -> list[dict[str, Any]]:
    """Which fine-tuning values each (mode, subset) cell ran with, read from every run's resolved config.yaml.
    One row per distinct set of values in a cell (normally one: CLIP-init and scratch share the cell's values)."""
    import yaml

    rows: dict[tuple, dict[str, Any]] = {}
    for r in runs:
        d = Path(r.run_dir) if Path(r.run_dir).is_absolute() else root / r.run_dir
        p = d / "config.yaml"
        if r.kind != "finetune" or r.mode is None or r.subset is None or not p.exists():
            continue
        try:
            hp = cell_hparams(yaml.safe_load(p.read_text()))
        except (KeyError, TypeError, IndexError, yaml.YAMLError):
            continue  # a config of another version: the run's own failure report covers it
        key = (r.mode, r.subset, json.dumps(hp, sort_keys=True))
        row = rows.setdefault(key, {"mode": r.mode, "subset": r.subset, **hp, "inits": set(), "n_runs": 0})
        row["inits"].add(r.init)
        row["n_runs"] += 1
    order = {p: i for i, p in enumerate(_grid_order({(m, s) for m, s, _ in rows}))}
    out = sorted(rows.values(), key=lambda x: order[(x["mode"], x["subset"])])
    for row in out:
        row["inits"] = sorted(row["inits"])
    return out


def render_cell_csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(("mode", "subset", "inits", "n_runs", *HPARAM_KEYS, "cells"))
    for r in rows:
        w.writerow((r["mode"], r["subset"], " ".join(r["inits"]), r["n_runs"],
                    *(" ".join(map(repr, r[k])) if k == "dropout" else repr(r[k]) for k in HPARAM_KEYS),
                    r["cells"] or ""))
    return buf.getvalue()


def render_cell_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    cells = sorted({str(r["cells"]) for r in rows if r.get("cells")})
    out = ["## Fine-tuning values per cell", "",
           "From each run's resolved config.yaml" + (f" (cells file: {', '.join(cells)})" if cells else
                                                     " (no cells file: one config for every cell)") +
           ". dropout: of the encoder(s) the mode uses (photometry, spectra, metadata); clip 0: no clipping.", "",
           "| modality | subset | inits | runs | lr | betas | weight decay | dropout | plateau factor / patience "
           "| warm-up | clip | epochs | batch | early stop |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {MODE_NAMES.get(r['mode'], r['mode'])} | {r['subset']} | {', '.join(r['inits'])} "
                   f"| {r['n_runs']} | {r['lr']:.3g} | {r['beta1']:.3g}, {r['beta2']:.3g} | {r['weight_decay']:.3g} "
                   f"| {' / '.join(f'{x:.3g}' for x in r['dropout'])} | {r['plateau_factor']:.3g} / "
                   f"{r['plateau_patience']} | {r['warmup_epochs']} | {r['grad_clip']:g} | {r['epochs']} "
                   f"| {r['batch_size']} | {r['early_stop_patience']} |")
    return out + [""]


def collect(sweep_dir: str | Path, out: str | Path | None = None, std: str = "population",
            stream: TextIO | None = None, plot: bool = True) -> dict[str, Any]:
    """Gather, aggregate, write results.{md,csv,json} and (if `plot`) the plot into `out`; print the Markdown to
    `stream`. Returns the results dict (as written to results.json)."""
    if std not in ("population", "sample"):
        raise ValueError(f"std must be 'population' or 'sample', not {std!r}")
    root = Path(sweep_dir)
    out = Path(out) if out is not None else root / "results"
    col = gather(root, exclude=out.resolve() if out.resolve().is_relative_to(root.resolve()) else None)
    groups, comps, warn = aggregate(col.runs)
    pre = aggregate_pretrain(col.pretrain)
    failures = [r for r in col.runs + col.pretrain if r.status != "complete"]
    res: dict[str, Any] = {
        "sweep": str(root), "generated": time.strftime("%Y-%m-%dT%H:%M:%S"), "has_manifest": col.has_manifest,
        "std": std, "seeds": col.seeds, "grid": [list(p) for p in col.grid],
        "summary": {"tasks": len(col.runs), "complete": sum(r.status == "complete" for r in col.runs),
                    "failed": sum(r.status == "failed" for r in col.runs),
                    "missing": sum(r.status == "missing" for r in col.runs), "line": summary_line(col.runs),
                    "pretrain_runs": len(col.pretrain),
                    "pretrain_complete": sum(r.status == "complete" for r in col.pretrain)},
        "groups": groups, "comparisons": comps, "pretrain": pre,
        "paper": {"results": [{"mode": m, "subset": s, "scratch": v["scratch"], "clip": v["clip"], "plus": v["plus"]}
                              for (m, s), v in PAPER_RESULTS.items()], "knn1": PAPER_KNN1},
        "warnings": col.warnings + warn,
        "failures": [_record_json(r) for r in failures],
        "runs": [_record_json(r) for r in col.runs],
        "pretrain_runs": [_record_json(r) for r in col.pretrain],
        "cell_hparams": cell_table(col.runs, root),
    }
    md = render_markdown({**res, "grid": col.grid, "_records": col.runs, "_pretrain_records": col.pretrain}, std)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.md", md)
    write_text(out / "results.csv", render_csv(res))
    write_text(out / "cells.csv", render_cell_csv(res["cell_hparams"]))
    write_json(out / "results.json", _nan_to_none(_stringify_keys(res)))
    if plot:
        plot_accuracy_vs_fraction(res, out / "accuracy_vs_fraction.png", std)
    if stream is not None:
        stream.write(md)
        stream.flush()
    return res


def _stringify_keys(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _stringify_keys(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_stringify_keys(v) for v in x]
    return x


DESCRIPTION = ("Read every fine-tuning run of a sweep (manifest or plain directory of run dirs), aggregate test "
               "accuracy over seeds per (mode, subset, init) with a paired t-test CLIP vs scratch, and write "
               "results.md/.csv/.json and accuracy_vs_fraction.png next to the paper's numbers. Failed and missing "
               "tasks are listed with their log files; the exit code is 0 all the same.")


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep_dir", help="sweep directory (with manifest.json) or any directory of run directories")
    p.add_argument("--out", help="output directory (default SWEEP_DIR/results)")
    p.add_argument("--std", choices=["population", "sample"], default="population",
                   help="std shown in results.md and the plot: population (ddof=0, the paper's; default) or sample "
                        "(ddof=1); results.csv/json carry both")
    p.set_defaults(func=cmd_collect)


def add_parser(sub) -> argparse.ArgumentParser:
    """Register `collect` on an argparse subparsers object (cli.py: `collect.add_parser(sub)`)."""
    p = sub.add_parser("collect", help="collect a sweep's results into tables and a plot next to the paper's",
                       description=DESCRIPTION)
    _add_args(p)
    return p


def cmd_collect(args) -> int:
    try:
        res = collect(args.sweep_dir, getattr(args, "out", None), getattr(args, "std", "population"),
                      stream=sys.stdout)
    except FileNotFoundError as e:
        print(f"astrom3 collect: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if getattr(args, "out", None) else Path(args.sweep_dir) / "results"
    print(f"wrote {out}/results.md, results.csv, results.json, accuracy_vs_fraction.png", file=sys.stderr)
    print(res["summary"]["line"], file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m astrom3_hpc.results.collect SWEEP_DIR [--out DIR] [--std ...]`."""
    p = argparse.ArgumentParser(prog="astrom3 collect", description=DESCRIPTION)
    _add_args(p)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
