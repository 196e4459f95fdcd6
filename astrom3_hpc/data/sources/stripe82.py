"""The shared SDSS Stripe 82 RR Lyrae light curves (Sesar et al. 2010): the long-table reader and the
light-curve-only source."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from astrom3_hpc.core.constants import AUX_COLUMNS, CLASS_NAMES, META_COLUMNS
from astrom3_hpc.data.raw import BadInputError, RawObject

from ..text_files import open_text
from .common import NotANumber, _empty_spec, _nan, _to_float, cell_numbers
from .long_table import LongLightCurves, _band_name, _build_long, _LongTableSource
from .tables import TableError


def read_stripe82_long(path: str | os.PathLike) -> LongLightCurves:
    """The Stripe 82 RR Lyrae long table (``num, time, mag, magerr, band`` with band in u, g, r, i, z)."""
    p = str(path)
    if not os.path.exists(p):
        raise FileNotFoundError(p)
    names = ("u", "g", "r", "i", "z")
    oid: list[int] = []
    code: list[int] = []
    vals: list[tuple[float, float, float]] = []
    with open_text(p) as fh:
        rd = csv.reader(fh)
        header = [h.strip() for h in next(rd)]
        want = ["num", "time", "mag", "magerr", "band"]
        if header[:5] != want:
            raise ValueError(f"{p}: expected columns {want}, got {header}")
        for r in rd:
            if not r:
                continue
            where = f"{p}:{rd.line_num}"
            if len(r) < 5:
                raise TableError(f"{where}: {len(r)} cells, expected at least 5 ({want})")
            if r[4].strip() not in names:
                raise TableError(f"{where}: band {r[4]!r} is none of {', '.join(names)}")
            try:
                oid.append(int(r[0]))
            except ValueError:
                raise TableError(f"{where}: num {r[0]!r} is not an integer") from None
            try:
                vals.append(cell_numbers(r[1:4]))  # empty cells: NaN, dropped
            except NotANumber:
                raise TableError(f"{where}: time, mag, magerr {r[1:4]} are not all numbers") from None
            code.append(names.index(r[4].strip()))
    a = np.asarray(vals, dtype=np.float64).reshape(-1, 3)
    return _build_long(p, np.asarray(oid, dtype=np.int64), np.asarray(code, dtype=np.int16), names,
                       a[:, 0], a[:, 1], a[:, 2])


def _read_mrt_amplitudes(path: Path) -> dict[int, dict[str, float]]:
    """Per-band template amplitudes (Au, Ag, Ar, Ai, Az) from the Sesar et al. 2010 machine-readable table."""
    out: dict[int, dict[str, float]] = {}
    if not path.is_file():
        return out
    # Byte ranges (1-based, inclusive) from the table's own byte-by-byte description.
    cols = {"u": (27, 40), "g": (81, 94), "r": (135, 148), "i": (189, 202), "z": (243, 256)}
    with open(path, "r", encoding="latin-1") as fh:
        for ln in fh:
            head = ln[:7].strip()
            if not head.isdigit() or len(ln) < 256:
                continue
            rec = {}
            for b, (s, e) in cols.items():
                try:
                    rec[b] = float(ln[s - 1:e])
                except ValueError:
                    rec[b] = math.nan
            out[int(head)] = rec
    return out


class Stripe82RRLyraeSource(_LongTableSource):
    """The shared SDSS Stripe 82 RR Lyrae set (Sesar et al. 2010) as light-curve-only RawObjects.

    One band (g or r, default r; u, i, z accepted), MJD, flux in mJy (`mag_to_flux_mjy`; SDSS 99.999 sentinels
    dropped). Label from ``periods.csv`` Type: ab -> RRAB, c -> RRC, empty or no row -> -1 (another type is the
    star's error; a malformed row of either table is an error naming its line). Aux: period (days) and amplitude
    (mag, the best-fit template amplitude in that band from ``apj326724t2_mrt.txt`` when present), others NaN.
    Metadata NaN. Objects follow ``periods.csv`` order when it exists, else ascending star number.
    """

    _TYPES = {"ab": "RRAB", "c": "RRC"}

    def __init__(self, csv_dir: str | os.PathLike, band: str = "r", *,
                 lc_csv: str = "sesar2010_rrlyrae_lightcurves.csv.gz", periods_csv: str = "periods.csv",
                 mrt: str = "apj326724t2_mrt.txt"):
        self.dir = Path(csv_dir)
        self.band = _band_name(band, ("u", "g", "r", "i", "z"))
        self.lc_path = self.dir / lc_csv
        self.periods_path = self.dir / periods_csv
        if not self.lc_path.is_file():
            raise FileNotFoundError(self.lc_path)
        self._periods: dict[int, tuple[str, float]] = {}
        order: list[int] = []
        if self.periods_path.is_file():
            with open_text(self.periods_path) as fh:
                rd = csv.DictReader(fh)
                missing = [c for c in ("Num", "Type", "Per") if c not in (rd.fieldnames or [])]
                if missing:
                    raise TableError(f"{self.periods_path}: no column {', '.join(missing)} (header: {rd.fieldnames})")
                for r in rd:
                    where = f"{self.periods_path}:{rd.line_num}"
                    try:
                        num, per = int(r["Num"]), _to_float(r["Per"] or "")
                    except (TypeError, ValueError):
                        raise TableError(f"{where}: Num {r['Num']!r} or Per {r['Per']!r} is not a number") from None
                    if num in self._periods:
                        raise TableError(f"{where}: star {num} listed twice")
                    self._periods[num] = ((r["Type"] or "").strip(), per)
                    order.append(num)
        self._amps = _read_mrt_amplitudes(self.dir / mrt)
        self._table: LongLightCurves | None = read_stripe82_long(self.lc_path)
        ids = [int(x) for x in self._table.object_ids]
        known = set(order)
        self._ids = order + sorted(i for i in ids if i not in known) if order else ids

    _read_table = staticmethod(read_stripe82_long)

    def __len__(self) -> int:
        return len(self._ids)

    def describe(self) -> dict[str, Any]:
        return {"kind": "stripe82_rrlyrae", "lc_csv": str(self.lc_path), "periods_csv": str(self.periods_path),
                "band": self.band, "n_objects": len(self), "modalities": ("photo",),
                "flux": "mJy, AB-like zero point 3631 Jy", "time": "MJD"}

    def get(self, index: int) -> RawObject:
        oid = self._ids[index]
        lc = self.table.get(oid, self.band)
        if lc.shape[0] == 0:
            raise BadInputError(oid, str(self.lc_path), f"no usable {self.band}-band points")
        typ, per = self._periods.get(oid, ("", math.nan))
        if typ and typ.lower() not in self._TYPES:
            raise BadInputError(oid, str(self.periods_path), f"Type {typ!r} is neither 'ab' (RRAB) nor 'c' (RRC); "
                                "leave it empty for an unlabelled star")
        label = CLASS_NAMES.index(self._TYPES[typ.lower()]) if typ else -1
        aux = _nan(len(AUX_COLUMNS))
        aux[AUX_COLUMNS.index("period")] = per
        aux[AUX_COLUMNS.index("amplitude")] = self._amps.get(oid, {}).get(self.band, math.nan)
        wave, flux, ivar = _empty_spec()
        return RawObject(object_id=oid, label=label, lc=lc, spec_wave=wave, spec_flux=flux, spec_ivar=ivar,
                         meta=_nan(len(META_COLUMNS)), aux=aux, source=f"{self.lc_path} (num {oid}, {self.band})",
                         extra={"modalities": ("photo",), "rr_type": typ, "band": self.band,
                                "survey": "SDSS Stripe 82"})
