"""argparse types shared by the commands' options."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A count option (--batch-size, --threads, ...): an integer >= 1. argparse names the option in its error
    (`argument --batch-size: must be an integer >= 1, got 0`) and exits 2; 0 divided by zero in the loader, and a
    negative batch size read nothing and reported success."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value
