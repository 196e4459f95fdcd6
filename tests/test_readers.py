"""Readers for real survey files (astrom3_hpc.data.sources): real shared data plus fixtures in the exact formats."""

from __future__ import annotations

import csv
import gzip
import math
import pickle
import re
import shutil

import numpy as np
import pytest

from astrom3_hpc.core.constants import AUX_COLUMNS, CLASS_NAMES, META_COLUMNS
from astrom3_hpc.data.raw import BadInputError, RawObject
from astrom3_hpc.data.sources.tables import TableError
from conftest import IN_CI, REALDATA
from astrom3_hpc.data.sources import (
    LamostSampleSource, Stripe82RRLyraeSource, ZTFVSXSource, icrs_to_galactic, mag_to_flux_mjy,
    read_asassn_dat, read_lamost_fits, read_stripe82_long, read_ztf_vsx_long,
)

try:
    from tests import fixtures_raw as fx
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    import fixtures_raw as fx

assert_names = fx.assert_names
REAL = REALDATA
LAMOST_DIR = REAL / "lamost_dr1_sample"
ZTF_DIR = REAL / "ztf_vsx"
S82_DIR = REAL / "sesar2010_rrlyrae"

# Outside CI a checkout without the shared samples skips these; in CI they must run (and fail if data is missing).
needs_lamost = pytest.mark.skipif(not IN_CI and not (LAMOST_DIR / "fits").is_dir(),
                                  reason="shared LAMOST sample not present")
needs_ztf = pytest.mark.skipif(not IN_CI and not ZTF_DIR.is_dir(), reason="shared ZTF VSX data not present")
needs_s82 = pytest.mark.skipif(not IN_CI and not S82_DIR.is_dir(), reason="shared Stripe 82 data not present")


# ----------------------------------------------------------------------------------------------------------------
# ASAS-SN .dat
# ----------------------------------------------------------------------------------------------------------------

def test_asassn_dat_round_trip_path_bytes_and_gzip(tmp_path):
    rng = np.random.default_rng(1)
    rows = fx.make_asassn_rows(rng, n=80)
    p = fx.write_asassn_dat(tmp_path / "ASASSN-VJ000001.00+000001.0.dat", rows)
    lc = read_asassn_dat(p, 7)
    assert lc.dtype == np.float64 and lc.shape == (80, 3)
    np.testing.assert_array_equal(lc, rows[:, [0, 3, 4]])
    np.testing.assert_array_equal(read_asassn_dat(p.read_bytes(), 7, source="x.zip:a.dat"), lc)
    np.testing.assert_array_equal(read_asassn_dat(gzip.compress(p.read_bytes()), 7), lc)


def test_asassn_dat_drops_bad_rows_keeps_order():
    text = ("header one\nheader two\n"
            "2458000.1 13.1 0.02 10.5 0.2\n"
            "2458000.2 >17.5 99.99 0.1 0.3\n"  # MAG upper limit: flux still usable
            "2458000.3 13.2 0.02 nan 0.2\n"  # non-finite flux
            "2458000.4 13.3 0.02\n"  # short row
            "2458000.5 13.4 0.02 abc 0.2\n"  # unparsable
            "# a comment\n"
            "2457999.9 13.0 0.02 11.0 inf\n"  # non-finite error
            "2457999.8 13.0 0.02 11.5 0.25 extra\n")  # extra column tolerated
    lc = read_asassn_dat(text.encode(), 1)
    np.testing.assert_array_equal(lc, [[2458000.1, 10.5, 0.2], [2458000.2, 0.1, 0.3], [2457999.8, 11.5, 0.25]])


def test_asassn_dat_errors_name_object_and_file(tmp_path):
    with pytest.raises(BadInputError) as e:
        read_asassn_dat(tmp_path / "nope.dat", 123456789)
    assert_names(e.value, 123456789, "nope.dat", "not found")
    p = fx.write_empty_dat(tmp_path / "empty.dat")
    with pytest.raises(BadInputError) as e:
        read_asassn_dat(p, 42)
    assert_names(e.value, 42, "empty.dat", "empty light curve")
    with pytest.raises(BadInputError) as e:
        read_asassn_dat(b"h\nh\nfoo bar baz qux quux\n", 5, source="photometry.zip:vardb_files/X.dat")
    assert_names(e.value, 5, "photometry.zip:vardb_files/X.dat", "empty light curve")


