"""Long-format light-curve tables (one row per epoch; ZTF VSX, Stripe 82): grouped by object and band with numpy,
and the base of the light-curve-only sources built on one such table."""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from astrom3_hpc.core.constants import CLASS_NAMES

from ..text_files import open_text
from .common import ERR_SENTINEL, MAG_SENTINEL, NotANumber, cell_numbers, mag_to_flux_mjy
from .tables import TableError

ZTF_FILTERS: dict[int, str] = {1: "g", 2: "r", 3: "i"}


@dataclass
class LongLightCurves:
    """A long light-curve table grouped by object and band (numpy only).

    Rows are sorted by (object id, band) keeping file order inside a group. Rows with non-finite values (empty
    cells), a magnitude >= 90 or an error >= 9 (survey sentinels such as SDSS 99.999) or an error <= 0 are dropped
    at load (`n_dropped`), as `ingest lightcurves` drops them; `object_ids` still lists every object in the file.
    """

    path: str
    object_ids: np.ndarray  # (n_obj,) int64, sorted, every object in the file
    band_names: tuple[str, ...]  # band code -> name
    oid: np.ndarray  # (n_rows,) int64, sorted
    band: np.ndarray  # (n_rows,) int16 codes into band_names
    time: np.ndarray  # (n_rows,) float64 MJD
    mag: np.ndarray
    magerr: np.ndarray
    n_rows_file: int
    n_dropped: int

    def __post_init__(self) -> None:
        key = self.oid * 64 + self.band.astype(np.int64)
        if key.size:
            starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
            stops = np.r_[starts[1:], key.size]
        else:
            starts = stops = np.zeros(0, dtype=np.int64)
        self._groups: dict[tuple[int, int], tuple[int, int]] = {
            (int(self.oid[s]), int(self.band[s])): (int(s), int(e)) for s, e in zip(starts, stops)}

    def __len__(self) -> int:
        return int(self.object_ids.size)

    def _code(self, band: str | int) -> int:
        name = ZTF_FILTERS.get(band, str(band)) if isinstance(band, (int, np.integer)) else str(band)
        if name not in self.band_names:
            raise KeyError(f"band {band!r} not in {self.band_names} ({self.path})")
        return self.band_names.index(name)

    def bands(self, oid: int) -> tuple[str, ...]:
        return tuple(self.band_names[b] for (o, b) in self._groups if o == int(oid))

    def count(self, oid: int, band: str | int) -> int:
        s, e = self._groups.get((int(oid), self._code(band)), (0, 0))
        return e - s

    def get_mag(self, oid: int, band: str | int) -> np.ndarray:
        """(n, 3) [MJD, mag, magerr] of one object in one band (empty if none)."""
        s, e = self._groups.get((int(oid), self._code(band)), (0, 0))
        return np.stack([self.time[s:e], self.mag[s:e], self.magerr[s:e]], axis=1)

    def get(self, oid: int, band: str | int) -> np.ndarray:
        """(n, 3) float64 [MJD, flux mJy, flux_err mJy] of one object in one band (empty (0, 3) if none)."""
        m = self.get_mag(oid, band)
        flux, ferr = mag_to_flux_mjy(m[:, 1], m[:, 2])
        return np.stack([m[:, 0], flux, ferr], axis=1)


def _build_long(path: str, oid: np.ndarray, band: np.ndarray, band_names: tuple[str, ...], t: np.ndarray,
                mag: np.ndarray, err: np.ndarray) -> LongLightCurves:
    n_file = oid.size
    object_ids = np.unique(oid)
    ok = (np.isfinite(t) & np.isfinite(mag) & np.isfinite(err) & (np.abs(mag) < MAG_SENTINEL) & (err < ERR_SENTINEL)
          & (err > 0))
    oid, band, t, mag, err = oid[ok], band[ok], t[ok], mag[ok], err[ok]
    order = np.lexsort((np.arange(oid.size), band, oid))
    return LongLightCurves(path=path, object_ids=object_ids.astype(np.int64), band_names=band_names,
                           oid=oid[order].astype(np.int64), band=band[order].astype(np.int16), time=t[order],
                           mag=mag[order], magerr=err[order], n_rows_file=int(n_file), n_dropped=int(n_file - ok.sum()))


def read_numeric_csv(path: str, columns: list[str]) -> np.ndarray:
    """An all-numeric CSV whose header starts with `columns` -> (n, len(columns)) float64; empty cells are NaN.
    A short row or a cell that is not a number is an error naming its line, never a row silently left out."""
    ncols = len(columns)
    try:
        with open_text(path) as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.loadtxt(fh, delimiter=",", skiprows=1, usecols=range(ncols), dtype=np.float64, ndmin=2)
        return arr
    except ValueError:
        pass  # an empty cell or a bad one: the row-by-row reader below tells which
    rows = []
    with open_text(path) as fh:
        rd = csv.reader(fh)
        next(rd, None)
        for r in rd:
            if not r:
                continue
            if len(r) < ncols:
                raise TableError(f"{path}:{rd.line_num}: {len(r)} cells, expected at least {ncols} ({columns})")
            try:
                rows.append(cell_numbers(r[:ncols]))
            except NotANumber as e:
                raise TableError(f"{path}:{rd.line_num}: column {columns[e.index]!r} holds {e.cell!r}, not a number"
                                 ) from None
    return np.asarray(rows, dtype=np.float64).reshape(-1, ncols)


def _band_name(band: str | int, allowed: Iterable[str]) -> str:
    name = ZTF_FILTERS.get(band, str(band)) if isinstance(band, (int, np.integer)) else str(band)
    if name not in tuple(allowed):
        raise ValueError(f"band {band!r} not one of {tuple(allowed)}")
    return name


class _LongTableSource:
    """A light-curve-only source over one long-format table, parsed lazily once per process (never pickled to
    workers or ranks: each re-reads it on first use)."""

    _table: "LongLightCurves | None" = None
    lc_path: Path

    @staticmethod
    def _read_table(path) -> "LongLightCurves":
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        st = self.__dict__.copy()
        st["_table"] = None
        return st

    @property
    def table(self) -> "LongLightCurves":
        if self._table is None:
            self._table = self._read_table(self.lc_path)
        return self._table

    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES
