"""The user's tables as rows of text cells: CSV, gzip CSV (``.gz``) or Parquet (``.parquet``/``.pq``).

A text table is UTF-8 (a byte-order mark is allowed) and separated by commas, tabs or semicolons, whichever the
header line holds most often (ties in that order of preference): TSV is what VizieR and many survey archives hand
out. A cell may be quoted, but may not hold a line break: that is how an unbalanced quote shows.

Parquet needs pyarrow, a 55 MB wheel, so it is the optional ``parquet`` extra (``pip install
'astrom3-hpc[parquet]'``) rather than a dependency: most surveys hand out CSV. Parquet cells are turned into the
text a CSV would hold (each float as the shortest decimal of its own precision; nulls become empty cells), so one set
of parsing and checks serves both formats and their errors read alike (the points reader, points_table.py, takes
a Parquet table's float64 and integer columns as they are stored: the same numbers, without the text). Rows come
with their position, "line N" in a text file (the header is line 1; blank lines are skipped but counted) and
"row N" (1-based) in Parquet.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..raw import InputFileError
from ..text_files import decoding_errors_named, open_text

PARQUET_SUFFIXES = (".parquet", ".pq")
_BATCH_ROWS = 65_536


class TableError(InputFileError):
    """A whole input file is unusable; the message names the file and the column or id."""


def is_parquet(path: str) -> bool:
    return str(path).lower().endswith(PARQUET_SUFFIXES)


@dataclass
class Table:
    path: str
    header: list[str]
    rows: Iterator[tuple[int, list[str]]]  # (position, cells); empty rows are skipped
    parquet: bool
    arrow: Any = None  # the pyarrow ParquetFile of a Parquet table, for readers that take whole columns

    def row_name(self, pos: int) -> str:
        return f"row {pos}" if self.parquet else f"line {pos}"

    def at(self, pos: int) -> str:
        """The row as a user finds it: `file:line` for text, `file row N` for Parquet."""
        return f"{self.path} row {pos}" if self.parquet else f"{self.path}:{pos}"


def _pyarrow_parquet(path: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise TableError(f"{path}: reading Parquet needs pyarrow: pip install 'astrom3-hpc[parquet]' "
                               f"(or convert the table to CSV)") from None
    return pq


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return repr(v) if isinstance(v, float) else str(v)


def column_text(col: Any) -> list[str]:
    """A pyarrow array's cells as the text a CSV export would hold."""
    import pyarrow as pa

    if pa.types.is_float32(col.type) or pa.types.is_float16(col.type):
        # The shortest decimal of the stored precision, what a CSV export would print (0.02, not the float64
        # widening 0.019999999552965164).
        null = col.is_null().to_numpy(zero_copy_only=False)
        vals = col.to_numpy(zero_copy_only=False)
        return ["" if n else str(v) for v, n in zip(vals, null)]
    return [_text(v) for v in col.to_pylist()]


def _parquet_rows(pf: Any) -> Iterator[tuple[int, list[str]]]:
    pos = 0
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS):
        cols = [column_text(batch.column(j)) for j in range(batch.num_columns)]
        for row in zip(*cols):
            pos += 1
            yield pos, list(row)


def _csv_rows(rd: Any, path: str, header: list[str]) -> Iterator[tuple[int, list[str]]]:
    n, end = len(header), rd.line_num
    while True:
        start = end + 1
        try:
            r = next(rd, None)
        except csv.Error as e:  # a quoted cell past csv's field limit: the same unbalanced quote, many lines on
            raise TableError(f"{path}:{start}: {e}: an unbalanced quote (\") there?") from None
        if r is None:
            return
        end = rd.line_num
        if end > start and any("\n" in c or "\r" in c for c in r):
            # A quote opened and never closed ("RRAB) takes every line up to the next quote into one cell: the
            # objects there vanish into a label or id without a word. Survey tables hold no line breaks in cells.
            raise TableError(f"{path}:{start}: a quoted cell runs on to line {end}: an unbalanced quote (\") at "
                             f"line {start}? (cells holding line breaks are not read)")
        # A cell with an unquoted separator in it ("V1 Her, in M13") shifts every cell after it: the label column
        # then reads the next cell's text. Empty cells past the header (a trailing separator) are harmless.
        if len(r) > n and any(c.strip() for c in r[n:]):
            raise TableError(f"{path}:{end}: {len(r)} cells, but the header has {n}: a cell holding the "
                             f"separator must be quoted")
        if r:
            yield end, r


@contextmanager
def open_table(path: str | Path) -> Iterator[Table]:
    """The table's header (stripped names) and an iterator over its non-empty data rows with their positions."""
    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(path)
    if is_parquet(path):
        pq = _pyarrow_parquet(path)
        try:
            # Streamed, not pre-buffered: pre-buffering holds a whole row group's column chunks (a million rows
            # by default) in memory at once, which every MPI rank of an ingest pays (benchmarks/points_table.py).
            pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
        except Exception as e:  # pyarrow raises ArrowInvalid/OSError for a file that is not Parquet
            raise TableError(f"{path}: not a readable Parquet file ({e})") from None
        try:
            yield Table(path, [n.strip() for n in pf.schema_arrow.names], _parquet_rows(pf), parquet=True, arrow=pf)
        finally:
            pf.close()
        return
    with open_text(path) as fh, decoding_errors_named(path):
        first = fh.readline()
        rd = csv.reader(itertools.chain([first], fh), delimiter=_delimiter(first))
        header = [h.strip() for h in next(rd, [])]
        yield Table(path, header, _csv_rows(rd, path, header), parquet=False)


def _delimiter(header_line: str) -> str:
    """The separator the header line holds most often (ties: comma, tab, semicolon): a TSV header may hold a
    comma inside a column name ("notes, free")."""
    counts = {d: header_line.count(d) for d in (",", "\t", ";")}
    best = max(counts.values())
    return next(d for d, c in counts.items() if c == best) if best else ","


def read_header(path: str | Path) -> list[str]:
    with open_table(path) as t:
        return t.header
