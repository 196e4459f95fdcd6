"""A long points table (one row per epoch) grouped by object, for `ingest lightcurves` (lightcurves.py).

Every MPI rank of an ingest reads the whole points file (shipping the rows would cost more than parsing them), so
reading is the one part of ingest that does not shrink with more ranks. Each rank keeps (and converts to numbers)
only its own objects' rows, and rows are parsed in batches: ids and bands are looked up once per distinct text,
numbers converted by numpy a column at a time, the rows kept as one float array rather than Python lists
(benchmarks/points_table.py measures it against the row-by-row parser it replaced). A batch with a short row or a
cell that is not a number is parsed again row by row, which finds the first bad cell of each object and names its
line.
"""

from __future__ import annotations

import gc
import itertools
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from .tables import Table, TableError, column_text, is_parquet, open_table

BATCH_ROWS = 65_536


# An integer id: ASCII digits, optionally with a zero fraction ("123.0"). Python's int() and float() would also
# take "1_5" (as 15), "1e3" and non-ASCII digits, turning distinct names into one number or another object's id.
_INTEGER_ID = re.compile(r"([+-]?[0-9]+)(?:\.0*)?")


def norm_id(s: str) -> str:
    """The id's canonical text: "00123", "123.0" and "123" name one object; any other id is kept as written
    (stripped). Integers are parsed as integers, never through a float: a Gaia source_id has 19 digits and a
    float64 keeps 15-16, so neighbouring ids would merge into one object."""
    s = s.strip()
    m = _INTEGER_ID.fullmatch(s)
    return str(int(m.group(1))) if m else s


def is_integer_id(key: str) -> bool:
    """Whether a `norm_id` key is an integer (its canonical text is then plain ASCII digits)."""
    return _INTEGER_ID.fullmatch(key) is not None


@dataclass
class Points:
    """Rows of the wanted objects: `values` (time, value, err, band index) in file order within each object,
    `groups` {key: (start, stop)} into it, `bad` {key: the object's first unparsable cell}, `bands` the
    (stripped) band names of the store's objects' rows."""
    values: np.ndarray
    groups: dict[str, tuple[int, int]]
    bad: dict[str, str]
    bands: set[str]


def read_points(path: str, *, id_column: str, numeric_columns: tuple[str, str, str], band_column: str | None,
                keys: list[str], bands: tuple[str, ...] = (), only: tuple[int, int] | None = None,
                batch_rows: int = BATCH_ROWS) -> Points:
    """Rows of objects in `keys` (normalised ids), or with `only` = (lo, hi) of keys[lo:hi] alone (an MPI rank's
    objects), and, when `bands` is given, in those bands (band index = position in `bands`, else 0). Empty cells
    are NaN; a cell that is not a number marks its object in `bad`. `bands` of the result counts the rows of
    every object in `keys`, so each rank sees the same."""
    with open_table(path) as t, _no_cyclic_gc():
        parser = _Parser(t, id_column, numeric_columns, band_column, keys, bands, only or (0, len(keys)))
        if t.arrow is not None:
            parser.add_parquet(t.arrow, batch_rows)
        else:
            while batch := list(itertools.islice(t.rows, batch_rows)):
                parser.add(batch)
    codes, values = parser.result()
    starts = _runs(codes)
    if len(np.unique(codes[starts])) < len(starts):
        # Some object's rows are spread over the file: gather them (stable, so each stays in file order). A
        # table written object by object, the usual export, skips this copy.
        order = np.argsort(codes, kind="stable")
        codes, values = codes[order], values[order]
        starts = _runs(codes)
    stops = np.r_[starts[1:], len(codes)]
    groups = {keys[codes[s]]: (int(s), int(e)) for s, e in zip(starts, stops)}
    return Points(values, groups, parser.bad, parser.bands_seen)


def narrow_float_resolution(path: str, column: str) -> tuple[str, float, float] | None:
    """For a Parquet column of float32 or float16 numbers: (its type, the largest |value|, the spacing of that
    type there), the finest step its values can take; None for any other column or file. A float32 Julian Date
    (2.46e6) moves in steps of 0.25 d, which no text or float64 reading of the file can undo."""
    if not is_parquet(path):
        return None
    import pyarrow as pa

    with open_table(path) as t:
        field = t.arrow.schema_arrow.field(column)
        if not (pa.types.is_float32(field.type) or pa.types.is_float16(field.type)):
            return None
        top = None
        for rb in t.arrow.iter_batches(batch_size=1 << 20, columns=[column]):  # streamed: every rank reads it
            x = rb.column(0).to_numpy(zero_copy_only=False)
            x = np.abs(x[np.isfinite(x)])
            if len(x):
                top = x.max() if top is None else max(top, x.max())
    if top is None:
        return None
    return f"float{field.type.bit_width}", float(top), float(np.spacing(top))


