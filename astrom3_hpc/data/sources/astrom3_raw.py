"""Readers for real survey files, producing `RawObject`s (spec section 1, "Raw inputs per object").

Low-level readers (each raises `BadInputError(object_id, file, reason)` on missing, corrupt or empty input):

- `read_asassn_dat(path_or_bytes, object_id)` -> (n, 3) float64 [HJD, FLUX, FLUX_ERR] from an ASAS-SN V-band
  ``.dat`` file (whitespace text, 2 header rows, columns HJD MAG MAG_ERR FLUX FLUX_ERR, flux in mJy).
- `read_lamost_fits(path, object_id)` -> (wave, flux, ivar) float64 from a LAMOST LRS spectrum, either layout
  (single primary (5, N) image with COEFF0/COEFF1, or the DR5+ binary table in HDU 1 with FLUX/IVAR/WAVELENGTH).
- `read_ztf_vsx_long(path)` / `read_stripe82_long(path)` -> `LongLightCurves`: a long (one row per epoch) CSV read
  once and grouped by object with numpy; `LongLightCurves.get(oid, band)` gives (n, 3) [MJD, flux, flux_err] with
  magnitudes converted by `mag_to_flux_mjy` (AB-like zero point: flux = 3631e3 * 10**(-0.4 mag) mJy,
  flux_err = flux * magerr * ln(10) / 2.5).

Sources implementing `raw.RawSource` (`__len__`, `get(i)`, `describe()`, `class_names()`):

- `AstroM3RawSource`: the published AstroM3 raw layout (below), all three modalities.
- `ZTFVSXSource`: the shared ZTF DR3 light curves of VSX variables, light-curve only.
- `Stripe82RRLyraeSource`: the shared SDSS Stripe 82 RR Lyrae light curves, light-curve only.
- `LamostSampleSource`: the shared LAMOST DR1 spectra, spectrum only.

Single-modality sources fill the modalities they lack with empty arrays (lc (0, 3), spectrum length 0) and NaN
(metadata, aux) and say which modalities they carry in ``extra["modalities"]`` (a tuple of "photo", "spectra",
"meta"); ingestion decides what to do with them.

The published AstroM3 raw layout
--------------------------------
What is known, and where it comes from:

1. Hugging Face dataset ``AstroMLCore/AstroM3Dataset`` (first published as ``MeriDK/AstroM3Dataset``; dataset card
   and file tree on huggingface.co) holds::

       AstroM3Dataset.py                       loading script (needs trust_remote_code)
       photometry.zip                          ASAS-SN V-band light curves, one .dat per object (95 MB)
       spectra/{split}/{class}/{spec_filename} LAMOST FITS, split in (train, val, test), class e.g. "EW"
       splits/{subset}/{seed}/{train,val,test}.csv   subset in (full, sub50, sub25, sub10), seed in (42, 0, 66, 12, 123)
       splits/{subset}/{seed}/info.json        column lists (the card: metadata is split into meta_cols and
                                               photo_cols dictionaries)
       utils/parallelzipfile.py                a fork-safe ZipFile the loader uses for photometry.zip

   The card: photometry (N, 3) = (time, flux, flux_error); spectra (M, 3) = (wavelength, flux, flux_error)
   where the "error" column is in fact LAMOST inverse variance (see `read_lamost_fits`); label = class name.
   The spectra directory was built by ``dev/notebooks/049-hf-upload.ipynb`` in github.com/MeriDK/AstroM3:
   ``dst = f'spectra/{split}/{cls}/{spec_filename}'`` for split in (train, val, test) from
   ``spectra_and_v_{split}.csv``.
2. The split CSVs descend from the authors' ``preprocessed_data/full_lb/spectra_and_v_{split}.csv``
   (github.com/MeriDK/AstroM3, ``dev/notebooks/027-add-lb-cols.ipynb`` shows its head: 17,512 rows x 42 columns
   before the class filter) whose columns are, in order: ``mean_vmag, amplitude, period, phot_g_mean_mag,
   e_phot_g_mean_mag, lksl_statistic, rfr_score, phot_bp_mean_mag, e_phot_bp_mean_mag, phot_rp_mean_mag,
   e_phot_rp_mean_mag, bp_rp, parallax, parallax_error, parallax_over_error, pmra, pmra_error, pmdec,
   pmdec_error, j_mag, e_j_mag, h_mag, e_h_mag, k_mag, e_k_mag, w1_mag, e_w1_mag, w2_mag, e_w2_mag, w3_mag,
   w4_mag, j_k, w1_w2, w3_w4, pm, ruwe, id, target, name, spec_filename, l, b`` with raw (un-normalised)
   values, e.g. ``id = "EDR3 2117581746386552576"``, ``target = "EW"``,
   ``name = "ASASSN-VJ184120.05+445439.3"``, ``spec_filename = "spec-57516-HD184435N434959B01_sp15-016.fits.gz"``
   (LAMOST files are gzip-compressed FITS), l and b in degrees. ``META_COLS`` / ``PHOTO_COLS`` in the
   reference's ``core/final/tune.py`` and ``src/main.py`` are exactly constants.META_COLUMNS / AUX_COLUMNS.
3. Light curves: every reference loader (``core/final/dataset.py`` ``get_vlc``, the draft HF script in
   ``dev/notebooks/050-hf-load-script.ipynb``) reads ``f'vardb_files/{name.replace(" ", "")}.dat'`` from a zip
   (``asassnvarlc_vband_complete.zip``, the ASAS-SN variable-star database dump) with
   ``pd.read_csv(sep='\\s+', skiprows=2, names=['HJD', 'MAG', 'MAG_ERR', 'FLUX', 'FLUX_ERR'])``.
   The member paths inside the published ``photometry.zip`` were not visible from the sources reachable here,
   so this reader looks the file up by its base name anywhere in the zip (see below).

Not verified (could not be read): the exact header of the published ``splits/.../*.csv`` (assumed to keep the
columns above; the aliases below cover the older ``edr3_source_id`` / ``asassn_name`` / ``variable_type`` names)
and the content of ``info.json`` (not needed: the column lists are constants here).

Exact layout `AstroM3RawSource` expects (all paths relative to ``root`` unless absolute)::

    splits/{subset}/{seed}/{split}.csv    default catalogues, split in `splits` (default train, val, test);
                                          or give `split_files` (a {split: path} mapping or a list of paths,
                                          split = file stem), e.g. the authors' spectra_and_v_train.csv
    photometry.zip | photometry/ | asassnvarlc_vband_complete.zip | vardb_files/
                                          light curves, first that exists (or `photometry=`), a zip or a
                                          directory; member "<name without spaces>.dat", looked up as
                                          "vardb_files/<file>", "<file>", then (zip only) by base name anywhere
    spectra/{split}/{target}/{spec_filename}, else spectra/{spec_filename}, else spectra/*/*/{spec_filename}
                                          (or `spectra_dir=`; .fits or .fits.gz)

Catalogue columns: the 34 constants.META_COLUMNS and 4 constants.AUX_COLUMNS by exactly those names, plus
an object id (``id``, ``edr3_source_id`` or ``source_id``; "EDR3 <digits>" or plain digits: the Gaia EDR3 source
id becomes `RawObject.object_id`), the class (``target`` or ``variable_type``), the light-curve name (``name`` or
``asassn_name``) and ``spec_filename``. A missing column raises `BadInputError` at construction naming the column
and the file (object id "*": every row is affected). Empty / "nan" cells become NaN and are passed through.
Values must be raw: the reference's ``*_norm.csv`` files hold z-scored values and are not raw inputs.

Fork / MPI safety: nothing is opened at construction except the CSVs (read fully, then closed); the zip is
opened lazily on first use in each process (re-opened after a fork, dropped when pickled), FITS files are opened
per call with memmap=False and closed.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from astrom3_hpc.core.constants import AUX_COLUMNS, CLASS_NAMES, META_COLUMNS
from astrom3_hpc.data.raw import BadInputError, RawObject

__all__ = [
    "ASASSN_DAT_COLUMNS", "AB_ZERO_POINT_MJY", "ZTF_FILTERS", "MODALITIES",
    "read_asassn_dat", "read_lamost_fits", "mag_to_flux_mjy", "icrs_to_galactic",
    "LongLightCurves", "read_ztf_vsx_long", "read_stripe82_long",
    "AstroM3RawSource", "ZTFVSXSource", "Stripe82RRLyraeSource", "LamostSampleSource",
    "LC_ID_COLUMNS", "LC_NAME_COLUMNS", "LC_TARGET_COLUMNS", "SPEC_FILE_COLUMN",
]

ASASSN_DAT_COLUMNS: tuple[str, ...] = ("HJD", "MAG", "MAG_ERR", "FLUX", "FLUX_ERR")
AB_ZERO_POINT_MJY = 3631e3  # 3631 Jy in mJy
ZTF_FILTERS: dict[int, str] = {1: "g", 2: "r", 3: "i"}
MODALITIES: tuple[str, ...] = ("photo", "spectra", "meta")

# Column-name aliases in the AstroM3 catalogues (first present wins).
LC_ID_COLUMNS: tuple[str, ...] = ("id", "edr3_source_id", "source_id")
LC_TARGET_COLUMNS: tuple[str, ...] = ("target", "variable_type")
LC_NAME_COLUMNS: tuple[str, ...] = ("name", "asassn_name")
SPEC_FILE_COLUMN = "spec_filename"

# Magnitudes at or beyond these are survey sentinels (SDSS writes 99.999 for "no measurement").
_MAG_SENTINEL = 90.0
_MAGERR_SENTINEL = 9.0


def _src(path_or_bytes: Any, source: str | None) -> str:
    if source is not None:
        return str(source)
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return str(path_or_bytes)


def _empty_lc() -> np.ndarray:
    return np.zeros((0, 3), dtype=np.float64)


def _empty_spec() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = np.zeros(0, dtype=np.float64)
    return z, z.copy(), z.copy()


def _nan(n: int) -> np.ndarray:
    return np.full(n, np.nan, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------------
# ASAS-SN light curves
# ----------------------------------------------------------------------------------------------------------------

def _parse_dat_text(text: str) -> np.ndarray:
    """Rows after the 2 header lines -> (n, 3) [HJD, FLUX, FLUX_ERR]; bad rows dropped."""
    lines = text.splitlines()[2:]
    body = "\n".join(ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#"))
    if not body:
        return _empty_lc()
    try:  # fast path (C parser); any irregular row sends us to the tolerant path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.loadtxt(io.StringIO(body), dtype=np.float64, usecols=(0, 3, 4), ndmin=2)
    except (ValueError, IndexError):
        rows = []
        for ln in body.splitlines():
            tok = ln.split()
            if len(tok) < 5:
                continue
            try:
                rows.append((float(tok[0]), float(tok[3]), float(tok[4])))
            except ValueError:
                continue
        arr = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    return arr[np.isfinite(arr).all(axis=1)]


def read_asassn_dat(path_or_bytes: str | os.PathLike | bytes, object_id: Any, source: str | None = None) -> np.ndarray:
    """Read an ASAS-SN ``.dat`` light curve -> (n, 3) float64 [HJD, FLUX, FLUX_ERR] (flux in mJy).

    The first 2 lines are header rows (skipped whatever they hold, as the reference does); then whitespace columns
    HJD MAG MAG_ERR FLUX FLUX_ERR. Only HJD, FLUX and FLUX_ERR must parse: a row with fewer than 5 columns, a
    non-numeric value in those three, or a non-finite one is dropped (MAG may hold e.g. ">17.5" upper limits).
    Rows keep file order (no sorting or de-duplication: preprocessing does that).
    `source` names the file in error messages when `path_or_bytes` is bytes (e.g. "photometry.zip:x.dat").
    Raises BadInputError for a missing/unreadable file or zero usable rows ("empty light curve").
    """
    src = _src(path_or_bytes, source)
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        raw = bytes(path_or_bytes)
    else:
        try:
            with open(path_or_bytes, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            raise BadInputError(object_id, src, "light-curve file not found") from None
        except OSError as exc:
            raise BadInputError(object_id, src, f"cannot read light-curve file: {exc}") from None
    if raw[:2] == b"\x1f\x8b":  # tolerate a gzip-compressed .dat
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise BadInputError(object_id, src, f"corrupt gzip light curve: {exc}") from None
    lc = _parse_dat_text(raw.decode("latin-1"))
    if lc.shape[0] == 0:
        raise BadInputError(object_id, src, "empty light curve (no parsable rows with finite HJD, FLUX, FLUX_ERR)")
    return lc


# ----------------------------------------------------------------------------------------------------------------
# LAMOST spectra
# ----------------------------------------------------------------------------------------------------------------

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
                        raise BadInputError(object_id, src, f"primary HDU is not a (5, N) spectrum image (shape {shape})")
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
        raise BadInputError(object_id, src, f"FLUX/IVAR/WAVELENGTH lengths differ: {flux.shape}, {ivar.shape}, {wave.shape}")
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


# ----------------------------------------------------------------------------------------------------------------
# Magnitudes, coordinates
# ----------------------------------------------------------------------------------------------------------------

def mag_to_flux_mjy(mag: np.ndarray, magerr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AB-like magnitudes -> (flux, flux_err) in mJy: flux = 3631e3 * 10**(-0.4 mag), err = flux*magerr*ln10/2.5."""
    mag = np.asarray(mag, dtype=np.float64)
    magerr = np.asarray(magerr, dtype=np.float64)
    flux = AB_ZERO_POINT_MJY * np.power(10.0, -0.4 * mag)
    return flux, flux * magerr * (math.log(10.0) / 2.5)


