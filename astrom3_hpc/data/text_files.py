"""Opening the user's text tables: UTF-8 with or without a byte-order mark, gzip by suffix, and a file that is
not UTF-8 reported by its first bad line rather than by the codec's byte offset in some buffer.

Spreadsheet programs save "CSV UTF-8" with a byte-order mark, which plain "utf-8" would keep in the first header
cell (a column named '\\ufeffid' that matches nothing); older tools save Latin-1 or Windows-1252, which is no
guess to make silently: a wrong guess changes class names and ids.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .raw import InputFileError


class TextEncodingError(InputFileError):
    """A text table is not UTF-8; the message names the file, line and byte."""


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    p = str(path)
    if p.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8-sig", newline="")
    return open(p, "r", encoding="utf-8-sig", newline="")


def first_bad_line(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """(line, column, byte value), 1-based, of the first byte that is not UTF-8; None if the file decodes."""
    p = str(path)
    with (gzip.open(p, "rb") if p.endswith(".gz") else open(p, "rb")) as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return line_no, e.start + 1, raw[e.start]
    return None


@contextmanager
def decoding_errors_named(path: str | os.PathLike) -> Iterator[None]:
    """Turn a UnicodeDecodeError raised while the block reads `path` into a TextEncodingError naming its line.
    The file is scanned only then; if it decodes after all, the error came from elsewhere and goes on as it was."""
    try:
        yield
    except UnicodeDecodeError:
        where = first_bad_line(path)
        if where is None:
            raise
        line, col, byte = where
        raise TextEncodingError(f"{path}:{line}: not UTF-8 text (byte 0x{byte:02x} at column {col}); save the "
                                f"file as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