def _runs(codes: np.ndarray) -> np.ndarray:
    """Where each run of equal codes starts."""
    return np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.zeros(0, np.int64)


def _lookup(col: Any, code_of: Callable[[str], int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A pyarrow column of ids or bands -> (code per row, index per row into the distinct values, their text)."""
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(col, null_encoding="encode")  # a null is one more distinct value: text ""
    texts = column_text(enc.dictionary)
    index = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return np.fromiter(map(code_of, texts), np.int64, len(texts))[index], index, texts


def _arrow_floats(col: Any, keep: np.ndarray) -> np.ndarray | None:
    import pyarrow as pa

    if pa.types.is_float64(col.type) or (pa.types.is_integer(col.type) and col.null_count == 0):
        x = col.to_numpy(zero_copy_only=False).astype(np.float64)  # float64 nulls come out as NaN
    else:
        x = _floats(column_text(col))
    return None if x is None else x[keep]


def _kept(col: tuple[str, ...], keep: np.ndarray) -> Sequence[str]:
    return col if keep.all() else list(itertools.compress(col, keep.tolist()))


def _floats(cells: Sequence[str]) -> np.ndarray | None:
    """Text cells as numbers, an empty cell as NaN; None if a cell is not a number (the row path then names it).
    numpy converts text with Python's float(): the same numbers, spaces, "nan" and errors as the row path."""
    try:
        return np.array(cells, np.float64)
    except ValueError:
        pass
    try:
        return np.array([c if c.strip() else "nan" for c in cells], np.float64)
    except ValueError:
        return None


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Millions of short-lived row lists would set off the cyclic collector over and over, each pass walking
    every live object (2.5x the reading time, measured); rows hold only strings, so there are no cycles to find."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _Parser:
    """Batches of (position, cells) -> object codes and float rows. Only rows of wanted objects and bands are
    parsed, so a bad cell in an object the store leaves out is no error."""

    def __init__(self, t: Table, id_column: str, numeric_columns: tuple[str, str, str], band_column: str | None,
                 keys: list[str], bands: tuple[str, ...], only: tuple[int, int]):
        def col(name: str) -> int:
            if name not in t.header:
                raise TableError(f"{t.path}: no column {name!r} (columns: {t.header})")
            return t.header.index(name)

        self.t = t
        self.k_id = col(id_column)
        self.numeric = tuple((col(n), n) for n in numeric_columns)
        self.k_band = col(band_column) if band_column else None
        self.width = 1 + max(self.k_id, self.k_band or 0, *(k for k, _ in self.numeric))
        self.key_index = {k: i for i, k in enumerate(keys)}
        self.lo, self.hi = only
        self.band_index = {b: i for i, b in enumerate(bands)}
        self.bad: dict[str, str] = {}
        self.bands_seen: set[str] = set()
        self._code: dict[str, int] = {}  # raw id text -> index in keys, -1 for an object the store leaves out
        self._band: dict[str, int] = {}  # raw band text -> band index, -1 for a band not asked for
        self._codes: list[np.ndarray] = []
        self._values: list[np.ndarray] = []

    def _code_of(self, raw: str) -> int:
        c = self._code.get(raw)
        if c is None:
            c = self._code[raw] = self.key_index.get(norm_id(raw), -1)
        return c

    def _band_of(self, raw: str) -> int:
        b = self._band.get(raw)
        if b is None:
            b = self._band[raw] = self.band_index.get(raw.strip(), -1) if self.band_index else 0
        return b

    def _codes_of(self, raw_ids: tuple[str, ...]) -> np.ndarray:
        for raw in set(raw_ids) - self._code.keys():
            self._code_of(raw)
        return np.fromiter(map(self._code.__getitem__, raw_ids), np.int64, len(raw_ids))

    def _bands_of(self, raw_bands: tuple[str, ...]) -> np.ndarray:
        for raw in set(raw_bands) - self._band.keys():
            self._band_of(raw)
        return np.fromiter(map(self._band.__getitem__, raw_bands), np.int64, len(raw_bands))

    def add(self, batch: list[tuple[int, list[str]]]) -> None:
        rows = [r for _, r in batch]
        if not (min(map(len, rows)) >= self.width and self._add_batch(rows)):
            self._add_rows(batch)

    def _add_batch(self, rows: list[list[str]]) -> bool:
        cols = list(zip(*rows))  # every row has the columns asked for (add() checked), so none is cut short
        codes = self._codes_of(cols[self.k_id])
        bands = np.zeros(len(rows), np.int64) if self.k_band is None else self._bands_of(cols[self.k_band])
        keep = (codes >= self.lo) & (codes < self.hi) & (bands >= 0)
        numbers = [_floats(_kept(cols[k], keep)) for k, _ in self.numeric]
        if any(x is None for x in numbers):
            return False
        if self.k_band is not None:
            self.bands_seen.update(b.strip() for b in set(_kept(cols[self.k_band], codes >= 0)))
        self._append(codes, bands, keep, numbers)
        return True

    def add_parquet(self, pf: Any, batch_rows: int) -> None:
        """Parquet read a column at a time: ids and bands through arrow's dictionary encoding (one lookup per
        distinct value), float64 and integer columns as they are stored. Other types go through the cells'
        text, as the row path reads them (a float32 0.02 is 0.02, not its float64 widening), so a Parquet
        table gives the rows its CSV export would."""
        wanted = sorted({self.k_id, *(k for k, _ in self.numeric), *([self.k_band] if self.k_band is not None
                                                                     else [])})
        names = [pf.schema_arrow.names[k] for k in wanted]
        pos = 0
        for rb in pf.iter_batches(batch_size=batch_rows, columns=names):
            col = {k: rb.column(j) for j, k in enumerate(wanted)}
            codes, _, _ = _lookup(col[self.k_id], self._code_of)
            bands = np.zeros(len(codes), np.int64)
            if self.k_band is not None:
                bands, band_index, band_texts = _lookup(col[self.k_band], self._band_of)
                self.bands_seen.update(band_texts[i].strip() for i in np.unique(band_index[codes >= 0]))
            keep = (codes >= self.lo) & (codes < self.hi) & (bands >= 0)
            numbers = [_arrow_floats(col[k], keep) for k, _ in self.numeric]
            if any(x is None for x in numbers):  # a text column with a cell that is not a number
                texts = {k: column_text(c) for k, c in col.items()}
                rows = [[""] * self.width for _ in range(len(codes))]
                for k, cells in texts.items():
                    for r, cell in zip(rows, cells):
                        r[k] = cell
                self._add_rows([(pos + 1 + i, r) for i, r in enumerate(rows)], count_bands=False)
            else:
                self._append(codes, bands, keep, numbers)
            pos += len(codes)

    def _append(self, codes: np.ndarray, bands: np.ndarray, keep: np.ndarray, numbers: list[np.ndarray]) -> None:
        self._codes.append(codes[keep])
        self._values.append(np.stack([*numbers, bands[keep].astype(np.float64)], axis=1))

    def _add_rows(self, batch: list[tuple[int, list[str]]], count_bands: bool = True) -> None:
        codes, values = [], []
        for pos, r in batch:
            # A short row's missing cells are empty: no id is no wanted object, a missing number is NaN.
            code = self._code_of(r[self.k_id] if self.k_id < len(r) else "")
            band, raw_band = 0, r[self.k_band] if self.k_band is not None and self.k_band < len(r) else ""
            if self.k_band is not None:
                band = self._band_of(raw_band)
                if code >= 0 and count_bands:
                    self.bands_seen.add(raw_band.strip())
            if not (self.lo <= code < self.hi and band >= 0):
                continue
            row = []
            for k, name in self.numeric:
                cell = r[k].strip() if k < len(r) else ""
                try:
                    row.append(float(cell) if cell else math.nan)
                except ValueError:
                    why = f"{self.t.row_name(pos)}: column {name!r} holds {cell!r}, not a number"
                    self.bad.setdefault(norm_id(r[self.k_id]), why)  # the object's first bad cell
                    break
            else:
                codes.append(code)
                values.append((*row, float(band)))
        self._codes.append(np.asarray(codes, np.int64))
        self._values.append(np.asarray(values, np.float64).reshape(-1, 4))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """All rows parsed so far, as one array each; the batches are let go (the rows are large)."""
        codes = np.concatenate(self._codes) if self._codes else np.zeros(0, np.int64)
        values = np.concatenate(self._values) if self._values else np.zeros((0, 4))
        self._codes, self._values = [], []
        return codes, values