# ICRS -> Galactic rotation (Hipparcos catalogue, ESA 1997, vol. 1, sec. 1.5.3); sub-arcsecond agreement with
# astropy's Galactic frame, plenty for the l, b metadata features.
_ICRS_TO_GAL = np.array([
    [-0.0548755604162154, -0.8734370902348850, -0.4838350155487132],
    [+0.4941094278755837, -0.4448296299600112, +0.7469822444972189],
    [-0.8676661490190047, -0.1980763734312015, +0.4559837761750669],
])


def icrs_to_galactic(ra_deg: Any, dec_deg: Any) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees -> (l, b) in degrees, l in [0, 360)."""
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    v = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
    g = np.tensordot(_ICRS_TO_GAL, v, axes=1)
    lon = np.degrees(np.arctan2(g[1], g[0])) % 360.0
    lat = np.degrees(np.arcsin(np.clip(g[2], -1.0, 1.0)))
    return lon, lat


# ----------------------------------------------------------------------------------------------------------------
# Long-format light-curve tables (ZTF VSX, Stripe 82)
# ----------------------------------------------------------------------------------------------------------------

def _open_text(path: str | os.PathLike) -> io.TextIOBase:
    p = str(path)
    if p.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", newline="")
    return open(p, "r", encoding="utf-8", newline="")


@dataclass
class LongLightCurves:
    """A long light-curve table grouped by object and band (numpy only).

    Rows are sorted by (object id, band) keeping file order inside a group. Rows with non-finite values, a
    magnitude >= 90 or an error >= 9 (survey sentinels such as SDSS 99.999) or a negative error are dropped at
    load (`n_dropped`); `object_ids` still lists every object seen in the file.
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
    ok = (np.isfinite(t) & np.isfinite(mag) & np.isfinite(err) & (mag < _MAG_SENTINEL) & (err < _MAGERR_SENTINEL)
          & (err >= 0))
    oid, band, t, mag, err = oid[ok], band[ok], t[ok], mag[ok], err[ok]
    order = np.lexsort((np.arange(oid.size), band, oid))
    return LongLightCurves(path=path, object_ids=object_ids.astype(np.int64), band_names=band_names,
                           oid=oid[order].astype(np.int64), band=band[order].astype(np.int16), time=t[order],
                           mag=mag[order], magerr=err[order], n_rows_file=int(n_file), n_dropped=int(n_file - ok.sum()))


