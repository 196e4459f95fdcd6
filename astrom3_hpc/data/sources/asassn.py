"""ASAS-SN V-band light curves: the ``.dat`` file reader."""

from __future__ import annotations

import gzip
import io
import os
import warnings
from typing import Any

import numpy as np

from astrom3_hpc.data.raw import BadInputError

from .common import _empty_lc, _src

ASASSN_DAT_COLUMNS: tuple[str, ...] = ("HJD", "MAG", "MAG_ERR", "FLUX", "FLUX_ERR")


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
