"""Reading a sweep (or any directory of run directories): every task's metrics.json, its run files and, for a
failed or missing task, its log files and the error line they end with.

A task counts only if its metrics.json parses, has the expected keys and describes that task; a run directory
without one is "failed" (incomplete), a task without a run directory is "missing".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..orchestration.sweep import MANIFEST, MODES, Sweep, cell_hparams
# The one metrics.json check, shared with the sweep's bookkeeping.
from ..train import metrics_file
from ..train.metrics_file import BadMetrics, read_metrics
from .logs import LogIndex, _last_line, recorded_slurm_ids
from .paper import SUBSET_ORDER, grid_order

finite_number = metrics_file.finite_number  # stats imports it from here


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
            rec.metrics = sw.result(task)  # what `sweep status` and --resume-missing count as done
        except BadMetrics as e:
            rec.status, rec.reason = "failed", str(e)
    if rec.status != "complete":
        _attach_logs(rec, logs.for_task(task.index, recorded_slurm_ids(d)), d, sw.root)
    return rec


def _pretrain_record(root: Path, d: Path, seed: int | None, logs: LogIndex | None,
                     sw: Sweep | None = None) -> RunRecord:
    """`sw`: the sweep whose pretraining `d` is (of seed `seed`), which it counts for only with its settings."""
    rec = RunRecord(status="complete", run_dir=_rel(d, root), seed=seed, kind="pretrain")
    mpath = d / "metrics.json"
    if not d.exists():
        rec.status, rec.reason = "missing", "pretraining run directory does not exist"
    elif not mpath.exists():
        rec.status, rec.reason = "failed", "no metrics.json (incomplete: failed, killed or still running)"
    else:
        try:
            m = read_metrics(mpath, kind="pretrain")
            other = sw.pretrain_other_settings(seed) if sw is not None and seed is not None else []
            if other:
                raise BadMetrics("a pretraining of other settings than the sweep's manifest (" + "; ".join(other)
                                 + "): its seed's CLIP tasks do not count")
            rec.seed = m.get("seed", seed)
            emb = m.get("embedding_eval")
            if not isinstance(emb, dict) and (d / "embedding_eval.json").exists():
                try:
                    emb = json.loads((d / "embedding_eval.json").read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError):
                    emb = None
            rec.metrics = {**m, "embedding_eval": emb if isinstance(emb, dict) else None}
        except BadMetrics as e:
            rec.status, rec.reason = "failed", str(e)
    if rec.status != "complete":
        found = [] if logs is None else (logs.for_pretrain(seed) if seed is not None else []) + \
            [p for p in logs.for_task(None, recorded_slurm_ids(d))]
        _attach_logs(rec, sorted(set(found), key=lambda p: (p.stat().st_mtime, p.name)), d, root)
    return rec


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
    pretrain = [_pretrain_record(sw.root, sw.pretrain_dir(s), s, logs, sw) for s in sorted(pre_seeds)]
    return Collection(sw.root, True, runs, pretrain, warn, sw.seeds,
                      grid_order((t.mode, t.subset) for t in sw.tasks))


def _parse_dir_name(name: str) -> dict[str, Any]:
    m = re.fullmatch(r"(?P<mode>[a-z]+)-(?P<subset>sub\d+|full)-s(?P<seed>-?\d+)-(?P<init>clip|scratch|baseline)", name)
    if not m:
        return {}
    return {"mode": m["mode"], "subset": m["subset"], "seed": int(m["seed"]), "init": m["init"]}


def _describe_incomplete(d: Path) -> tuple[str, dict[str, Any]]:
    """(kind, {mode, subset, seed, init}) of a run dir without metrics.json, from run.json / config.yaml / name."""
    kind = _run_json(d).get("kind")
    info = _parse_dir_name(d.name)
    try:
        import yaml

        cfg = yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8")) or {}
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
        # An output folder equal to `root` holds the results files only: excluding it would exclude every run.
        return exclude is not None and exclude != root and (p == exclude or exclude in p.parents)

    run_dirs = sorted({p.parent for pat in ("metrics.json", "config.yaml") for p in root.rglob(pat) if not skip(p)})
    run_dirs = [d for d in run_dirs if d.name != "checkpoints"]
    logs = LogIndex(root)
    for d in run_dirs:
        mpath = d / "metrics.json"
        if mpath.exists():
            try:
                kind = json.loads(mpath.read_text(encoding="utf-8")).get("kind")
            except (OSError, json.JSONDecodeError, AttributeError):
                kind = None
            if kind == "pretrain":
                pretrain.append(_pretrain_record(root, d, None, logs))
                continue
            if kind == "predict":  # a run's classes for another store (`astrom3 predict`), not a run
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
                _attach_logs(rec, logs.for_task(None, recorded_slurm_ids(d)), d, root)
            runs.append(rec)
        else:
            kind, info = _describe_incomplete(d)
            if kind == "pretrain":
                pretrain.append(_pretrain_record(root, d, info.get("seed"), logs))
                continue
            rec = RunRecord(status="failed", run_dir=_rel(d, root),
                            reason="no metrics.json (incomplete: failed, killed or still running)", **info)
            _attach_logs(rec, logs.for_task(None, recorded_slurm_ids(d)), d, root)
            runs.append(rec)
    seeds = sorted({r.seed for r in runs if isinstance(r.seed, int)})
    grid = grid_order((r.mode, r.subset) for r in runs if r.mode in MODES and r.subset in SUBSET_ORDER)
    return Collection(root, False, runs, pretrain, warn, seeds, grid)


def gather(root: str | Path, exclude: Path | None = None) -> Collection:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    return gather_sweep(root) if (root / MANIFEST).exists() else gather_dir(root, exclude)


def _run_json(run_dir: Path) -> dict[str, Any]:
    try:
        d = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def cell_table(runs: list[RunRecord], root: Path) -> list[dict[str, Any]]:
    """Which fine-tuning values each (mode, subset) cell ran with, read from every run's resolved config.yaml.
    One row per distinct set of values in a cell (with the paper's cells file, one for CLIP-init and one for
    scratch runs)."""
    import yaml

    rows: dict[tuple, dict[str, Any]] = {}
    for r in runs:
        d = Path(r.run_dir) if Path(r.run_dir).is_absolute() else root / r.run_dir
        p = d / "config.yaml"
        if r.kind != "finetune" or r.mode is None or r.subset is None or not p.exists():
            continue
        try:
            hp = cell_hparams(yaml.safe_load(p.read_text(encoding="utf-8")))
        except (KeyError, TypeError, IndexError, yaml.YAMLError):
            continue  # a config of another version: the run's own failure report covers it
        # config.yaml says `cells: null` (its values are in it); run.json names the file, where the run recorded
        # it. Rows are the values: a run from before the record is the same cell as one after it.
        cells = hp.pop("cells") or _run_json(d).get("cells_file")
        key = (r.mode, r.subset, json.dumps(hp, sort_keys=True))
        row = rows.setdefault(key, {"mode": r.mode, "subset": r.subset, **hp, "cells": set(), "inits": set(),
                                    "n_runs": 0})
        row["inits"].add(r.init)
        row["cells"] |= {cells} if cells else set()
        row["n_runs"] += 1
    order = {p: i for i, p in enumerate(grid_order({(m, s) for m, s, _ in rows}))}
    out = sorted(rows.values(), key=lambda x: order[(x["mode"], x["subset"])])
    for row in out:
        row["inits"] = sorted(row["inits"])
        row["cells"] = ", ".join(sorted(row["cells"])) or None
    return out
