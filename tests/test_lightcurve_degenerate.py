"""`astrom3 ingest lightcurves` on legal but degenerate curves: fluxes at or below zero keep the amplitude in
magnitudes (a lower limit on the noise floor, with a warning), and curves at too few distinct times are refused
like a constant one."""

from __future__ import annotations

import numpy as np
import pytest

from astrom3_hpc.cli import main


def _flux_tables(d, curves: dict[str, np.ndarray]) -> list[str]:
    """A points table of fluxes (rows of time, flux, error) and an objects table of two classes; the ingest
    arguments that read them into d/s.zarr."""
    rows = [f"{oid},{t!r},{f!r},{e!r}\n" for oid, c in curves.items() for t, f, e in c.tolist()]
    (d / "points.csv").write_text("id,t,flux,err\n" + "".join(rows))
    (d / "objects.csv").write_text("id,cls\n" + "".join(f"{oid},{'AB'[k % 2]}\n" for k, oid in enumerate(curves)))
    return ["ingest", "lightcurves", "--points", str(d / "points.csv"), "--objects", str(d / "objects.csv"),
            "--id-column", "id", "--time-column", "t", "--flux-column", "flux", "--err-column", "err",
            "--label-column", "cls", "--out", str(d / "s.zarr"), "--no-progress"]


def test_amplitude_is_in_magnitudes_for_every_object_and_a_faint_end_below_zero_takes_the_floor(tmp_path, caplog):
    """Catches the amplitude column holding a flux range in the file's units for any object with one flux <= 0
    (100.5 beside magnitude amplitudes of about 1.2), and the floor used without a word."""
    from astrom3_hpc.core.constants import AUX_COLUMNS
    from astrom3_hpc.data.store import Store, object_names

    rng = np.random.default_rng(0)
    curves = {}
    for k in range(8):
        t = np.sort(rng.uniform(0, 300, 80))
        curves[f"S{k}"] = np.stack([t, 100 + 50 * np.sin(2 * np.pi * t / (0.5 + k)) + rng.normal(0, 2, 80),
                                    np.full(80, 2.0)], 1)
    curves["NEG"] = curves["S1"].copy()  # S1's twin, one faint epoch measured just below zero
    curves["NEG"][np.argmin(curves["NEG"][:, 1]), 1] = -0.5
    t = np.sort(rng.uniform(0, 300, 80))  # fades into the noise: a tenth of its points below zero
    curves["FAINT"] = np.stack([t, 3 + 3 * np.sin(2 * np.pi * t / 2.3) + rng.normal(0, 1, 80), np.full(80, 1.0)], 1)
    with caplog.at_level("WARNING", logger="astrom3"):
        assert main(_flux_tables(tmp_path, curves)) == 0
    s = Store(tmp_path / "s.zarr")
    amp = dict(zip(object_names(s), s.root["aux"][:, AUX_COLUMNS.index("amplitude")].astype(np.float64)))
    lo, hi = np.percentile(curves["S1"][:, 1], [2.5, 97.5])
    assert amp["S1"] == pytest.approx(2.5 * np.log10(hi / lo), rel=1e-5)
    assert abs(amp["NEG"] - amp["S1"]) < 0.02 and all(0.9 < amp[f"S{k}"] < 1.5 for k in range(8))
    faint = curves["FAINT"][:, 1]
    assert np.percentile(faint, 2.5) <= 0
    assert amp["FAINT"] == pytest.approx(2.5 * np.log10(np.percentile(faint, 97.5) / 1.0), rel=1e-5)
    assert "1 object: amplitude is a lower limit: a 2.5th-percentile flux <= 0 took the median flux error" \
        in caplog.text and "(summary 'caveats'): FAINT" in caplog.text
    assert caplog.text.count("2.5th-percentile flux") == 1
    (caveat,) = s.attrs["summary"]["caveats"].values()
    assert caveat == {"objects": 1, "first": ["FAINT"]}