# ----------------------------------------------------------------------------------------------------------------
# LAMOST FITS: the real DR1 sample
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lamost_files():
    files = sorted((LAMOST_DIR / "fits").glob("*.fits"))
    return files


@needs_lamost
def test_real_lamost_sample_all_files_match_direct_astropy_read(lamost_files):
    from astropy.io import fits

    assert len(lamost_files) == 176
    wmin, wmax, n_zero_ivar = np.inf, -np.inf, 0
    for f in lamost_files:
        wave, flux, ivar = read_lamost_fits(f, f.name)
        assert wave.dtype == flux.dtype == ivar.dtype == np.float64
        assert wave.shape == flux.shape == ivar.shape == (3904,)
        assert np.all(np.diff(wave) > 0) and np.all(ivar >= 0)
        with fits.open(f, memmap=False) as h:
            d = h[0].data
            c0, c1 = h[0].header["COEFF0"], h[0].header["COEFF1"]
        np.testing.assert_array_equal(flux, d[0].astype(np.float64))
        np.testing.assert_array_equal(ivar, d[1].astype(np.float64))
        np.testing.assert_allclose(wave, 10 ** (c0 + np.arange(d.shape[1]) * c1), rtol=1e-12)
        wmin, wmax = min(wmin, wave[0]), max(wmax, wave[-1])
        n_zero_ivar += int((ivar == 0).sum())
    assert 3699.0 < wmin < 3701.0 and 9080.0 < wmax < 9090.0
    assert n_zero_ivar > 0  # masked pixels carry ivar 0


@needs_lamost
@pytest.mark.parametrize("per_pixel", [False, True])
def test_table_layout_equals_image_layout(tmp_path, lamost_files, per_pixel):
    from astropy.io import fits

    src = lamost_files[3]
    with fits.open(src, memmap=False) as h:
        d, hdr = h[0].data.astype(np.float32), h[0].header
    spec = {"coeff0": hdr["COEFF0"], "coeff1": hdr["COEFF1"], "n_pix": d.shape[1], "flux": d[0], "ivar": d[1],
            "norm": d[2], "andmask": d[3], "ormask": d[4],
            "wave": 10 ** (hdr["COEFF0"] + np.arange(d.shape[1]) * hdr["COEFF1"])}
    table = fx.write_lamost_fits_table(tmp_path / "dr5.fits", spec, per_pixel=per_pixel)
    image = fx.write_lamost_fits_image(tmp_path / "dr1.fits.gz", spec)
    w_t, f_t, i_t = read_lamost_fits(table, 1)
    w_i, f_i, i_i = read_lamost_fits(image, 1)
    w_0, f_0, i_0 = read_lamost_fits(src, 1)
    np.testing.assert_array_equal(f_t, f_i)
    np.testing.assert_array_equal(i_t, i_i)
    np.testing.assert_array_equal(f_i, f_0)
    np.testing.assert_array_equal(w_i, w_0)
    np.testing.assert_allclose(w_t, w_i, rtol=1e-7)  # the table stores wavelength as float32, like DR5+


def test_lamost_fixture_both_layouts_read_as_expected(tmp_path):
    spec = fx.make_lamost_spectrum(np.random.default_rng(3), n_pix=500)
    for layout, path in (("image", fx.write_lamost_fits_image(tmp_path / "a.fits", spec)),
                         ("table", fx.write_lamost_fits_table(tmp_path / "b.fits", spec))):
        got = read_lamost_fits(path, 9)
        for g, want in zip(got, fx.expected_spectrum(spec, layout)):
            np.testing.assert_array_equal(g, want)
    assert (got[2] == 0).sum() >= 5
    gz = fx.write_lamost_fits_image(tmp_path / "c.fits.gz", spec)
    for g, want in zip(read_lamost_fits(gz.read_bytes(), 9, source="x.zip:c.fits.gz"),
                       fx.expected_spectrum(spec, "image")):
        np.testing.assert_array_equal(g, want)


def test_lamost_masks_non_finite_pixels(tmp_path):
    spec = fx.make_lamost_spectrum(np.random.default_rng(4), n_pix=200, mask_frac=0.0)
    spec["flux"][10] = np.nan
    spec["ivar"][11] = -1.0
    spec["ivar"][12] = np.inf
    wave, flux, ivar = read_lamost_fits(fx.write_lamost_fits_image(tmp_path / "m.fits", spec), 1)
    assert flux[10] == 0 and ivar[10] == 0 and ivar[11] == 0 and ivar[12] == 0 and flux[12] == 0
    assert np.all(np.isfinite(flux)) and np.all(ivar[13:] > 0)


