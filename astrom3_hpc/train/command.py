"""How every `astrom3` command runs, whoever starts it (the CLI, a sweep task, a Submitit job): the suite's
logging, the errors that mean bad input (exit 2, one line) rather than a bug (a traceback), the exit codes errors
carry, and SLURM's job signals turned into a requeue, so a task behaves exactly like the command line it stands for.
"""

from __future__ import annotations

from typing import Callable

from ..core.errors import run_reporting_errors, setup_logging


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
