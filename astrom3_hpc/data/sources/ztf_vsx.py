"""The shared ZTF DR3 light curves of VSX variables: the long-table reader and the light-curve-only source."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from astrom3_hpc.core.constants import AUX_COLUMNS, CLASS_NAMES, META_COLUMNS
from astrom3_hpc.data.raw import BadInputError, RawObject

from ..text_files import open_text
from .common import _empty_spec, _label_of, _nan, _to_float
from .long_table import ZTF_FILTERS, LongLightCurves, _band_name, _build_long, _LongTableSource, read_numeric_csv
from .tables import TableError


def read_ztf_vsx_long(path: str | os.PathLike) -> LongLightCurves:
    """The ZTF VSX long table (``vsx_oid, filter, mjd, mag, magerr``; filter 1=g, 2=r, 3=i), read once."""
    p = str(path)
    if not os.path.exists(p):
        raise FileNotFoundError(p)
    with open_text(p) as fh:
        header = [h.strip() for h in fh.readline().split(",")]
    want = ["vsx_oid", "filter", "mjd", "mag", "magerr"]
    if header[:5] != want:
        raise ValueError(f"{p}: expected columns {want}, got {header}")
    a = read_numeric_csv(p, want)
    top = np.abs(a[:, 0]).max() if a.size else 0.0
    if top >= 2 ** 53:  # parsed as float64: larger ids are no longer exact
        raise ValueError(f"{p}: vsx_oid values reach {top:.0f}, beyond what this reader keeps "
                         f"exactly (2**53); read the table with `astrom3 ingest lightcurves` instead")
    codes = np.full(a.shape[0], -1, dtype=np.int16)
    names = tuple(ZTF_FILTERS[k] for k in sorted(ZTF_FILTERS))
    for k, name in ZTF_FILTERS.items():
        codes[a[:, 1] == k] = names.index(name)
    if (codes < 0).any():
        i = int(np.argmax(codes < 0))
        raise TableError(f"{p}: filter {a[i, 1]:g} (vsx_oid {a[i, 0]:.0f}, mjd {a[i, 2]}) is none of ZTF's "
                         f"{', '.join(f'{k} ({n})' for k, n in ZTF_FILTERS.items())}")
    return _build_long(p, a[:, 0].astype(np.int64), codes, names, a[:, 2], a[:, 3], a[:, 4])


class ZTFVSXSource(_LongTableSource):
    """The shared ZTF DR3 VSX set (``ztf_vsx_objects.csv`` + ``ztf_vsx_lightcurves_long.csv.gz``) as RawObjects.

    Light-curve only (``extra["modalities"] == ("photo",)``): one band (ZTF r = filter 2 by default), time in MJD,
    flux in mJy from the AB-like zero point (`mag_to_flux_mjy`). Label from ``astrom3_class`` (-1 when empty;
    another name, like a number that is not one, is the object's error). Spectrum: empty arrays. Metadata NaN except
    ``l``, ``b`` (degrees) and ``parallax`` = 1000 / ``distance`` (pc) in mas when the distance is positive. Aux:
    NaN except ``period`` (days, the catalogue's ``period`` column). Objects follow the catalogue row order; an
    object with no point in the chosen band raises BadInputError from `get`. The long table is read once per
    process, on first use.
    """

    def __init__(self, csv_dir: str | os.PathLike, band: str | int = 2, *,
                 objects_csv: str = "ztf_vsx_objects.csv", lc_csv: str = "ztf_vsx_lightcurves_long.csv.gz"):
        self.dir = Path(csv_dir)
        self.band = _band_name(band, ZTF_FILTERS.values())
        self.objects_path = self.dir / objects_csv
        self.lc_path = self.dir / lc_csv
        if not self.lc_path.is_file():
            raise FileNotFoundError(self.lc_path)
        if not self.objects_path.is_file():
            raise FileNotFoundError(self.objects_path)
        with open_text(self.objects_path) as fh:
            self._cat = list(csv.DictReader(fh))
        for c in ("vsx_oid", "astrom3_class", "period", "l", "b", "distance"):
            if self._cat and c not in self._cat[0]:
                raise BadInputError("*", str(self.objects_path), f"missing column {c!r} in the CSV header")
        self._refuse_repeated_ids()
        self._table: LongLightCurves | None = None

    def _refuse_repeated_ids(self) -> None:
        """A star listed twice would be stored twice and could land in both train and test (a leak that inflates
        the test score), so it is the whole file's error, as in the other sources. An id that is not an integer,
        and a row of too few or too many cells, are left to `get`, where each is that object's error."""
        seen: dict[int, str] = {}
        for index, row in enumerate(self._cat):
            if None in row or None in row.values():
                continue
            try:
                oid = int((row.get("vsx_oid") or "").strip())
            except ValueError:
                continue
            where = f"{self.objects_path}:row {index + 2}"
            if oid in seen:
                raise TableError(f"{where}: vsx_oid {oid} listed twice (first seen at {seen[oid]})")
            seen[oid] = where

    _read_table = staticmethod(read_ztf_vsx_long)

    def __len__(self) -> int:
        return len(self._cat)

    def describe(self) -> dict[str, Any]:
        return {"kind": "ztf_vsx", "objects_csv": str(self.objects_path), "lc_csv": str(self.lc_path),
                "band": self.band, "n_objects": len(self), "modalities": ("photo",),
                "flux": "mJy, AB-like zero point 3631 Jy", "time": "MJD"}

    def get(self, index: int) -> RawObject:
        row = self._cat[index]
        where = f"{self.objects_path}:row {index + 2}"
        try:
            oid = int(row["vsx_oid"])
        except ValueError:
            raise BadInputError(row.get("vsx_oid") or "?", where, "vsx_oid is not an integer") from None
        # csv.DictReader fills a short row's missing cells with None and keeps a long row's extras under None.
        if None in row or None in row.values():
            cells = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or ())
            raise BadInputError(oid, where, f"{cells} cells, expected {len(row) - (None in row)} (the header's)")
        lc = self.table.get(oid, self.band)
        if lc.shape[0] == 0:
            raise BadInputError(oid, str(self.lc_path), f"no usable ZTF {self.band}-band points")
        cls = row.get("astrom3_class", "").strip()
        label = _label_of(cls, False) if cls else -1
        if label is None:
            raise BadInputError(oid, where, f"astrom3_class {cls!r} is none of AstroM3's classes "
                                f"{', '.join(CLASS_NAMES)} (leave it empty for an unlabelled object, or read the "
                                f"table with `astrom3 ingest lightcurves --class-map`)")
        number = {c: _cell_number(row, c, oid, where) for c in ("l", "b", "distance", "period")}
        meta = _nan(len(META_COLUMNS))
        for c in ("l", "b"):
            meta[META_COLUMNS.index(c)] = number[c]
        if np.isfinite(number["distance"]) and number["distance"] > 0:
            meta[META_COLUMNS.index("parallax")] = 1000.0 / number["distance"]
        aux = _nan(len(AUX_COLUMNS))
        aux[AUX_COLUMNS.index("period")] = number["period"]
        wave, flux, ivar = _empty_spec()
        return RawObject(object_id=oid, label=int(label), lc=lc, spec_wave=wave, spec_flux=flux, spec_ivar=ivar,
                         meta=meta, aux=aux, source=f"{where}; {self.lc_path} (vsx_oid {oid}, {self.band})",
                         extra={"modalities": ("photo",), "vsx_type": row.get("Type", ""),
                                "name": row.get("Name", ""), "group": row.get("file_group", ""),
                                "astrom3_class": row.get("astrom3_class", ""), "band": self.band,
                                "survey": "ZTF DR3"})


def _cell_number(row: dict[str, str], column: str, oid: int, where: str) -> float:
    """The cell as a float (empty: NaN); text that is not a number is the object's error, not a silent NaN."""
    try:
        return _to_float(row.get(column, ""))
    except ValueError:
        raise BadInputError(oid, where, f"column {column!r} holds {row[column]!r}, not a number") from None