def _read_numeric_csv(path: str, ncols: int) -> np.ndarray:
    """All-numeric CSV with a header row -> (n, ncols) float64 (C parser; tolerant fallback with csv)."""
    try:
        with _open_text(path) as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.loadtxt(fh, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
        if arr.shape[1] != ncols:
            raise ValueError(f"expected {ncols} columns, got {arr.shape[1]}")
        return arr
    except ValueError:
        rows = []
        with _open_text(path) as fh:
            rd = csv.reader(fh)
            next(rd, None)
            for r in rd:
                if len(r) < ncols:
                    continue
                try:
                    rows.append([float(x) if x.strip() else math.nan for x in r[:ncols]])
                except ValueError:
                    continue
        return np.asarray(rows, dtype=np.float64).reshape(-1, ncols)


def read_ztf_vsx_long(path: str | os.PathLike) -> LongLightCurves:
    """The ZTF VSX long table (``vsx_oid, filter, mjd, mag, magerr``; filter 1=g, 2=r, 3=i), read once."""
    p = str(path)
    if not os.path.exists(p):
        raise FileNotFoundError(p)
    with _open_text(p) as fh:
        header = [h.strip() for h in fh.readline().split(",")]
    want = ["vsx_oid", "filter", "mjd", "mag", "magerr"]
    if header[:5] != want:
        raise ValueError(f"{p}: expected columns {want}, got {header}")
    a = _read_numeric_csv(p, 5)
    codes = np.full(a.shape[0], -1, dtype=np.int16)
    names = tuple(ZTF_FILTERS[k] for k in sorted(ZTF_FILTERS))
    for k, name in ZTF_FILTERS.items():
        codes[a[:, 1] == k] = names.index(name)
    keep = codes >= 0
    a, codes = a[keep], codes[keep]
    return _build_long(p, a[:, 0].astype(np.int64), codes, names, a[:, 2], a[:, 3], a[:, 4])


def read_stripe82_long(path: str | os.PathLike) -> LongLightCurves:
    """The Stripe 82 RR Lyrae long table (``num, time, mag, magerr, band`` with band in u, g, r, i, z)."""
    p = str(path)
    if not os.path.exists(p):
        raise FileNotFoundError(p)
    names = ("u", "g", "r", "i", "z")
    oid: list[int] = []
    code: list[int] = []
    vals: list[tuple[float, float, float]] = []
    with _open_text(p) as fh:
        rd = csv.reader(fh)
        header = [h.strip() for h in next(rd)]
        want = ["num", "time", "mag", "magerr", "band"]
        if header[:5] != want:
            raise ValueError(f"{p}: expected columns {want}, got {header}")
        for r in rd:
            if len(r) < 5 or r[4].strip() not in names:
                continue
            try:
                o = int(r[0])
                v = (float(r[1]), float(r[2]), float(r[3]))
            except ValueError:
                continue
            oid.append(o)
            code.append(names.index(r[4].strip()))
            vals.append(v)
    a = np.asarray(vals, dtype=np.float64).reshape(-1, 3)
    return _build_long(p, np.asarray(oid, dtype=np.int64), np.asarray(code, dtype=np.int16), names,
                       a[:, 0], a[:, 1], a[:, 2])


# ----------------------------------------------------------------------------------------------------------------
# Helpers for catalogue CSVs
# ----------------------------------------------------------------------------------------------------------------

def _read_csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, "r", encoding="utf-8", newline="") as fh:
        rd = csv.reader(fh)
        header = next(rd, None)
        if header is None:
            raise BadInputError("*", str(path), "empty catalogue CSV (no header)")
        header = [h.strip() for h in header]
        rows = [r for r in rd if any(c.strip() for c in r)]
    return header, rows


