"""LAMOST LRS spectra: the FITS reader (both layouts) and the shared LAMOST DR1 sample as a spectrum-only
source."""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from astrom3_hpc.core.constants import AUX_COLUMNS, CLASS_NAMES, META_COLUMNS
from astrom3_hpc.data.raw import BadInputError, RawObject

from .common import _empty_lc, _nan, _src, icrs_to_galactic


def _table_column(data: Any, names: Sequence[str], want: str) -> np.ndarray | None:
    for n in names:
        if n.upper() == want:
            col = np.asarray(data[n])
            return col.astype(np.float64).reshape(-1)  # one row of arrays, or one row per pixel: both flatten
    return None


_HEADER_CARDS = ("OBJNAME", "OBSID", "RA", "DEC", "CLASS", "SUBCLASS", "Z", "DESIG")


def read_lamost_fits(path: str | os.PathLike | bytes, object_id: Any,
                     source: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a LAMOST LRS spectrum -> (wave [Angstrom], flux, ivar), each (m,) float64.

    Layouts: (a) one primary HDU holding a (k >= 2, N) image, row 0 flux, row 1 inverse variance (rows 2-4:
    normalised flux and masks, ignored), wavelength = 10**(COEFF0 + i*COEFF1) (falling back to CRVAL1 / CD1_1);
    (b) DR5+ files: a binary table in HDU 1 with FLUX, IVAR and WAVELENGTH columns (names case-insensitive), each
    either one row holding the arrays or one row per pixel. Gzip-compressed files (.fits.gz) are read directly.
    Non-finite flux or ivar and negative ivar mark a pixel as masked: flux -> 0, ivar -> 0. Pixels with a
    non-finite or non-positive wavelength are dropped. Raises BadInputError naming the file for a missing,
    non-FITS, truncated or otherwise unusable file.
    """
    wave, flux, ivar, _ = _read_lamost(path, object_id, source)
    return wave, flux, ivar


def _read_lamost(path: str | os.PathLike | bytes, object_id: Any,
                 source: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    from astropy.io import fits  # local import: astropy is slow to import and only needed here

    src = _src(path, source)
    fobj: Any = path
    if isinstance(path, (bytes, bytearray, memoryview)):
        raw = bytes(path)
        if raw[:2] == b"\x1f\x8b":  # gzip-compressed FITS given as bytes (e.g. read from a zip)
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError) as exc:
                raise BadInputError(object_id, src, f"corrupt or truncated gzip FITS: {exc}") from None
        fobj = io.BytesIO(raw)
    if not isinstance(fobj, io.BytesIO) and not os.path.exists(fobj):
        raise BadInputError(object_id, src, "spectrum file not found")
    caught: list[warnings.WarningMessage] = []

    def truncated() -> str | None:
        for w in caught:
            if "truncated" in str(w.message).lower():
                return str(w.message)
        return None

    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            caught = rec
            with fits.open(fobj, memmap=False, lazy_load_hdus=False) as hdul:
                n_hdu = len(hdul)
                cards = {k: hdul[0].header.get(k) for k in _HEADER_CARDS}
                wave = flux = ivar = None
                if n_hdu >= 2 and isinstance(hdul[1], fits.BinTableHDU):
                    data = hdul[1].data
                    names = list(hdul[1].columns.names)
                    flux = _table_column(data, names, "FLUX")
                    ivar = _table_column(data, names, "IVAR")
                    wave = _table_column(data, names, "WAVELENGTH")
                    if flux is None or ivar is None or wave is None:
                        raise BadInputError(object_id, src, f"HDU 1 table lacks FLUX/IVAR/WAVELENGTH (has {names})")
                else:
                    hdu = hdul[0]
                    img = hdu.data
                    if img is None or img.ndim != 2 or img.shape[0] < 2:
                        shape = None if img is None else img.shape
                        raise BadInputError(object_id, src,
                                            f"primary HDU is not a (5, N) spectrum image (shape {shape})")
                    hdr = hdu.header
                    c0 = hdr.get("COEFF0", hdr.get("CRVAL1"))
                    c1 = hdr.get("COEFF1", hdr.get("CD1_1", hdr.get("CDELT1")))
                    if c0 is None or c1 is None:
                        raise BadInputError(object_id, src, "header lacks COEFF0/COEFF1 (wavelength solution)")
                    img = np.asarray(img, dtype=np.float64)
                    flux = img[0].copy()
                    ivar = img[1].copy()
                    wave = 10.0 ** (float(c0) + np.arange(img.shape[1], dtype=np.float64) * float(c1))
        msg = truncated()
        if msg is not None:
            raise BadInputError(object_id, src, f"truncated FITS file: {msg}")
    except BadInputError:
        raise
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError, EOFError ... for broken files
        msg = truncated()
        reason = f"truncated FITS file: {msg}" if msg else "corrupt or unreadable FITS file"
        raise BadInputError(object_id, src, f"{reason} ({type(exc).__name__}: {exc})") from None
    if not (flux.shape == ivar.shape == wave.shape):
        raise BadInputError(object_id, src,
                            f"FLUX/IVAR/WAVELENGTH lengths differ: {flux.shape}, {ivar.shape}, {wave.shape}")
    ok_wave = np.isfinite(wave) & (wave > 0)
    wave, flux, ivar = wave[ok_wave], flux[ok_wave], ivar[ok_wave]
    if wave.size == 0:
        raise BadInputError(object_id, src, "empty spectrum (no pixels with a valid wavelength)")
    bad = ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar < 0)
    if bad.any():
        flux[bad] = 0.0
        ivar[bad] = 0.0
    return wave, flux, ivar, cards


def _lamost_header(path: str | os.PathLike) -> dict[str, Any]:
    """A few header cards of a LAMOST file (primary HDU), or {} when unreadable."""
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False) as hdul:
                h = hdul[0].header
                return {k: h.get(k) for k in _HEADER_CARDS}
    except Exception:
        return {}

class LamostSampleSource:
    """The shared LAMOST DR1 sample (a directory of FITS, optionally with ``lamost_dr1_sample_index.csv``) as
    spectrum-only RawObjects (``extra["modalities"] == ("spectra",)``), label -1.

    `directory` is the sample directory (holding ``fits/``) or the FITS directory itself; files are ``*.fits`` /
    ``*.fits.gz`` sorted by name. object_id: the LAMOST ``OBJNAME`` when it is an integer (from the index CSV, else
    the header) and no earlier file has it, else the file position, else (another file's OBJNAME) an id beyond
    every OBJNAME and position. Metadata NaN except ``l``, ``b`` computed from the header RA/Dec. Light
    curve: empty (0, 3); aux NaN.
    """

    def __init__(self, directory: str | os.PathLike, *, index_csv: str = "lamost_dr1_sample_index.csv"):
        d = Path(directory)
        self.dir = d
        fits_dir = d / "fits" if (d / "fits").is_dir() else d
        self.fits_dir = fits_dir
        self.files = sorted([p for p in fits_dir.iterdir() if p.name.endswith((".fits", ".fits.gz", ".fit"))])
        self._index: dict[str, dict[str, str]] = {}
        idx = d / index_csv
        if idx.is_file():
            with open(idx, "r", encoding="utf-8", newline="") as fh:
                self._index = {r["file"]: r for r in csv.DictReader(fh) if r.get("file")}
        names = [(self._index.get(p.name) or {}).get("objname", "") or str(_lamost_header(p).get("OBJNAME") or "")
                 for p in self.files]
        numeric = [int(n) if n.strip().isdigit() else None for n in names]
        # A fallback must miss every OBJNAME, later files' too: a position equal to another file's OBJNAME gave
        # two objects one id (`Null` at position 2 beside OBJNAME 2).
        taken = {n for n in numeric if n is not None}
        self._ids: list[int] = []
        seen: set[int] = set()
        spare = max(taken | {len(self.files) - 1}, default=-1) + 1
        for i, n in enumerate(numeric):
            if n is not None and n not in seen:
                oid = n
            elif i not in taken and i not in seen:
                oid = i
            else:
                oid, spare = spare, spare + 1
            seen.add(oid)
            self._ids.append(oid)

    def __len__(self) -> int:
        return len(self.files)

    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES

    def describe(self) -> dict[str, Any]:
        return {"kind": "lamost_sample", "fits_dir": str(self.fits_dir), "n_objects": len(self),
                "index_csv": bool(self._index), "modalities": ("spectra",)}

    def get(self, index: int) -> RawObject:
        p = self.files[index]
        oid = self._ids[index]
        wave, flux, ivar, hdr = _read_lamost(p, oid, None)
        meta = _nan(len(META_COLUMNS))
        row = self._index.get(p.name, {})
        try:
            ra = float(hdr.get("RA") if hdr.get("RA") is not None else row.get("ra", "nan"))
            dec = float(hdr.get("DEC") if hdr.get("DEC") is not None else row.get("dec", "nan"))
        except (TypeError, ValueError):
            ra = dec = math.nan
        if np.isfinite(ra) and np.isfinite(dec):
            lon, lat = icrs_to_galactic(ra, dec)
            meta[META_COLUMNS.index("l")] = float(lon)
            meta[META_COLUMNS.index("b")] = float(lat)
        return RawObject(object_id=oid, label=-1, lc=_empty_lc(), spec_wave=wave, spec_flux=flux, spec_ivar=ivar,
                         meta=meta, aux=_nan(len(AUX_COLUMNS)), source=str(p),
                         extra={"modalities": ("spectra",), "file": p.name,
                                "lamost_class": row.get("lamost_class", hdr.get("CLASS") or ""),
                                "subclass": row.get("subclass", hdr.get("SUBCLASS") or ""),
                                "z": row.get("z", hdr.get("Z")), "survey": "LAMOST DR1"})
