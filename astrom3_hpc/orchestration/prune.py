"""`astrom3 sweep prune`: the checkpoints of a sweep's finished runs, deleted to free the space.

Checkpoints are most of a sweep's bytes (measured: 86 % of a paper sweep, ~19 GB of ~23 GB: every run keeps its
last two DeepSpeed states with their Adam moments) and serve a finished run only to extend it (more epochs) or to
rewrite a damaged metrics.json. What `sweep status`, `collect`, `--init`, `predict` and the science tools read,
best_model.pt and the run's records, stays. Only runs the sweep counts as done are pruned, and a run directory a
live job holds (its lock) is passed over.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from ..core.locks import LockHeld, held
from .sweep import Sweep

CHECKPOINTS = "checkpoints"
_PRUNING = ".checkpoints.pruning-"  # what an interrupted prune leaves: removed by the next one


def _footprint(root: Path) -> tuple[int, int]:
    """(bytes, files) that deleting `root` frees: a file hard-linked elsewhere (best_model.pt's second name) frees
    nothing."""
    size = files = 0
    for dirpath, dirnames, filenames in os.walk(root):
        files += len(dirnames)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            files += 1
            if st.st_nlink == 1:
                size += st.st_size
    return size, files


def prune_sweep(root: str | Path, dry_run: bool = False) -> dict[str, Any]:
    """Delete `checkpoints/` of every finished task and pretraining of the sweep at `root`; what was freed."""
    from ..train.rundir import LOCK_NAME

    sw = Sweep.load(root)
    runs = [sw.pretrain_dir(s) for s in sw.seeds if sw.pretrain_done(s)] + [sw.run_dir(t) for t in sw.tasks
                                                                            if sw.done(t)]
    freed = files = 0
    pruned: list[str] = []
    busy: list[str] = []
    for run in runs:
        doomed = [d for d in (run / CHECKPOINTS,) if d.is_dir()] + sorted(run.glob(_PRUNING + "*"))
        if not doomed:
            continue
        try:
            with held(run / LOCK_NAME):  # a job writing the run now (one extending it) keeps its checkpoints
                for d in doomed:
                    size, n = _footprint(d)
                    freed, files = freed + size, files + n
                    if not dry_run:
                        # Renamed first: a prune stopped halfway leaves no half checkpoint a rerun would resume.
                        gone = d if d.name.startswith(_PRUNING) else d.rename(run / f"{_PRUNING}{uuid.uuid4().hex[:8]}")
                        shutil.rmtree(gone)
        except LockHeld:
            busy.append(str(run))
            continue
        pruned.append(str(run))
    return {"sweep": str(sw.root), "dry_run": dry_run, "runs_pruned": len(pruned), "bytes_freed": freed,
            "files_freed": files, "busy": busy, "finished_runs": len(runs), "runs": pruned}