@needs_lamost
def test_lamost_bad_inputs_raise_naming_the_file(tmp_path, lamost_files):
    cases = {
        "missing.fits": None,
        "garbage.fits": lambda p: fx.write_garbage(p),
        "truncated.fits": lambda p: fx.write_truncated_copy(lamost_files[0], p),
        "tiny.fits": lambda p: fx.write_truncated_copy(lamost_files[0], p, keep_fraction=0.01),
        "truncated.fits.gz": lambda p: (fx.write_lamost_fits_image(
            p, fx.make_lamost_spectrum(np.random.default_rng(0))), fx.write_truncated_copy(p))[-1],
    }
    for name, make in cases.items():
        p = tmp_path / name
        if make is not None:
            make(p)
        with pytest.raises(BadInputError) as e:
            read_lamost_fits(p, 987654321)
        assert_names(e.value, 987654321, name)
    with pytest.raises(BadInputError, match="truncated"):
        read_lamost_fits(tmp_path / "truncated.fits", 1)
    from astropy.io import fits  # a FITS file that is not a spectrum
    fits.PrimaryHDU(data=np.zeros(10, np.float32)).writeto(tmp_path / "vec.fits")
    with pytest.raises(BadInputError, match="not a .5, N. spectrum image"):
        read_lamost_fits(tmp_path / "vec.fits", 1)
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="FLUX", format="E", array=np.ones(4, np.float32))])]).writeto(tmp_path / "t.fits")
    with pytest.raises(BadInputError, match="IVAR"):
        read_lamost_fits(tmp_path / "t.fits", 1)


@needs_lamost
def test_lamost_sample_source():
    src = LamostSampleSource(LAMOST_DIR)
    assert len(src) == 176 and src.class_names() == CLASS_NAMES
    assert len({src.get(i).object_id for i in (0, 1, 2)}) == 3
    o = src.get(0)
    assert isinstance(o, RawObject) and o.label == -1 and o.extra["modalities"] == ("spectra",)
    assert o.object_id == 258151458599632  # objname of spec-55862-B6212_sp06-003.fits
    assert o.lc.shape == (0, 3) and o.meta.shape == (34,) and o.aux.shape == (4,) and np.isnan(o.aux).all()
    from astropy.coordinates import SkyCoord
    g = SkyCoord(ra=99.316263, dec=27.23237, unit="deg", frame="icrs").galactic
    assert abs(o.meta[META_COLUMNS.index("l")] - g.l.deg) < 1e-3
    assert abs(o.meta[META_COLUMNS.index("b")] - g.b.deg) < 1e-3
    assert np.isnan(o.meta[META_COLUMNS.index("parallax")])
    assert src.describe()["n_objects"] == 176


@pytest.mark.parametrize("objnames, want", [(["2", "Null", "Null"], [2, 1, 3]),   # position 2 is file 0's OBJNAME
                                             (["Null", "0", "0"], [3, 0, 2]),  # position 0 is a later file's OBJNAME
                                             (["7", "7", "Null"], [7, 1, 2])])
def test_lamost_fallback_ids_never_take_another_files_id(tmp_path, objnames, want):
    """Files without an integer OBJNAME (or repeating one) take their position, or an id beyond every OBJNAME
    and position where that is another file's: the third of (2, Null, Null) took 2, a second object of id 2."""
    from astropy.io import fits

    files = sorted(p for p in (LAMOST_DIR / "fits").iterdir() if p.name.endswith(".fits"))[:3]
    for i, (p, name) in enumerate(zip(files, objnames)):
        with fits.open(p) as h:
            h[0].header["OBJNAME"] = name
            h.writeto(tmp_path / f"spec-{i}.fits")
    src = LamostSampleSource(tmp_path)
    assert [src.get(i).object_id for i in range(3)] == want


def test_icrs_to_galactic_known_points():
    lon, lat = icrs_to_galactic(266.40498829, -28.93617776)  # Sgr A* region: the Galactic centre
    assert abs(((lon + 180) % 360) - 180) < 0.1 and abs(lat) < 0.1
    lon, lat = icrs_to_galactic(192.85948, 27.12825)  # north Galactic pole
    assert lat > 89.99


# ----------------------------------------------------------------------------------------------------------------
# ZTF VSX and Stripe 82 long tables
# ----------------------------------------------------------------------------------------------------------------

