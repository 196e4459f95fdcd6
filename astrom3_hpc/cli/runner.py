"""Run a parsed subcommand: shared by `astrom3` (cli/__init__.py) and `astrom3-science` (cli/science.py)."""

from __future__ import annotations

import argparse
import json
import sys

from ..train.command import run_command


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None = None,
             expected_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Parse, set up logging and run the chosen subcommand. Bad input (a config key, a store, a file, an object)
    ends with one clear line naming it and exit code 2, not a traceback (train.command.run_command)."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args.command, lambda: args.func(args), verbose=getattr(args, "verbose", False),
                       extra_expected=expected_errors, fail_fast=getattr(args, "fail_fast", False))


def print_json(obj, indent: int | None = 2, label: str | None = None) -> None:
    """A command's JSON on stdout, class names as written (δ Sct, not \\u03b4 Sct) where stdout can hold them: a
    job whose locale is not UTF-8 still gets escapes rather than a UnicodeEncodeError after the work is done."""
    utf = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "") == "utf8"
    text = json.dumps(obj, indent=indent, default=str, ensure_ascii=not utf)
    print(text if label is None else f"{label}: {text}")
