"""Exit codes of the job suite and how a command turns an expected error into one.

The codes are a contract with the job scripts (slurm/*.sh requeue on EXIT_PREEMPTED) and with Submitit's job
functions, so the CLI and every library entry point that runs a job (a sweep task, a Submitit job) report them
the same way: bad input is one line naming the object and EXIT_BAD_INPUT, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpoint written, requeue me (= astrom3_hpc.train.preempt.EXIT_PREEMPTED)
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a reader that went away


def setup_logging(verbose: bool = False) -> None:
    """The suite's log format on stderr (first call wins, as logging.basicConfig does)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)


def run_reporting_errors(command: str, fn: Callable[[], int | None],
                         expected: tuple[type[BaseException], ...]) -> int:
    """``fn()``'s exit code; an ``expected`` error prints ``astrom3 COMMAND: error: ...`` and gives
    EXIT_BAD_INPUT; a closed stdout (``astrom3 info store | head``) gives EXIT_BROKEN_PIPE quietly."""
    try:
        return int(fn() or 0)
    except expected as e:
        print(f"astrom3 {command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # Stop quietly, as other Unix tools do, and keep the interpreter's final flush of stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
