"""argparse types shared by the commands' options (the CLI's and the demo app's own parser)."""

from __future__ import annotations

import argparse


def _at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    """A count option (--batch-size, --threads, ...): an integer >= 1. argparse names the option in its error
    (`argument --batch-size: must be an integer >= 1, got 0`) and exits 2; 0 divided by zero in the loader, and a
    negative batch size read nothing and reported success."""
    return _at_least(text, 1)


def non_negative_int(text: str) -> int:
    """A count where 0 means none or no limit (--list, --max-points, --gpus-per-node): an integer >= 0."""
    return _at_least(text, 0)