def test_ingest_notes_of_several_ranks_are_reported_once_with_their_sum():
    """Catches each MPI rank warning about its own objects only: the counts are summed before the one report."""
    from types import SimpleNamespace

    from astrom3_hpc.data import ingest_notes

    ranks = [ingest_notes.empty(), ingest_notes.empty()]
    for r, names in enumerate((["a", "b", "c", "d"], ["e", "f", "g"])):
        for n in names:
            obj = SimpleNamespace(object_id=0, extra={"name": n, "points_dropped": {"NaN": 2}})
            ingest_notes.note(ranks[r], obj, ("floor",))
    total = ingest_notes.summed(ranks)
    assert total["caveats"] == {"floor": {"objects": 7, "first": ["a", "b", "c", "d", "e"]}}
    assert total["dropped"] == {"NaN": {"points": 14, "objects": 7}}


def test_other_sources_derive_the_same_amplitude_and_a_curve_without_errors_has_no_floor():
    """Preprocessing derives a missing amplitude (ZTF, Stripe 82, `search --aux`) by the rule ingest lightcurves
    uses: a faint end <= 0 used to make it NaN, an error naming the object, for those sources alone."""
    from astrom3_hpc.data.preprocess import aux_features, magnitude_amplitude
    from astrom3_hpc.data.raw import BadInputError

    t = np.arange(40.0)
    flux = 2 + 4 * np.sin(t)
    lc = np.stack([t, flux, np.full(40, 0.5)], 1)
    assert magnitude_amplitude(flux, lc[:, 2]) == (pytest.approx(2.5 * np.log10(np.percentile(flux, 97.5) / 0.5)),
                                                   True)
    assert aux_features(np.array([np.nan, 1.3, np.nan, np.nan]), 7, "f.csv", lc)[0] == pytest.approx(
        magnitude_amplitude(flux, lc[:, 2])[0])
    lo, hi = np.percentile(flux + 10, [2.5, 97.5])  # positive: the plain rule, whatever the errors
    assert magnitude_amplitude(flux + 10, lc[:, 2]) == (pytest.approx(2.5 * np.log10(hi / lo)), False)
    assert magnitude_amplitude(flux - 20, lc[:, 2]) == (0.0, True)  # even the top end within the noise
    lc[:, 2] = 0
    with pytest.raises(BadInputError, match="NaN in photometric aux features"):
        aux_features(np.array([np.nan, 1.3, np.nan, np.nan]), 7, "f.csv", lc)


def test_a_curve_at_one_time_or_too_few_distinct_times_is_refused_naming_it(tmp_path, capsys):
    """Catches such a curve stored with the argmax of a flat periodogram as its period (floating-point noise for a
    single time: 0.093 d at power 1e-18), which the folds, features and networks then took for the star's."""
    from lightcurve_tables import fails_then_skips

    from astrom3_hpc.data.store import Store, object_names

    rng = np.random.default_rng(1)
    curves = {}
    for k in range(6):
        t = np.sort(rng.uniform(0, 300, 60)) + 58000
        curves[f"S{k}"] = np.stack([t, 100 + 30 * np.sin(2 * np.pi * t / (0.5 + k)), np.full(60, 2.0)], 1)
    for oid, times in (("ONE_EPOCH", np.full(20, 58000.5)), ("TWO_EPOCHS", np.repeat([58000.5, 58001.5], 5)),
                       ("FOUR_EPOCHS", np.repeat(58000.5 + np.arange(4), 3))):
        curves[oid] = np.stack([times, 100 + rng.normal(0, 5, len(times)), np.full(len(times), 2.0)], 1)
    args = _flux_tables(tmp_path, curves)
    err = fails_then_skips(args, tmp_path, tmp_path / "s.zarr", capsys)
    points = tmp_path / "points.csv"
    assert (f"BadInputError: object ONE_EPOCH ({points}): all 20 usable rows are at time 58000.5: a light curve "
            f"without a time span has no period to classify by") in err.splitlines(), err
    s = Store(tmp_path / "s.zarr")
    assert {r["object_id"]: r["reason"] for r in s.skipped()} == {
        "ONE_EPOCH": "all 20 usable rows are at time 58000.5: a light curve without a time span has no period to "
                     "classify by",
        "TWO_EPOCHS": "the 10 usable rows are at 2 distinct times; at least 5 needed for a period to classify by",
        "FOUR_EPOCHS": "the 12 usable rows are at 4 distinct times; at least 5 needed for a period to classify by"}
    assert s.root["valid"][:].tolist() == [True] * 6 + [False] * 3 and list(object_names(s))[:6] == list(curves)[:6]