def _to_float(s: str) -> float:
    s = s.strip()
    if s == "" or s.lower() in ("nan", "none", "null", "na", "--"):
        return math.nan
    return float(s)


_ID_RE = re.compile(r"(\d+)\s*$")


def _parse_object_id(s: str) -> int:
    """"EDR3 2117581746386552576" or "2117581746386552576" -> int; a float-formatted id is refused."""
    s = s.strip()
    if not s or not (s.isdigit() or s.upper().startswith(("EDR3", "DR3", "GAIA", "DR2"))):
        raise ValueError(f"not an integer source id: {s!r}")
    m = _ID_RE.search(s)
    if not m:
        raise ValueError(f"not an integer source id: {s!r}")
    return int(m.group(1))


def _label_of(name: str, allow_unknown: bool) -> int | None:
    name = name.strip()
    if name in CLASS_NAMES:
        return CLASS_NAMES.index(name)
    return -1 if allow_unknown else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Light-curve containers (zip or directory), lazily opened per process
# ----------------------------------------------------------------------------------------------------------------

class _LcContainer:
    """`.dat` files in a directory or a zip. The ZipFile is opened on first use in each process."""

    def __init__(self, path: Path, prefix: str | None = None):
        self.path = Path(path)
        self.is_zip = self.path.is_file()
        if not self.is_zip and not self.path.is_dir():
            raise FileNotFoundError(f"light-curve container not found: {self.path}")
        p = None if prefix is None else prefix.strip("/")
        self.prefixes: tuple[str, ...] = (f"{p}/" if p else "",) if p is not None else ("vardb_files/", "")
        self._zip: zipfile.ZipFile | None = None
        self._pid: int | None = None
        self._by_base: dict[str, str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        st = self.__dict__.copy()
        st["_zip"] = None
        st["_pid"] = None
        st["_by_base"] = None
        return st

    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():
            # After a fork the parent's handle shares a file offset with the child: never reuse it.
            self._zip = zipfile.ZipFile(self.path, "r")
            self._pid = os.getpid()
        return self._zip

    def close(self) -> None:
        if self._zip is not None and self._pid == os.getpid():
            self._zip.close()
        self._zip = None
        self._pid = None

    def describe(self) -> str:
        return f"{self.path} ({'zip' if self.is_zip else 'directory'})"

    def read(self, file_name: str, object_id: Any) -> tuple[bytes, str]:
        """Bytes of one member and its provenance string; BadInputError when absent or unreadable."""
        if self.is_zip:
            try:
                zf = self._zipfile()
            except (OSError, zipfile.BadZipFile) as exc:
                raise BadInputError(object_id, str(self.path), f"cannot open light-curve zip: {exc}") from None
            members = [pre + file_name for pre in self.prefixes]
            member = None
            for m in members:
                try:
                    zf.getinfo(m)
                    member = m
                    break
                except KeyError:
                    continue
            if member is None:
                if self._by_base is None:
                    self._by_base = {}
                    for n in zf.namelist():
                        if not n.endswith("/"):
                            self._by_base.setdefault(n.rsplit("/", 1)[-1], n)
                member = self._by_base.get(file_name)
            src = f"{self.path}:{member or self.prefixes[0] + file_name}"
            if member is None:
                raise BadInputError(object_id, src, f"light-curve file {file_name} not found in zip")
            try:
                return zf.read(member), src
            except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
                raise BadInputError(object_id, src, f"cannot read zip member: {exc}") from None
        tried = [self.path / (pre + file_name) for pre in self.prefixes]
        for p in tried:
            if p.is_file():
                try:
                    return p.read_bytes(), str(p)
                except OSError as exc:
                    raise BadInputError(object_id, str(p), f"cannot read light-curve file: {exc}") from None
        raise BadInputError(object_id, str(tried[0]), f"light-curve file {file_name} not found "
                                                      f"(looked in {[str(t) for t in tried]})")


# ----------------------------------------------------------------------------------------------------------------
# AstroM3 raw layout
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Row:
    object_id: int
    target: str
    name: str
    spec_filename: str
    split: str
    csv_index: int  # which split file
    row: int  # data row number in that file (0-based)


class AstroM3RawSource:
    """The published AstroM3 raw layout as a RawSource (see the module docstring for the exact layout).

    Objects are the rows of the split catalogues in order (train, then val, then test by default); the published
    split of each object is kept in ``extra["split"]``. Ingestion keeps the memberships of every published
    ``splits/{subset}/{seed}/`` (``splits_dir``) and generates only the absent ones (data/split_files.py).
    `allow_unknown_class`: a target outside constants.CLASS_NAMES gives label -1 instead of BadInputError.
    Duplicate object ids across or within the catalogues raise BadInputError at construction.
    """

    def __init__(self, root: str | os.PathLike,
                 split_files: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike] | None = None, *,
                 subset: str = "full", seed: int = 42, splits: Sequence[str] = ("train", "val", "test"),
                 photometry: str | os.PathLike | None = None, spectra_dir: str | os.PathLike | None = None,
                 lc_prefix: str | None = None, allow_unknown_class: bool = False):
        self.root = Path(root)
        self.subset, self.seed = subset, seed
        self.allow_unknown_class = allow_unknown_class
        if split_files is None:
            files = {s: self.root / "splits" / subset / str(seed) / f"{s}.csv" for s in splits}
        elif isinstance(split_files, Mapping):
            files = {str(k): self._abs(v) for k, v in split_files.items()}
        else:
            files = {}
            for v in split_files:
                p = self._abs(v)
                files[p.stem] = p
        self.split_files: dict[str, Path] = files
        # Published split memberships that ingestion keeps (data/split_files.py), when the layout has them.
        self.splits_dir: Path | None = self.root / "splits" if (self.root / "splits").is_dir() else None
        self.spectra_dir = self._abs(spectra_dir) if spectra_dir is not None else self.root / "spectra"
        self._lc = _LcContainer(self._find_photometry(photometry), lc_prefix)
        self._rows: list[_Row] = []
        self._meta = np.zeros((0, len(META_COLUMNS)))  # parsed at construction: no per-row strings kept
        self._aux = np.zeros((0, len(AUX_COLUMNS)))
        self._value_errors: dict[int, str] = {}  # row index -> "column 'x': not a number: 'y'"
        self._load_catalogues()

    # -- construction ---------------------------------------------------------------------------------------
    def _abs(self, p: str | os.PathLike) -> Path:
        p = Path(p)
        return p if p.is_absolute() else self.root / p

    def _find_photometry(self, photometry: str | os.PathLike | None) -> Path:
        if photometry is not None:
            p = self._abs(photometry)
            if not p.exists():
                raise FileNotFoundError(f"light-curve container not found: {p}")
            return p
        for cand in ("photometry.zip", "photometry", "asassnvarlc_vband_complete.zip", "vardb_files"):
            p = self.root / cand
            if p.exists():
                return p if cand != "vardb_files" else self.root
        raise FileNotFoundError(f"no light curves under {self.root}: expected photometry.zip, photometry/, "
                                "asassnvarlc_vband_complete.zip or vardb_files/")

    def _load_catalogues(self) -> None:
        seen: dict[int, str] = {}
        metas: list[np.ndarray] = []
        auxs: list[np.ndarray] = []
        for ci, (split, path) in enumerate(self.split_files.items()):
            if not path.is_file():
                raise BadInputError("*", str(path), "catalogue CSV not found")
            header, rows = _read_csv_rows(path)
            col = {h: i for i, h in enumerate(header)}

            def pick(aliases: Sequence[str], what: str) -> int:
                for a in aliases:
                    if a in col:
                        return col[a]
                raise BadInputError("*", str(path), f"missing column {aliases[0]!r} ({what}; also accepted: "
                                                    f"{list(aliases[1:])}) in the CSV header")

            i_id = pick(LC_ID_COLUMNS, "Gaia EDR3 source id")
            i_t = pick(LC_TARGET_COLUMNS, "class")
            i_n = pick(LC_NAME_COLUMNS, "ASAS-SN light-curve name")
            i_s = pick((SPEC_FILE_COLUMN,), "LAMOST file name")
            missing = [c for c in (*META_COLUMNS, *AUX_COLUMNS) if c not in col]
            if missing:
                raise BadInputError("*", str(path), f"missing column {missing[0]!r} in the CSV header"
                                                    + (f" (and {missing[1:]})" if len(missing) > 1 else ""))
            i_meta = [col[c] for c in META_COLUMNS]
            i_aux = [col[c] for c in AUX_COLUMNS]
            width = len(header)
            for r_i, r in enumerate(rows):
                where = f"{path}:row {r_i + 2}"
                if len(r) < width:
                    r = r + [""] * (width - len(r))
                try:
                    oid = _parse_object_id(r[i_id])
                except ValueError as exc:
                    raise BadInputError(r[i_id] or "?", where, str(exc)) from None
                if oid in seen:
                    raise BadInputError(oid, where, f"duplicate object id (first seen at {seen[oid]})")
                seen[oid] = where
                k = len(self._rows)
                self._rows.append(_Row(object_id=oid, target=r[i_t].strip(), name=r[i_n].strip(),
                                       spec_filename=r[i_s].strip(), split=split, csv_index=ci, row=r_i))
                metas.append(self._parse_values(k, r, i_meta, META_COLUMNS))
                auxs.append(self._parse_values(k, r, i_aux, AUX_COLUMNS))
        if self._rows:
            self._meta = np.stack(metas)
            self._aux = np.stack(auxs)

    def _parse_values(self, k: int, r: list[str], idx: Sequence[int], names: Sequence[str]) -> np.ndarray:
        out = np.empty(len(idx), dtype=np.float64)
        for j, (i, n) in enumerate(zip(idx, names)):
            try:
                out[j] = _to_float(r[i])
            except ValueError:
                out[j] = math.nan
                self._value_errors.setdefault(k, f"column {n!r}: not a number: {r[i]!r}")
        return out

    # -- RawSource ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES

    @property
    def object_ids(self) -> np.ndarray:
        return np.array([r.object_id for r in self._rows], dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "astrom3_raw",
            "root": str(self.root),
            "subset": self.subset,
            "seed": self.seed,
            "split_files": {k: str(v) for k, v in self.split_files.items()},
            "split_files_sha256": {k: _sha256(v) for k, v in self.split_files.items()},
            "n_objects": len(self),
            "n_per_split": {k: sum(1 for r in self._rows if r.split == k) for k in self.split_files},
            "photometry": self._lc.describe(),
            "spectra_dir": str(self.spectra_dir),
            "allow_unknown_class": self.allow_unknown_class,
        }

    def close(self) -> None:
        self._lc.close()

    def _spectrum_path(self, r: _Row) -> Path:
        cands = [self.spectra_dir / r.split / r.target / r.spec_filename, self.spectra_dir / r.spec_filename]
        for c in cands:
            if c.is_file():
                return c
        # Last resort (e.g. a corrected class): any spectra/<split>/<class>/ directory holding the file.
        for c in sorted(self.spectra_dir.glob(f"*/*/{glob_escape(r.spec_filename)}")):
            if c.is_file():
                return c
        raise BadInputError(r.object_id, str(cands[0]),
                            f"spectrum file {r.spec_filename} not found (looked in {[str(c) for c in cands]})")

    def get(self, index: int) -> RawObject:
        if not -len(self._rows) <= index < len(self._rows):
            raise IndexError(index)
        r = self._rows[index]
        csv_path = self.split_files[r.split]
        where = f"{csv_path}:row {r.row + 2}"
        label = _label_of(r.target, self.allow_unknown_class)
        if label is None:
            raise BadInputError(r.object_id, where, f"unknown class {r.target!r} (known: {list(CLASS_NAMES)})")
        if not r.name:
            raise BadInputError(r.object_id, where, "empty light-curve name")
        if not r.spec_filename:
            raise BadInputError(r.object_id, where, "empty spec_filename")
        if index < 0:
            index += len(self._rows)
        if index in self._value_errors:
            raise BadInputError(r.object_id, where, self._value_errors[index])
        meta = self._meta[index].copy()
        aux = self._aux[index].copy()
        raw, lc_src = self._lc.read(r.name.replace(" ", "") + ".dat", r.object_id)
        lc = read_asassn_dat(raw, r.object_id, source=lc_src)
        spec_path = self._spectrum_path(r)
        wave, flux, ivar = read_lamost_fits(spec_path, r.object_id)
        return RawObject(
            object_id=r.object_id, label=label, lc=lc, spec_wave=wave, spec_flux=flux, spec_ivar=ivar,
            meta=meta, aux=aux, source=f"{where}; {lc_src}; {spec_path}",
            extra={"split": r.split, "name": r.name, "target": r.target, "spec_filename": r.spec_filename,
                   "modalities": MODALITIES},
        )


