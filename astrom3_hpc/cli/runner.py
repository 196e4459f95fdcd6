"""Run a parsed subcommand: shared by `astrom3` (cli/__init__.py) and `astrom3-science` (cli/science.py)."""

from __future__ import annotations

import argparse

from ..train.jobs import run_command


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None = None,
             expected_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Parse, set up logging and run the chosen subcommand. Bad input (a config key, a store, a file, an object)
    ends with one clear line naming it and exit code 2, not a traceback (train.jobs.run_command)."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args.command, lambda: args.func(args), verbose=getattr(args, "verbose", False),
                       extra_expected=expected_errors, fail_fast=getattr(args, "fail_fast", False))
