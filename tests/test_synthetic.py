"""The synthetic survey generator: determinism, class counts, record shapes, planted defects, options."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from astrom3_hpc.core.constants import CLASS_COUNTS, CLASS_NAMES, META_COLUMNS
from astrom3_hpc.data.raw import RawObject
from astrom3_hpc.data.synthetic import (
    LAMOST_NPIX,
    UNSEEN_CLASSES,
    SyntheticSource,
    proportional_counts,
    synthetic_object_id,
)

MC = {c: k for k, c in enumerate(META_COLUMNS)}


def _same(a: RawObject, b: RawObject) -> bool:
    arrays = ("lc", "spec_wave", "spec_flux", "spec_ivar", "meta", "aux")
    return (a.object_id == b.object_id and a.label == b.label and a.extra == b.extra
            and all(np.array_equal(getattr(a, k), getattr(b, k), equal_nan=True) for k in arrays))


@pytest.fixture(scope="module")
def sample() -> list[RawObject]:
    src = SyntheticSource(21440, seed=11, missing_rate=0.0)
    return [src.get(i) for i in range(0, 21440, 268)]  # 80 objects spread over the permutation


def test_same_seed_and_index_give_identical_objects():
    a = SyntheticSource(500, seed=3).get(17)
    b = SyntheticSource(500, seed=3).get(17)
    assert _same(a, b)
    c = SyntheticSource(500, seed=4).get(17)
    assert not np.array_equal(a.spec_flux, c.spec_flux)
    assert a.object_id != c.object_id


def test_get_is_independent_of_access_order_and_of_ranges():
    n = 60
    forward = SyntheticSource(n, seed=5)
    backward = SyntheticSource(n, seed=5)
    objs_f = [forward.get(i) for i in range(n)]
    objs_b = [backward.get(i) for i in reversed(range(n))][::-1]
    assert all(_same(a, b) for a, b in zip(objs_f, objs_b))
    # Two "ranks" taking halves of the index range reproduce the single-process data.
    r0, r1 = SyntheticSource(n, seed=5), SyntheticSource(n, seed=5)
    split = [r0.get(i) for i in range(0, n // 2)] + [r1.get(i) for i in range(n // 2, n)]
    assert all(_same(a, b) for a, b in zip(objs_f, split))


def test_class_counts_match_the_paper_exactly_for_21440():
    src = SyntheticSource(21440, seed=0)
    counts = np.bincount(src.labels(), minlength=len(CLASS_NAMES))
    assert counts.tolist() == [CLASS_COUNTS[c] for c in CLASS_NAMES]
    assert src.describe()["drawn_counts"] == dict(CLASS_COUNTS)
    # labels() is what get() returns, and the assignment is a permutation, not blocks.
    lab = src.labels()
    for i in (0, 1, 2, 5000, 21439):
        assert src.get(i).label == lab[i]
    assert len(set(lab[:50].tolist())) > 3
    # Another seed permutes differently but keeps the counts.
    other = SyntheticSource(21440, seed=1).labels()
    assert not np.array_equal(other, lab)
    assert np.array_equal(np.bincount(other), counts)


def test_proportional_counts_and_custom_class_counts():
    c = proportional_counts(1000, [CLASS_COUNTS[k] for k in CLASS_NAMES])
    assert c.sum() == 1000
    expect = 1000 * np.array([CLASS_COUNTS[k] for k in CLASS_NAMES]) / 21440
    assert np.all(np.abs(c - expect) < 1)
    src = SyntheticSource(100, seed=0, class_counts={"EW": 1, "M": 1})
    assert np.bincount(src.labels(), minlength=10)[[0, 8]].tolist() == [50, 50]
    with pytest.raises(ValueError):
        SyntheticSource(10, class_counts={"XX": 3})


def test_record_shapes_dtypes_and_finite_values(sample):
    for o in sample:
        assert isinstance(o.object_id, int) and 0 < o.object_id < 2 ** 63
        assert 0 <= o.label < len(CLASS_NAMES)
        assert o.lc.dtype == np.float64 and o.lc.ndim == 2 and o.lc.shape[1] == 3
        assert 100 <= len(o.lc) <= 3000
        assert np.all(np.isfinite(o.lc)) and np.all(o.lc[:, 2] > 0)
        span_years = np.ptp(o.lc[:, 0]) / 365.25
        assert 1.5 < span_years < 6.1
        assert o.spec_wave.shape == o.spec_flux.shape == o.spec_ivar.shape == (LAMOST_NPIX,)
        for a in (o.spec_wave, o.spec_flux, o.spec_ivar, o.meta, o.aux):
            assert a.dtype == np.float64 and np.all(np.isfinite(a))
        assert np.all(np.diff(o.spec_wave) > 0)
        assert abs(o.spec_wave[0] - 3700) < 1e-6 and 9000 < o.spec_wave[-1] < 9150
        assert np.all(o.spec_ivar >= 0) and (o.spec_ivar > 0).mean() > 0.9
        assert o.meta.shape == (len(META_COLUMNS),) and o.aux.shape == (4,)
        amp, period, lksl, rfr = o.aux
        assert amp > 0 and period > 0 and lksl >= 0 and 0 <= rfr <= 1
    assert len({o.object_id for o in sample}) == len(sample)


def test_physical_consistency_of_metadata(sample):
    for o in sample:
        m = o.meta
        assert m[MC["pm"]] == pytest.approx(np.hypot(m[MC["pmra"]], m[MC["pmdec"]]))
        assert m[MC["j_k"]] == pytest.approx(m[MC["j_mag"]] - m[MC["k_mag"]])
        assert m[MC["w1_w2"]] == pytest.approx(m[MC["w1_mag"]] - m[MC["w2_mag"]])
        assert m[MC["bp_rp"]] == pytest.approx(m[MC["phot_bp_mean_mag"]] - m[MC["phot_rp_mean_mag"]])
        assert m[MC["parallax_over_error"]] == pytest.approx(m[MC["parallax"]] / m[MC["parallax_error"]])
        assert 0 <= m[MC["l"]] < 360 and -90 <= m[MC["b"]] <= 90
        # Parallax agrees with the true distance within 6 sigma (+ the zero-point offset).
        d = o.extra["distance_pc"]
        assert 100 <= d <= 10000
        assert abs(m[MC["parallax"]] - 1000 / d) < 6 * m[MC["parallax_error"]] + 0.05
        # The light curve's flux level matches the catalogue mean V (Miras' mean of magnitudes is fainter).
        if o.extra["true_class"] not in ("M",):
            v_lc = -2.5 * np.log10(np.median(o.lc[:, 1].clip(1e-6)) / 3631e3)
            assert abs(v_lc - m[MC["mean_vmag"]]) < 0.6
    # Colours follow temperature: M/SR are much redder than pulsators on the instability strip.
    bp_rp = {c: [o.meta[MC["bp_rp"]] for o in sample if o.extra["true_class"] == c] for c in ("SR", "RRAB", "EW")}
    assert np.median(bp_rp["SR"]) > np.median(bp_rp["EW"]) + 1.0


def test_light_curve_planted_defects(sample):
    dup = [len(o.lc) - len(np.unique(o.lc, axis=0)) for o in sample]
    assert sum(d > 0 for d in dup) >= 5  # ~40% of objects carry a few duplicated rows
    # Rows are grouped by camera, so time is not globally sorted for multi-camera objects.
    assert any(np.any(np.diff(o.lc[:, 0]) < 0) for o in sample)


def test_spectra_masked_pixels(sample):
    zeros = [int(np.sum(o.spec_ivar == 0)) for o in sample]
    assert sum(z > 0 for z in zeros) > 0.8 * len(sample)
    # The detector ends are masked in almost every spectrum, with zero flux there (as LAMOST files have).
    ends = [o for o in sample if o.spec_ivar[0] == 0 and o.spec_ivar[-1] == 0]
    assert len(ends) > 0.8 * len(sample)
    assert np.mean([o.spec_flux[-1] == 0 for o in ends]) > 0.9


def test_missing_metadata_is_planted_as_nan():
    src = SyntheticSource(40, seed=2, missing_rate=1.0)
    for i in range(0, 40, 4):
        assert np.isnan(src.get(i).meta).sum() == 1
    src = SyntheticSource(40, seed=2, missing_rate=0.0)
    assert not any(np.isnan(src.get(i).meta).any() for i in range(0, 40, 4))


def test_unseen_and_mislabel_fractions():
    n = 4000
    src = SyntheticSource(n, seed=9, unseen_fraction=0.05, mislabel_fraction=0.1)
    lab, true = src.labels(), src.true_labels()
    assert np.sum(lab == -1) == 200
    assert np.array_equal(lab == -1, true == -1)
    mis = (lab != true) & (lab >= 0)
    assert mis.sum() == 400
    kinds = src.true_kinds()
    assert {kinds[i] for i in np.flatnonzero(lab == -1)} == set(UNSEEN_CLASSES)
    for i in np.flatnonzero(lab == -1)[:3]:
        o = src.get(int(i))
        assert o.label == -1 and o.extra["true_class"] in UNSEEN_CLASSES and o.extra["true_label"] == -1
    for i in np.flatnonzero(mis)[:3]:
        o = src.get(int(i))
        assert o.extra["mislabeled"] is True and o.extra["true_label"] == true[i] != o.label == lab[i]
    d = src.describe()
    assert d["unseen_fraction"] == 0.05 and d["mislabel_fraction"] == 0.1
    with pytest.raises(ValueError):
        SyntheticSource(10, unseen_fraction=0.7, mislabel_fraction=0.5)


def test_hidden_subtypes_for_miras_and_rotators():
    src = SyntheticSource(21440, seed=4)
    lab = src.labels()
    mira = [src.get(int(i)) for i in np.flatnonzero(lab == CLASS_NAMES.index("M"))[:30]]
    rot = [src.get(int(i)) for i in np.flatnonzero(lab == CLASS_NAMES.index("ROT"))[:20]]
    assert {o.extra["subtype"] for o in mira} == {"carbon", "oxygen"}
    assert {o.extra["subtype"] for o in rot} == {"young_active", "old_quiet"}
    # The sub-types differ physically: carbon Miras are redder in J-K, active rotators have H-alpha emission.
    jk = {t: np.mean([o.meta[MC["j_k"]] for o in mira if o.extra["subtype"] == t]) for t in ("carbon", "oxygen")}
    assert jk["carbon"] > jk["oxygen"] + 0.3

    def halpha(o):
        w, f = o.spec_wave, o.spec_flux
        return np.median(f[(w > 6560) & (w < 6566)]) / np.median(f[(w > 6520) & (w < 6550)])

    ha = {t: np.median([halpha(o) for o in rot if o.extra["subtype"] == t]) for t in ("young_active", "old_quiet")}
    assert ha["young_active"] > ha["old_quiet"] + 0.2
    flat = SyntheticSource(21440, seed=4, subtypes=False)
    o = flat.get(int(np.flatnonzero(lab == CLASS_NAMES.index("M"))[0]))
    assert "subtype" not in o.extra


def test_describe_is_json_and_complete():
    src = SyntheticSource(123, seed=7, missing_rate=0.01, outlier_rate=0.002)
    d = json.loads(json.dumps(src.describe()))
    for key in ("generator", "version", "seed", "n_objects", "missing_rate", "outlier_rate", "class_counts",
                "unseen_fraction", "mislabel_fraction", "subtypes"):
        assert key in d
    assert d["seed"] == 7 and d["n_objects"] == 123 and d["outlier_rate"] == 0.002
    assert len(src) == 123 and src.class_names() == CLASS_NAMES
    with pytest.raises(IndexError):
        src.get(123)


def test_object_ids_unique_and_vectorised():
    src = SyntheticSource(5000, seed=13)
    ids = src.object_ids()
    assert ids.dtype == np.int64 and len(np.unique(ids)) == 5000
    assert all(int(ids[i]) == synthetic_object_id(13, i) for i in (0, 1, 4999))
    assert src.get(42).object_id == int(ids[42])


def test_throughput_sanity():
    src = SyntheticSource(21440, seed=0)
    src.get(0)  # templates and the label permutation are built once
    t = time.process_time()
    for i in range(1, 151):
        src.get(i)
    rate = 150 / max(time.process_time() - t, 1e-9)
    assert rate > 100, f"generator too slow: {rate:.0f} objects/s"