def test_a_value_that_overflows_float32_once_scaled_is_refused_and_minus_99_is_a_sentinel(tmp_path, capsys):
    """Catches one absurd point (a flux error of 1e40) stored as a curve of inf, the object valid and `verify`
    calling the store intact, until training stopped on it; and a -99 "no data" magnitude taken for a point
    (1e46 mJy), which did the same to its whole curve."""
    from lightcurve_tables import fails_then_skips

    from astrom3_hpc.data.store import Store

    rng = np.random.default_rng(2)
    curves = {}
    for k in range(6):
        t = np.sort(rng.uniform(0, 300, 60)) + 58000
        curves[f"S{k}"] = np.stack([t, 100 + 30 * np.sin(2 * np.pi * t / (0.5 + k)), np.full(60, 2.0)], 1)
    curves["S1"][7, 2] = 1e40
    args = _flux_tables(tmp_path, curves)
    err = fails_then_skips(args, tmp_path, tmp_path / "s.zarr", capsys)
    assert "object S1" in err and "light curve does not fit float32 once scaled (largest error 1e+40)" in err
    s = Store(tmp_path / "s.zarr")
    assert [r["source"].endswith("(object S1)") for r in s.skipped()] == [True]
    assert np.isfinite(s.root["lc/values"][:]).all()
    # Magnitudes: -99 is dropped and counted like 99.999, the curve stored from its other points.
    pts = tmp_path / "mags.csv"
    rows = [(oid, t, 15 + 0.01 * f, 0.02) for oid, c in curves.items() for t, f, _ in c.tolist()]
    rows[3] = (rows[3][0], rows[3][1], -99.0, 0.02)
    pts.write_text("id,t,mag,err\n" + "".join(f"{o},{t!r},{m!r},{e}\n" for o, t, m, e in rows))
    out = tmp_path / "m.zarr"
    assert main(["ingest", "lightcurves", "--points", str(pts), "--objects", str(tmp_path / "objects.csv"),
                 "--id-column", "id", "--time-column", "t", "--mag-column", "mag", "--err-column", "err",
                 "--label-column", "cls", "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    s = Store(out)
    assert s.attrs["summary"]["points_dropped"] == {"no-measurement sentinel": {"points": 1, "objects": 1}}
    assert s.root["valid"][:].all() and np.isfinite(s.root["lc/values"][:]).all()


def test_a_skipped_object_is_named_as_the_tables_write_it(tmp_path):
    """Ids kept as written ("000123" beside "S0"): skipped.json named the short curve by its normalised key
    "123", an id in no file the user has; the store and predictions call it "000123"."""
    import json

    rng = np.random.default_rng(1)
    curves = {}
    for k in range(8):
        t = np.sort(rng.uniform(0, 300, 60))
        curves[f"S{k}"] = np.stack([t, 100 + 40 * np.sin(2 * np.pi * t / (0.7 + k)), np.full(60, 2.0)], 1)
    curves["000123"] = curves["S0"][:3]
    assert main(_flux_tables(tmp_path, curves) + ["--on-error", "skip"]) == 0
    store = tmp_path / "s.zarr"
    assert json.loads((store / "object_names.json").read_text())[-1] == "000123"
    (skipped,) = json.loads((store / "skipped.json").read_text())
    assert skipped["object_id"] == "000123" and "(object 000123)" not in skipped["reason"], skipped



def test_baseline_probabilities_keep_each_class_in_its_column_when_train_lacks_one(monkeypatch):
    """A split file whose train split holds no object of one class (the middle one here): scikit-learn's columns are
    the classes it saw, and each must land in that class's column, the missing one at 0, not shifted left."""
    from types import SimpleNamespace

    from astrom3_hpc.train import baseline

    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(-3, 0.3, (30, 2)), rng.normal(3, 0.3, (30, 2))]
    y = np.r_[np.zeros(30, int), np.full(30, 2)]
    monkeypatch.setattr(baseline, "baseline_features", lambda store, rows, source="ls": x[rows])
    clf = baseline.make_classifier(len(x)).fit(x, y)
    store = SimpleNamespace(class_names=("A", "B", "C"))
    probs = baseline.baseline_probabilities(clf, store, np.array([0, 59]))
    assert probs.shape == (2, 3) and (probs[:, 1] == 0).all()
    assert probs[0].argmax() == 0 and probs[1].argmax() == 2
