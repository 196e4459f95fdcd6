"""A training job as `astrom3 pretrain|finetune` runs it, for every caller: the CLI, a sweep task, a Submitit job.

One place builds the RunConfig from a config file, `--set` overrides and the command's own flags, and one place
decides which errors are bad input (exit 2, one line) rather than a bug (a traceback), so a sweep task or a
Submitit job behaves exactly like the command line it stands for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from ..core.errors import run_reporting_errors, setup_logging

if TYPE_CHECKING:
    from ..core.config import RunConfig

# finetune's own flags and the config key each overrides; applied after --set, so a flag wins over a --set.
FINETUNE_FLAGS = (("mode", "finetune.mode"), ("subset", "data.subset"), ("seed", "data.seed"),
                  ("init", "finetune.init"), ("pretrain_seed", "finetune.pretrain_seed"))


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input (a config key, a store, a file, an object), not a bug. Imported when asked:
    the data layer pulls in zarr, which `astrom3 --help` should not wait for."""
    from ..core.config import ConfigError
    from ..data.ingest import IngestError
    from ..data.raw import BadInputError
    from ..data.split_files import SplitFileError
    from ..data.store import StoreError

    # An output the user cannot write or that is not a directory (a read-only or a colleague's directory, a file
    # where a directory goes): bad input like a missing one; each names its path.
    return (ConfigError, StoreError, BadInputError, IngestError, SplitFileError, FileExistsError, FileNotFoundError,
            PermissionError, NotADirectoryError, IsADirectoryError, ValueError)


def run_command(command: str, fn: Callable[[], int | None], *, verbose: bool = False,
                extra_expected: tuple[type[BaseException], ...] = (), fail_fast: bool = False) -> int:
    """``fn()`` as the command ``astrom3 COMMAND`` runs it: the suite's logging, expected errors -> their exit
    code. ``fail_fast`` (training commands): in a multi-process job a failing rank prints its error once and ends
    the whole job at once (distributed.abort), instead of leaving its peers in a collective until the timeout."""
    from ..distributed.abort import rank_prefix

    setup_logging(verbose and rank_prefix() in ("", "rank 0: "))  # -v: rank 0's, as the docs say
    on_error = _fail_job if fail_fast else None
    return run_reporting_errors(command, lambda: _stopped_by_job_signals(command, fn),
                                lambda: expected_errors() + tuple(extra_expected), on_error)


def _stopped_by_job_signals(command: str, fn: Callable[[], int | None]) -> int | None:
    """``fn()`` with SLURM's USR1 and SIGTERM turned into exit 75 (requeue) from the command's start to its end.
    Training installs its own handler (a checkpoint first) and the store builder its own (SIGTERM: 143) over this
    one; before it, a signal during the imports, DeepSpeed's set-up or the last writes killed the job, and SLURM
    failed the task instead of requeueing it. A Submitit job is left to Submitit's handlers (its requeue)."""
    import os
    import signal

    from ..core.signals import stopped_by

    if os.environ.get("SUBMITIT_EXECUTOR"):
        return fn()
    with stopped_by(command, signals=(signal.SIGUSR1, signal.SIGTERM)):
        return fn()


def _fail_job(command: str, e: BaseException, code: int, known: bool) -> None:
    from ..distributed.abort import fail_job

    fail_job(f"astrom3 {command}", e, code, known)


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

    return Finetuner(cfg, run_dir, stop_after_steps=stop_after_steps, resume=resume).run_job()


def run_pretrain(cfg: RunConfig, run_dir: str | Path, *, stop_after_steps: int | None = None,
                 resume: bool = True) -> int:
    """Pretrain into ``run_dir``; 0 done, EXIT_PREEMPTED after a preemption checkpoint."""
    from .pretrain import Pretrainer

    return Pretrainer(cfg, run_dir, stop_after_steps=stop_after_steps, resume=resume).run_job()
