import numpy as np
import pytest

from astrom3_hpc.core.constants import META_COLUMNS, SPEC_LEN
from astrom3_hpc.data.preprocess import light_curve, mad, metadata, spectrum
from astrom3_hpc.data.raw import BadInputError


def test_light_curve_dedupes_sorts_and_normalises():
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 730.5, 300)
    lc = np.stack([t, rng.normal(5, 2, 300), rng.uniform(0.1, 0.3, 300)], 1)
    lc = np.concatenate([lc, lc[:20]])  # duplicated rows
    values, stats = light_curve(lc[rng.permutation(len(lc))], 7, "x.dat")
    assert values.shape == (300, 3)
    assert np.all(np.diff(values[:, 0]) >= 0) and values[0, 0] == 0 and values[-1, 0] == 1
    m = mad(np.unique(lc, axis=0)[:, 1])
    assert np.isclose(stats[0], np.log10(m), atol=1e-6)
    assert np.isclose(stats[1], (t.max() - t.min()) / 365.0, rtol=1e-5)
    assert abs(values[:, 1].mean()) < 1e-5


def test_light_curve_errors_name_object_and_file():
    with pytest.raises(BadInputError, match=r"object 12 \(a/b.dat\): empty light curve"):
        light_curve(np.zeros((0, 3)), 12, "a/b.dat")
    with pytest.raises(BadInputError, match="object 12"):
        light_curve(np.full((5, 3), np.nan), 12, "a/b.dat")


def test_flat_light_curve_is_guarded():
    lc = np.stack([np.arange(10.0), np.ones(10), np.ones(10)], 1)
    values, stats = light_curve(lc, 1, "f")
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(stats))


def _lamost_like(rng, n=3909):
    wave = 10 ** (np.log10(3700) + np.arange(n) * 1e-4)
    flux = 100 + 10 * np.sin(wave / 300) + rng.normal(0, 1, n)
    ivar = np.full(n, 1.0)
    ivar[1000:1010] = 0
    return wave, flux, ivar


@pytest.mark.parametrize("channel", ["sigma", "ivar"])
def test_spectrum_resampled_to_grid(channel):
    wave, flux, ivar = _lamost_like(np.random.default_rng(1))
    out = spectrum(wave, flux, ivar, 3, "s.fits", channel)
    assert out.shape == (3, SPEC_LEN) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert np.allclose(out[2], out[2, 0])
    if channel == "ivar":
        assert np.isclose(out[1, 100] * 10 ** out[2, 0], 1.0, rtol=1e-4)  # ivar 1 / MAD


def test_sigma_channel_zeroes_exactly_the_grid_points_of_a_masked_stretch():
    """The gap widths were interpolated between neighbouring intervals, so the width ramped across a gap's edges:
    the first grid points inside it kept values interpolated across it, and the first observed pixels after it
    were zeroed."""
    from astrom3_hpc.data.preprocess import spectrum_grid

    grid = spectrum_grid()
    wave = np.arange(3800.0, 9050.0, 1.0)
    flux = 100 + 10 * np.sin(wave / 300) + np.random.default_rng(2).normal(0, 1, len(wave))
    ivar = np.ones_like(wave)
    ivar[(wave > 5000) & (wave < 5200)] = 0  # observed 5000 and 5200, nothing between
    out = spectrum(wave, flux, ivar, 3, "s.fits", "sigma")
    inside = (grid > 5000) & (grid < 5200)
    assert inside.sum() > 90 and np.all(out[1, inside] == 0)
    assert np.all(out[1, ~inside] != 0)  # the gap's observed edges and every other point keep their error


def test_flat_spectrum_and_no_overlap_are_bad_input():
    wave, flux, ivar = _lamost_like(np.random.default_rng(1))
    with pytest.raises(BadInputError, match=r"object 9 \(s.fits\): flat spectrum"):
        spectrum(wave, np.full_like(flux, 3.0), ivar, 9, "s.fits")
    with pytest.raises(BadInputError, match="does not overlap"):
        spectrum(wave + 20000, flux, ivar, 9, "s.fits")


def test_metadata_transforms_and_nan_names_the_column():
    meta = np.full(len(META_COLUMNS), 10.0)
    i = META_COLUMNS.index
    meta[i("parallax")] = 2.0
    meta[i("l")] = 90.0
    meta[i("b")] = 30.0
    out = metadata(meta, 5, "cat.csv")
    assert np.isclose(out[i("phot_g_mean_mag")], 10 - 10 + 5 * np.log10(2.0))
    assert np.isclose(out[i("l")], 0.0, atol=1e-6) and np.isclose(out[i("b")], 0.5)
    assert out[i("pmra")] == 10.0
    meta[i("parallax")] = -0.5  # reference: parallax <= 0 counts as 1 mas
    assert np.isclose(metadata(meta, 5, "c")[i("mean_vmag")], 0.0)
    meta[i("w3_mag")] = np.nan
    with pytest.raises(BadInputError, match=r"object 5 \(cat.csv\).*w3_mag"):
        metadata(meta, 5, "cat.csv")


# Spec section 1: "the 11 magnitudes (mean_vmag, G, BP, RP, J, H, K, W1-W4) become absolute magnitudes".
SPEC_ABS_MAGS = ("mean_vmag", "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag", "j_mag", "h_mag", "k_mag",
                 "w1_mag", "w2_mag", "w3_mag", "w4_mag")


def test_every_magnitude_the_spec_names_becomes_absolute_and_nothing_else_does():
    """Catches a magnitude left out of ABS_MAG_COLUMNS (w4_mag dropped passed a test of two columns) or a
    colour or error transformed as if it were one: each column gets its own value, so a transform on the
    wrong column shows."""
    from astrom3_hpc.core.constants import ABS_MAG_COLUMNS

    assert ABS_MAG_COLUMNS == SPEC_ABS_MAGS
    meta = 11.0 + np.arange(len(META_COLUMNS)) / 10
    i = META_COLUMNS.index
    meta[i("parallax")], meta[i("l")], meta[i("b")] = 4.0, 60.0, -30.0
    out = metadata(meta, 1, "cat.csv").astype(np.float64)
    for j, name in enumerate(META_COLUMNS):
        if name in SPEC_ABS_MAGS:  # M = m - 10 + 5 log10(4 mas) = m - 6.9897
            assert out[j] == pytest.approx(meta[j] - 6.98970004, abs=1e-5), name
        elif name == "l":
            assert out[j] == pytest.approx(0.5, abs=1e-6)
        elif name == "b":
            assert out[j] == pytest.approx(-0.5, abs=1e-6)
        else:
            assert out[j] == pytest.approx(meta[j], abs=1e-5), name


def test_lafler_kinman_does_not_depend_on_the_time_origin():
    """Catches the open string (the wrap-around pair left out): the pair it missed was the one the time origin cut,
    so a noiseless sawtooth at its true period gave 0.00027 or 0.041 by where t = 0 fell (MJD or JD input, or the
    baseline's times from each object's first epoch), and a Stripe 82 RR Lyrae's value moved 9.7x."""
    from astrom3_hpc.data.preprocess import lafler_kinman

    rng = np.random.default_rng(0)
    period = 0.61
    t = np.sort(rng.uniform(0, 900, 300))
    y = np.mod(t, period) / period  # a sawtooth
    values = [lafler_kinman(t + shift, y, period) for shift in (0.0, period / 2, period / 3, 58000.0, 2400000.5)]
    assert max(values) - min(values) < 1e-9, values
    assert values[0] < 0.05 < lafler_kinman(t, y, period * 1.37)  # still small at the period, large off it