# ----------------------------------------------------------------------------------------------------------------
# Shared real data sets (light-curve-only and spectrum-only sources)
# ----------------------------------------------------------------------------------------------------------------

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


class ZTFVSXSource(_LongTableSource):
    """The shared ZTF DR3 VSX set (``ztf_vsx_objects.csv`` + ``ztf_vsx_lightcurves_long.csv.gz``) as RawObjects.

    Light-curve only (``extra["modalities"] == ("photo",)``): one band (ZTF r = filter 2 by default), time in
    MJD, flux in mJy from the AB-like zero point (`mag_to_flux_mjy`). Label from ``astrom3_class`` (-1 when
    empty or not an AstroM3 class). Spectrum: empty arrays. Metadata NaN except ``l``, ``b`` (degrees) and
    ``parallax`` = 1000 / ``distance`` (pc) in mas when the distance is positive. Aux: NaN except ``period``
    (days, the catalogue's ``period`` column). Objects follow the catalogue row order; an object with no point
    in the chosen band raises BadInputError from `get`. The long table is read once per process, on first use.
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
        with open(self.objects_path, "r", encoding="utf-8", newline="") as fh:
            self._cat = list(csv.DictReader(fh))
        for c in ("vsx_oid", "astrom3_class", "period", "l", "b", "distance"):
            if self._cat and c not in self._cat[0]:
                raise BadInputError("*", str(self.objects_path), f"missing column {c!r} in the CSV header")
        self._table: LongLightCurves | None = None

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
        lc = self.table.get(oid, self.band)
        if lc.shape[0] == 0:
            raise BadInputError(oid, str(self.lc_path), f"no usable ZTF {self.band}-band points")
        label = _label_of(row.get("astrom3_class", ""), True)
        meta = _nan(len(META_COLUMNS))
        for c in ("l", "b"):
            try:
                meta[META_COLUMNS.index(c)] = _to_float(row.get(c, ""))
            except ValueError:
                pass
        try:
            dist = _to_float(row.get("distance", ""))
        except ValueError:
            dist = math.nan
        if np.isfinite(dist) and dist > 0:
            meta[META_COLUMNS.index("parallax")] = 1000.0 / dist
        aux = _nan(len(AUX_COLUMNS))
        try:
            aux[AUX_COLUMNS.index("period")] = _to_float(row.get("period", ""))
        except ValueError:
            pass
        wave, flux, ivar = _empty_spec()
        return RawObject(object_id=oid, label=int(label), lc=lc, spec_wave=wave, spec_flux=flux, spec_ivar=ivar,
                         meta=meta, aux=aux, source=f"{where}; {self.lc_path} (vsx_oid {oid}, {self.band})",
                         extra={"modalities": ("photo",), "vsx_type": row.get("Type", ""),
                                "name": row.get("Name", ""), "group": row.get("file_group", ""),
                                "astrom3_class": row.get("astrom3_class", ""), "band": self.band,
                                "survey": "ZTF DR3"})


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
    dropped). Label from ``periods.csv`` Type: ab -> RRAB, c -> RRC. Aux: period (days) and amplitude (mag, the
    best-fit template amplitude in that band from ``apj326724t2_mrt.txt`` when present), others NaN. Metadata NaN.
    Objects follow ``periods.csv`` order when it exists, else ascending star number.
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
            with open(self.periods_path, "r", encoding="utf-8", newline="") as fh:
                for r in csv.DictReader(fh):
                    try:
                        num = int(r["Num"])
                    except (KeyError, ValueError):
                        continue
                    try:
                        per = _to_float(r.get("Per", ""))
                    except ValueError:
                        per = math.nan
                    self._periods[num] = ((r.get("Type") or "").strip(), per)
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
        cls = self._TYPES.get(typ.lower(), "")
        label = CLASS_NAMES.index(cls) if cls in CLASS_NAMES else -1
        aux = _nan(len(AUX_COLUMNS))
        aux[AUX_COLUMNS.index("period")] = per
        aux[AUX_COLUMNS.index("amplitude")] = self._amps.get(oid, {}).get(self.band, math.nan)
        wave, flux, ivar = _empty_spec()
        return RawObject(object_id=oid, label=label, lc=lc, spec_wave=wave, spec_flux=flux, spec_ivar=ivar,
                         meta=_nan(len(META_COLUMNS)), aux=aux, source=f"{self.lc_path} (num {oid}, {self.band})",
                         extra={"modalities": ("photo",), "rr_type": typ, "band": self.band,
                                "survey": "SDSS Stripe 82"})


class LamostSampleSource:
    """The shared LAMOST DR1 sample (a directory of FITS, optionally with ``lamost_dr1_sample_index.csv``) as
    spectrum-only RawObjects (``extra["modalities"] == ("spectra",)``), label -1.

    `directory` is the sample directory (holding ``fits/``) or the FITS directory itself; files are ``*.fits`` /
    ``*.fits.gz`` sorted by name. object_id: the LAMOST ``OBJNAME`` when it is an integer (from the index CSV, else
    the header), else the file position. Metadata NaN except ``l``, ``b`` computed from the header RA/Dec. Light
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
        self._ids: list[int] = []
        seen: set[int] = set()
        for i, p in enumerate(self.files):
            name = (self._index.get(p.name) or {}).get("objname", "") or str(_lamost_header(p).get("OBJNAME") or "")
            oid = int(name) if name.strip().isdigit() else i
            if oid in seen:
                oid = i
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