def test_mag_to_flux():
    flux, err = mag_to_flux_mjy(np.array([16.4, 0.0]), np.array([0.1, 0.0]))
    assert abs(flux[0] - 3631e3 * 10 ** (-0.4 * 16.4)) < 1e-12 and abs(flux[1] - 3631e3) < 1e-6
    assert abs(err[0] - flux[0] * 0.1 * math.log(10) / 2.5) < 1e-15


@needs_ztf
def test_ztf_long_table_grouping():
    tab = read_ztf_vsx_long(ZTF_DIR / "ztf_vsx_lightcurves_long.csv.gz")
    assert len(tab) == 439 and tab.n_rows_file == 578494
    assert set(tab.band_names) == {"g", "r", "i"}
    assert sum(tab.count(o, "r") for o in tab.object_ids) + sum(tab.count(o, "g") for o in tab.object_ids) \
        + sum(tab.count(o, "i") for o in tab.object_ids) == 578494 - tab.n_dropped
    oid = 636161  # first object in the file: its first r-band row is (58197.43081, 13.95, 0.011)
    m = tab.get_mag(oid, 2)
    np.testing.assert_array_equal(m[0], [58197.43081, 13.95, 0.011])
    lc = tab.get(oid, "r")
    f, e = mag_to_flux_mjy(13.95, 0.011)
    np.testing.assert_allclose(lc[0], [58197.43081, f, e], rtol=1e-14)


