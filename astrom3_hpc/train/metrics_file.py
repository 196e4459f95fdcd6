"""A finished run's metrics.json as everyone who counts results reads it: the collector (results.read) and a
sweep's bookkeeping (orchestration.sweep: `sweep status`, `--resume-missing`, the array task).

One check for both: a truncated metrics.json that the collector reported failed once counted as done for the
sweep, so no command ever reran its task.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..core.constants import MODES, SUBSET_FACTORS

# Every init a result may carry: fine-tuned from a pretraining or from scratch, the classical baseline
# (train/baseline.py) and an averaged ensemble of runs (train/ensemble.py).
RUN_INITS = ("clip", "scratch", "baseline", "ensemble")
_REPORT_KEYS = ("n", "accuracy", "macro_f1")


class BadMetrics(ValueError):
    """A metrics.json that cannot be counted as a result; the message says why."""


def finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_report(rep: Any, name: str) -> None:
    if not isinstance(rep, dict):
        raise BadMetrics(f"'{name}' is not a report")
    for k in _REPORT_KEYS:
        if k not in rep:
            raise BadMetrics(f"'{name}' has no '{k}'")
    if not finite_number(rep["accuracy"]) or not 0.0 <= rep["accuracy"] <= 1.0:
        raise BadMetrics(f"'{name}.accuracy' is {rep['accuracy']!r}, not a fraction")
    if not isinstance(rep["n"], int) or rep["n"] <= 0:
        raise BadMetrics(f"'{name}.n' is {rep['n']!r}")
    if not (finite_number(rep["macro_f1"]) or rep["macro_f1"] is None):
        raise BadMetrics(f"'{name}.macro_f1' is {rep['macro_f1']!r}")


def read_metrics(path: Path, kind: str = "finetune") -> dict[str, Any]:
    """A run's metrics.json, or BadMetrics saying why it cannot be trusted."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
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
        if m["subset"] not in SUBSET_FACTORS:
            raise BadMetrics(f"{path.name}: unknown subset {m['subset']!r}")
        if m["init"] not in RUN_INITS:
            raise BadMetrics(f"{path.name}: init is {m['init']!r}, not one of {RUN_INITS}")
        if not isinstance(m["seed"], int):
            raise BadMetrics(f"{path.name}: seed is {m['seed']!r}")
        _check_report(m["test"], "test")
        _check_report(m["test_full"], "test_full")
    return m
