"""Helpers every raw source shares: empty modalities, magnitudes -> flux, ICRS -> Galactic, catalogue cells."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from astrom3_hpc.core.constants import CLASS_NAMES, MODALITIES  # noqa: F401 - sources import it from here

AB_ZERO_POINT_MJY = 3631e3  # 3631 Jy in mJy
# Survey "no measurement" values (SDSS writes magnitude 99.999, error 9.999): a row at or beyond either is dropped.
MAG_SENTINEL = 90.0
ERR_SENTINEL = 9.0


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



# How catalogue exports spell an empty cell (pandas writes NaN as "nan" or "NA", astropy masked values as "--").
MISSING_SPELLINGS = ("", "nan", "none", "null", "na", "--")


def is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING_SPELLINGS


def _to_float(s: str) -> float:
    s = s.strip()
    if is_missing(s):
        return math.nan
    return float(s)


class NotANumber(ValueError):
    """A cell of a row that `cell_numbers` cannot read; `index` is its position in the cells given."""

    def __init__(self, index: int, cell: str):
        super().__init__(f"{cell!r} is not a number")
        self.index, self.cell = index, cell


def cell_numbers(cells: list[str]) -> list[float]:
    """The cells as floats, empty or NaN-like ones as NaN (a missing number, not a bad one); the first cell that
    is not a number raises NotANumber naming it, so a reader can name the column and line."""
    out = []
    for i, cell in enumerate(cells):
        try:
            out.append(_to_float(cell))
        except ValueError:
            raise NotANumber(i, cell) from None
    return out



def _label_of(name: str, allow_unknown: bool) -> int | None:
    name = name.strip()
    if name in CLASS_NAMES:
        return CLASS_NAMES.index(name)
    return -1 if allow_unknown else None