@needs_ztf
def test_ztf_source():
    src = ZTFVSXSource(ZTF_DIR)
    assert len(src) == 439
    labels = [src.get(i).label for i in range(len(src))]
    counts = {CLASS_NAMES[k]: labels.count(k) for k in set(labels) if k >= 0}
    assert counts == {"RRAB": 151, "RRC": 47, "HADS": 35, "DSCT": 8, "EW": 1, "EB": 1}
    assert labels.count(-1) == 439 - 243
    o = src.get(0)
    with open(ZTF_DIR / "ztf_vsx_objects.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert o.object_id == int(row["vsx_oid"]) and o.extra["modalities"] == ("photo",)
    assert o.spec_wave.size == o.spec_flux.size == o.spec_ivar.size == 0
    assert o.lc.ndim == 2 and o.lc.shape[1] == 3 and o.lc.shape[0] > 100
    assert o.meta[META_COLUMNS.index("parallax")] == pytest.approx(1000 / float(row["distance"]))
    assert o.meta[META_COLUMNS.index("l")] == pytest.approx(float(row["l"]))
    assert o.aux[AUX_COLUMNS.index("period")] == pytest.approx(float(row["period"]))
    assert np.isnan(o.meta[META_COLUMNS.index("ruwe")]) and np.isnan(o.aux[AUX_COLUMNS.index("rfr_score")])
    g = ZTFVSXSource(ZTF_DIR, band="g").get(0)
    assert g.lc.shape[0] != o.lc.shape[0]
    clone = pickle.loads(pickle.dumps(src))  # the long table is not pickled: re-read on first use
    assert clone._table is None


@needs_s82
def test_stripe82_grouping_and_source():
    tab = read_stripe82_long(S82_DIR / "sesar2010_rrlyrae_lightcurves.csv.gz")
    assert len(tab) == 483
    assert 0 < tab.n_dropped < 1000  # SDSS 99.999 sentinels
    med = np.median([tab.count(o, "r") for o in tab.object_ids])
    assert 50 <= med <= 65
    src = Stripe82RRLyraeSource(S82_DIR, band="g")
    assert len(src) == 483
    labels = [src.get(i).label for i in range(len(src))]
    assert set(labels) == {CLASS_NAMES.index("RRAB"), CLASS_NAMES.index("RRC")}
    o = src.get(0)
    assert o.object_id == 4099 and o.aux[AUX_COLUMNS.index("period")] == pytest.approx(0.641754351271)
    assert o.extra["modalities"] == ("photo",) and np.all(o.lc[:, 1] > 0)


def _write(path, text):
    path.write_text(text)
    return path


ZTF_HEADER = "vsx_oid,filter,mjd,mag,magerr\n"


def test_ztf_long_table_rows_dropped_and_refused(tmp_path):
    ok = _write(tmp_path / "ok.csv", ZTF_HEADER + "7,2,58000.1,14.0,0.01\n7,2,58001.2,,0.01\n7,2,58002.3,14.1,0\n"
                "7,2,58003.4,99.999,9.999\n7,1,58004.5,14.3,0.02\n")
    tab = read_ztf_vsx_long(ok)  # an empty cell, a zero error, a sentinel: dropped, counted
    assert tab.n_dropped == 3 and tab.count(7, "r") == 1 and tab.count(7, "g") == 1
    cases = {
        "mag": (ZTF_HEADER + "7,2,58000.1,14.0,0.01\n7,2,58001.2,bright,0.01\n",
                "bad.csv:3: column 'mag' holds 'bright'"),
        "short": (ZTF_HEADER + "7,2,58000.1,14.0\n", "bad.csv:2: 4 cells, expected at least 5"),
        "filter": (ZTF_HEADER + "7,2,58000.1,14.0,0.01\n8,4,58001.2,14.0,0.01\n", "filter 4 (vsx_oid 8, mjd 58001.2)"),
    }
    for what, (text, message) in cases.items():
        with pytest.raises(TableError, match=re.escape(message)):  # never a row silently left out
            read_ztf_vsx_long(_write(tmp_path / "bad.csv", text))


@needs_ztf
def test_ztf_objects_bad_cells_are_the_objects_errors(tmp_path):
    shutil.copy(ZTF_DIR / "ztf_vsx_lightcurves_long.csv.gz", tmp_path)
    with open(ZTF_DIR / "ztf_vsx_objects.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[0]["astrom3_class"], rows[1]["period"] = "RR Lyrae", "0.5d"
    with open(tmp_path / "ztf_vsx_objects.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        fh.write(",".join(list(rows[3].values())[:3]) + "\n")  # a row cut short (it crashed the reader)
        fh.write(",".join(rows[4].values()) + ",1,2\n")  # and one with two cells too many
    src = ZTFVSXSource(tmp_path)
    with pytest.raises(BadInputError) as e:
        src.get(0)
    assert_names(e.value, rows[0]["vsx_oid"], "ztf_vsx_objects.csv:row 2", "astrom3_class 'RR Lyrae'")
    with pytest.raises(BadInputError) as e:
        src.get(1)
    assert_names(e.value, rows[1]["vsx_oid"], "ztf_vsx_objects.csv:row 3", "column 'period' holds '0.5d'")
    assert src.get(2).object_id == int(rows[2]["vsx_oid"])  # the others still read
    n = len(rows[0])
    for i, cells in ((len(rows), 3), (len(rows) + 1, n + 2)):
        with pytest.raises(BadInputError) as e:  # the object's error: --on-error skip can step over it
            src.get(i)
        assert_names(e.value, rows[i - len(rows) + 3]["vsx_oid"], f"ztf_vsx_objects.csv:row {i + 2}",
                     f"{cells} cells, expected {n} (the header's)")


def test_stripe82_malformed_rows_and_types_refused(tmp_path):
    lc = "num,time,mag,magerr,band\n1,51000.1,17.0,0.02,r\n1,51001.2,17.1,0.02,r\n2,51000.1,16.0,0.02,r\n"
    _write(tmp_path / "lc.csv", lc)
    _write(tmp_path / "periods.csv", "Num,Type,Per\n1,ab,0.55\n2,d,0.40\n")
    src = Stripe82RRLyraeSource(tmp_path, lc_csv="lc.csv")
    assert src.get(0).label == CLASS_NAMES.index("RRAB")
    with pytest.raises(BadInputError) as e:
        src.get(1)
    assert_names(e.value, 2, "periods.csv", "Type 'd'")
    for text, message in (("1,51002.3,17.2,0.02,V\n", "lc.csv:5: band 'V' is none of u, g, r, i, z"),
                          ("x1,51002.3,17.2,0.02,r\n", "lc.csv:5: num 'x1' is not an integer"),
                          ("1,51002.3,faint,0.02,r\n", "lc.csv:5: time, mag, magerr")):
        _write(tmp_path / "lc.csv", lc + text)
        with pytest.raises(TableError, match=re.escape(message)):
            Stripe82RRLyraeSource(tmp_path, lc_csv="lc.csv")
    _write(tmp_path / "lc.csv", lc)
    _write(tmp_path / "periods.csv", "Num,Type,Per\n1,ab,0.55\n1,c,0.30\n")
    with pytest.raises(TableError, match=re.escape("periods.csv:3: star 1 listed twice")):
        Stripe82RRLyraeSource(tmp_path, lc_csv="lc.csv")
