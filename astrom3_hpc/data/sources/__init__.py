"""Raw sources: readers for real survey files, producing `RawObject`s (spec section 1, "Raw inputs per object").

One module per source; each raises `BadInputError(object_id, file, reason)` on missing, corrupt or empty input.

Low-level readers:

- `asassn.read_asassn_dat(path_or_bytes, object_id)` -> (n, 3) float64 [HJD, FLUX, FLUX_ERR] from an ASAS-SN
  V-band ``.dat`` file (whitespace text, 2 header rows, columns HJD MAG MAG_ERR FLUX FLUX_ERR, flux in mJy).
- `lamost.read_lamost_fits(path, object_id)` -> (wave, flux, ivar) float64 from a LAMOST LRS spectrum, either
  layout (single primary (5, N) image with COEFF0/COEFF1, or the DR5+ binary table in HDU 1 with
  FLUX/IVAR/WAVELENGTH).
- `ztf_vsx.read_ztf_vsx_long(path)` / `stripe82.read_stripe82_long(path)` -> `long_table.LongLightCurves`: a long
  (one row per epoch) CSV read once and grouped by object with numpy; `LongLightCurves.get(oid, band)` gives
  (n, 3) [MJD, flux, flux_err] with magnitudes converted by `common.mag_to_flux_mjy` (AB-like zero point:
  flux = 3631e3 * 10**(-0.4 mag) mJy, flux_err = flux * magerr * ln(10) / 2.5).

Sources implementing `raw.RawSource` (`__len__`, `get(i)`, `describe()`, `class_names()`):

- `astrom3_raw.AstroM3RawSource`: the published AstroM3 raw layout (documented there), all three modalities.
- `ztf_vsx.ZTFVSXSource`: the shared ZTF DR3 light curves of VSX variables, light-curve only.
- `stripe82.Stripe82RRLyraeSource`: the shared SDSS Stripe 82 RR Lyrae light curves, light-curve only.
- `lamost.LamostSampleSource`: the shared LAMOST DR1 spectra, spectrum only.

Single-modality sources fill the modalities they lack with empty arrays (lc (0, 3), spectrum length 0) and NaN
(metadata, aux) and say which modalities they carry in ``extra["modalities"]`` (a tuple of "photo", "spectra",
"meta"); ingestion decides what to do with them.
"""

from .asassn import ASASSN_DAT_COLUMNS, read_asassn_dat
from .astrom3_raw import (
    LC_ID_COLUMNS, LC_NAME_COLUMNS, LC_TARGET_COLUMNS, SPEC_FILE_COLUMN, AstroM3RawSource,
)
from .common import AB_ZERO_POINT_MJY, MODALITIES, icrs_to_galactic, mag_to_flux_mjy
from .lamost import LamostSampleSource, read_lamost_fits
from .long_table import ZTF_FILTERS, LongLightCurves
from .stripe82 import Stripe82RRLyraeSource, read_stripe82_long
from .ztf_vsx import ZTFVSXSource, read_ztf_vsx_long

__all__ = [
    "ASASSN_DAT_COLUMNS", "AB_ZERO_POINT_MJY", "ZTF_FILTERS", "MODALITIES",
    "read_asassn_dat", "read_lamost_fits", "mag_to_flux_mjy", "icrs_to_galactic",
    "LongLightCurves", "read_ztf_vsx_long", "read_stripe82_long",
    "AstroM3RawSource", "ZTFVSXSource", "Stripe82RRLyraeSource", "LamostSampleSource",
    "LC_ID_COLUMNS", "LC_NAME_COLUMNS", "LC_TARGET_COLUMNS", "SPEC_FILE_COLUMN",
]
