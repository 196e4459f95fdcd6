"""A training job as `astrom3 pretrain|finetune` runs it, for every caller: the CLI, a sweep task, a Submitit job.

One place builds the RunConfig from a config file, `--set` overrides and the command's own flags, so a sweep task
or a Submitit job trains exactly what the command line it stands for would (they run it through
train.command.run_command, as the CLI does).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

if TYPE_CHECKING:
    from ..core.config import RunConfig

# finetune's own flags and the config key each overrides; applied after --set, so a flag wins over a --set.
FINETUNE_FLAGS = (("mode", "finetune.mode"), ("subset", "data.subset"), ("seed", "data.seed"),
                  ("init", "finetune.init"), ("pretrain_seed", "finetune.pretrain_seed"))


def finetune_overrides(*, mode: str | None = None, subset: str | None = None, seed: int | None = None,
                       init: str | None = None, pretrain_seed: int | None = None,
                       allow_unknown_seed: bool = False) -> list[str]:
    """`astrom3 finetune`'s flags as KEY=VALUE overrides (None: not given, the config decides)."""
    from ..core.config import path_override

    if init is not None and init != "scratch":
        # Recorded in the run's identity: a rerun of the same job from another directory must name the same run.
        init = str(Path(init).resolve())
    given = dict(mode=mode, subset=subset, seed=seed, init=init, pretrain_seed=pretrain_seed)
    # init is a run directory: any path, which YAML must not read.
    out = [path_override(key, given[flag]) if flag == "init" else f"{key}={given[flag]}"
           for flag, key in FINETUNE_FLAGS if given[flag] is not None]
    if allow_unknown_seed:
        out.append("finetune.allow_unknown_seed=true")
    return out


def finetune_config(config: str | None, sets: Sequence[str] = (), **flags) -> RunConfig:
    """The RunConfig of ``astrom3 finetune --config CONFIG --set SETS --FLAG ...`` (the config's `cells:` entry
    for the resolved mode and subset included, see core.config)."""
    from ..core.config import load_config

    return load_config(config, list(sets) + finetune_overrides(**flags))


def pretrain_config(config: str | None, sets: Sequence[str] = ()) -> RunConfig:
    """The RunConfig of ``astrom3 pretrain --config CONFIG --set SETS``."""
    from ..core.config import check_pretraining, load_config

    return check_pretraining(load_config(config, list(sets)))


def run_finetune(cfg: RunConfig, run_dir: str | Path, *, stop_after_steps: int | None = None,
                 resume: bool = True) -> int:
    """Fine-tune into ``run_dir``; 0 done, EXIT_PREEMPTED after a preemption checkpoint."""
    from .finetune import Finetuner

    with collected():
        return Finetuner(cfg, run_dir, stop_after_steps=stop_after_steps, resume=resume).run_job()


def run_pretrain(cfg: RunConfig, run_dir: str | Path, *, stop_after_steps: int | None = None,
                 resume: bool = True) -> int:
    """Pretrain into ``run_dir``; 0 done, EXIT_PREEMPTED after a preemption checkpoint."""
    from .pretrain import Pretrainer

    with collected():
        return Pretrainer(cfg, run_dir, stop_after_steps=stop_after_steps, resume=resume).run_job()


@contextmanager
def collected() -> Iterator[None]:
    """A job's memory, threads and descriptors freed when it ends, not at Python's next full collection: DeepSpeed's
    hooks hold its engine in reference cycles, so jobs run one after another in a process (the debug executor's
    sweep, a notebook) each kept its engine, model, optimizer state and gloo threads (16 tasks: 15 -> 56 threads,
    78 -> 223 descriptors). Collected outside the trainer, whose frame still held it."""
    try:
        yield
    finally:
        gc.collect()
