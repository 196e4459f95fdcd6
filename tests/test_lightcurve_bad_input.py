"""`astrom3 ingest lightcurves` on bad input: each a clear error naming the object, line or file, exit 2 and
nothing written, or, with `--on-error skip`, the object left out and listed; points no light curve should hold
are left out and counted. Stores ingested from legal but degenerate tables, which `baseline` and `finetune`
cannot train on: one clear error before any run directory."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lightcurve_tables import fails_then_skips, ingest_args, no_leftovers, write_splits, write_tables

from astrom3_hpc.cli import main

ROOT = Path(__file__).resolve().parents[1]
# A fine-tune that would train: a few steps, so a run the refusal misses ends in seconds rather than hanging.
FINETUNE_SETS = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.threads=1", "train.batch_size=8"]


def test_object_without_points_fails_or_is_skipped(tmp_path):
    from astrom3_hpc.data.store import Store

    write_tables(tmp_path, n_per_class=3, drop_points_of="OGLE-00004")
    out = tmp_path / "s.zarr"
    assert main(ingest_args(tmp_path, out)) == 2
    no_leftovers(tmp_path, out)
    assert main(ingest_args(tmp_path, out, "--on-error", "skip")) == 0
    skipped = Store(out).skipped()
    assert [s["object_id"] for s in skipped] == ["OGLE-00004"] and "0 usable rows in band 'V'" in skipped[0]["reason"]


def test_non_numeric_time_names_object_line_and_column(tmp_path, capsys):
    write_tables(tmp_path, n_per_class=3, bad_time_of="OGLE-00002")
    out = tmp_path / "s.zarr"
    assert main(ingest_args(tmp_path, out)) == 2
    err = capsys.readouterr().err
    assert "OGLE-00002" in err and "'hjd'" in err and "'yesterday'" in err and "points.csv.gz" in err
    assert "Traceback" not in err
    no_leftovers(tmp_path, out)


def test_missing_label_column_and_unknown_labels(tmp_path, capsys):
    write_tables(tmp_path, n_per_class=3, extra_object=("OGLE-99999", ""))
    out = tmp_path / "s.zarr"
    args = ingest_args(tmp_path, out)
    bad = list(args)
    bad[bad.index("cls")] = "variability_class"
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "'variability_class'" in err and "objects.csv" in err
    # An object without a class: an error (never a silent -1) unless dropped on request.
    assert main(args) == 2
    assert "OGLE-99999" in capsys.readouterr().err
    no_leftovers(tmp_path, out)
    cmap = tmp_path / "map.json"
    cmap.write_text(json.dumps({"M_or_SR": "LPV", "HADS_or_DSCT": "DSCT", "RRab-like": "RRAB"}))
    assert main(args + ["--class-map", str(cmap), "--drop-unlabelled"]) == 0
    from astrom3_hpc.data.store import Store

    s = Store(out)
    assert s.class_names == ("DSCT", "LPV", "RRAB") and s.n_objects == 9 and (s.labels >= 0).all()


def test_a_label_the_class_map_sends_to_nothing_is_left_out_whatever_the_flags(tmp_path, capsys):
    """Catches an object whose label the map sends to "" (configs/ztf_vsx_classes.json's EW, EB, ...) treated as
    one without a class: an error asking for the --class-map just given, or, with --keep-unlabelled, kept and
    classified into every run's predictions_unlabelled.csv."""
    from astrom3_hpc.data.store import Store

    write_tables(tmp_path, n_per_class=3, unlabelled_per_class=1)  # per class 3 labelled objects, then 1 blank
    cmap = tmp_path / "map.json"
    cmap.write_text(json.dumps({"M_or_SR": "LPV", "HADS_or_DSCT": "", "RRab-like": "RRAB"}))
    out = tmp_path / "s.zarr"
    assert main(ingest_args(tmp_path, out, "--class-map", str(cmap))) == 2  # the blank labels stay an error
    err = capsys.readouterr().err
    assert "objects.csv:5: object OGLE-00003: label '' is not in the class map" in err  # a blank, not an HADS star
    no_leftovers(tmp_path, out)
    for flag, unlabelled in (("--keep-unlabelled", 3), ("--drop-unlabelled", 0)):
        assert main(ingest_args(tmp_path, out, "--class-map", str(cmap), flag, "--overwrite")) == 0, flag
        s = Store(out)
        src = s.attrs["provenance"]["source"]
        assert s.class_names == ("LPV", "RRAB") and s.n_objects == 6 + unlabelled, flag
        assert int((s.labels < 0).sum()) == src["n_unlabelled"] == unlabelled, flag
        names = json.loads((out / "object_names.json").read_text())
        assert not {f"OGLE-{k:05d}" for k in (4, 5, 6)} & set(names), flag  # the map's "" class: never stored
        assert src["n_left_out_by_class_map"] == 3 and src["left_out_by_class_map"] == {"HADS_or_DSCT": 3}, flag
        assert src["n_dropped_unlabelled"] == 3 - unlabelled, flag
    # Without blank labels no flag is needed: the map's "" is the whole request.
    write_tables(tmp_path, n_per_class=3)
    assert main(ingest_args(tmp_path, out, "--class-map", str(cmap), "--overwrite")) == 0, capsys.readouterr().err
    assert Store(out).n_objects == 6 and Store(out).class_names == ("LPV", "RRAB")


def test_a_class_map_code_of_0_or_false_is_a_class_and_only_null_leaves_out(tmp_path, capsys, caplog):
    """Catches JSON class codes that Python reads as false (0, false) sending their label to "" (left out, with no
    warning), and a list value stored as a class named "['x']"."""
    from astrom3_hpc.data.store import Store

    write_tables(tmp_path, n_per_class=3)
    cmap = tmp_path / "map.json"
    cmap.write_text(json.dumps({"M_or_SR": 0, "HADS_or_DSCT": False, "RRab-like": None}))
    out = tmp_path / "s.zarr"
    with caplog.at_level("WARNING", logger="astrom3"):
        assert main(ingest_args(tmp_path, out, "--class-map", str(cmap))) == 0, capsys.readouterr().err
    s = Store(out)
    assert s.class_names == ("0", "false") and s.n_objects == 6 and (s.labels >= 0).all()
    assert s.attrs["provenance"]["source"]["left_out_by_class_map"] == {"RRab-like": 3}
    assert "the class map left out label 'RRab-like' (3 objects)" in caplog.text
    cmap.write_text(json.dumps({"M_or_SR": "LPV", "HADS_or_DSCT": ["DSCT"], "RRab-like": "RRAB"}))
    assert main(ingest_args(tmp_path, tmp_path / "t.zarr", "--class-map", str(cmap))) == 2
    err = capsys.readouterr().err
    assert "map.json: label 'HADS_or_DSCT' maps to [\"DSCT\"]: a class is one name or number" in err
    no_leftovers(tmp_path, tmp_path / "t.zarr")


def test_a_class_map_table_without_a_header_line_is_refused_naming_it(tmp_path, capsys):
    """Catches a headerless `label,class` CSV losing its first mapping to the header: a puzzling "label 'M_or_SR'
    is not in the class map" although it is on line 1, or with --drop-unlabelled the class silently gone."""
    from astrom3_hpc.data.store import Store

    write_tables(tmp_path, n_per_class=3)
    cmap = tmp_path / "map.csv"
    cmap.write_text("M_or_SR,LPV\nHADS_or_DSCT,DSCT\nRRab-like,RRAB\n")
    out = tmp_path / "s.zarr"
    for flags in ((), ("--drop-unlabelled",), ("--keep-unlabelled",)):
        assert main(ingest_args(tmp_path, out, "--class-map", str(cmap), *flags)) == 2, flags
        err = capsys.readouterr().err
        assert "objects.csv:2: object OGLE-00000: label 'M_or_SR' is the header of the class map " in err, flags
        assert "map.csv: a class-map table's first line names its columns (label,class)" in err, flags
        no_leftovers(tmp_path, out)
    cmap.write_text("label,class\n" + cmap.read_text())  # with its header line, every mapping is read
    assert main(ingest_args(tmp_path, out, "--class-map", str(cmap))) == 0, capsys.readouterr().err
    assert Store(out).class_names == ("DSCT", "LPV", "RRAB") and Store(out).n_objects == 9


def _with_split_column(d, blank_labelled: bool = False) -> None:
    """objects.csv with a `split` column: train/val/test for labelled objects, blank for unlabelled ones (and,
    with blank_labelled, for the first labelled one too)."""
    import csv

    rows = [r[:3] for r in csv.reader((d / "objects.csv").open())]  # star, cls, P: a split column of before dropped
    parts = ("train", "train", "val", "test")
    labelled = [i for i, r in enumerate(rows[1:], 1) if r[1]]
    cells = {i: parts[j % 4] for j, i in enumerate(labelled)} | ({labelled[0]: ""} if blank_labelled else {})
    with (d / "objects.csv").open("w", newline="") as f:
        csv.writer(f).writerows([rows[0] + ["split"]] + [r + [cells.get(i, "")] for i, r in enumerate(rows[1:], 1)])


def test_split_column_is_blank_for_kept_unlabelled_objects_only(tmp_path, capsys):
    from astrom3_hpc.data.store import Store

    write_tables(tmp_path, n_per_class=4, unlabelled_per_class=1)
    _with_split_column(tmp_path)
    out = tmp_path / "s.zarr"
    assert main(ingest_args(tmp_path, out, "--split-column", "split", "--keep-unlabelled")) == 0, \
        capsys.readouterr().err
    s = Store(out)
    unlabelled = set(s.unlabelled_rows().tolist())
    in_splits = [set(s.split(42, "full", k).tolist()) for k in ("train", "val", "test")]
    assert len(unlabelled) == 3 and not unlabelled & set().union(*in_splits)
    assert [len(p) for p in in_splits] == [6, 3, 3]
    _with_split_column(tmp_path, blank_labelled=True)  # a labelled object without a split stays an error
    assert main(ingest_args(tmp_path, tmp_path / "t.zarr", "--split-column", "split", "--keep-unlabelled")) == 2
    err = capsys.readouterr().err
    assert "objects.csv:2: object OGLE-00000: no split in column 'split'" in err
    no_leftovers(tmp_path, tmp_path / "t.zarr")
    # A misspelt split is named at its line, as written.
    rows = list(csv.reader(open(tmp_path / "objects.csv", newline="")))
    labelled = [i for i, r in enumerate(rows) if i and r[1]]
    rows[labelled[0]][-1], rows[labelled[1]][-1], rows[labelled[2]][-1] = "train", "Train ", "Tset"
    with open(tmp_path / "objects.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    assert main(ingest_args(tmp_path, tmp_path / "t.zarr", "--split-column", "split", "--drop-unlabelled")) == 2
    assert (f"objects.csv:{labelled[2] + 1}: object {rows[labelled[2]][0]}: split 'Tset' in column 'split' is not "
            f"train, val or test") in capsys.readouterr().err


def test_split_file_with_unknown_id(tmp_path, capsys):
    truth = write_tables(tmp_path, n_per_class=14)
    write_splits(tmp_path, truth, unknown="NOT-A-STAR")
    out = tmp_path / "s.zarr"
    assert main(ingest_args(tmp_path, out, "--splits-from", str(tmp_path))) == 2
    err = capsys.readouterr().err
    assert "NOT-A-STAR" in err and "test.csv" in err
    no_leftovers(tmp_path, out)
    assert main(ingest_args(tmp_path, out, "--splits-from", str(tmp_path), "--on-error", "skip")) == 0
    from astrom3_hpc.data.store import Store

    src = Store(out).attrs["provenance"]["source"]
    assert src["n_ignored_split_ids"] == 1 and src["ignored_split_ids"][0].endswith(":NOT-A-STAR")


def test_constant_curve_is_named_and_placeholder_periods_fall_back(tmp_path, capsys):
    """A light curve with one value throughout is an error saying so (not a NaN feature); catalogue periods of
    0 or -1 (a catalogue's "unknown") are treated as empty: the Lomb-Scargle period is stored."""
    from astrom3_hpc.data.store import Store

    rng = np.random.default_rng(3)
    true_p = {i: rng.uniform(0.3, 2.0) for i in range(12)}
    with open(tmp_path / "points.csv", "w") as f:
        f.write("id,t,mag,err\n")
        for i, p in true_p.items():
            for t in np.sort(rng.uniform(0, 400, 120)):
                f.write(f"{i},{t:.5f},{15.0 if i == 0 else 15 + 0.3 * np.sin(2 * np.pi * t / p):.4f},0.02\n")
    cat = {i: f"{p:.6f}" for i, p in true_p.items()} | {1: "0", 2: "-1"}
    (tmp_path / "objects.csv").write_text("id,cls,P\n" + "".join(f"{i},{'AB'[i % 2]},{cat[i]}\n" for i in true_p))
    out = tmp_path / "s.zarr"
    args = ["ingest", "lightcurves", "--points", str(tmp_path / "points.csv"), "--objects",
            str(tmp_path / "objects.csv"), "--id-column", "id", "--time-column", "t", "--mag-column", "mag",
            "--err-column", "err", "--label-column", "cls", "--period-column", "P", "--out", str(out), "--no-progress"]
    err = fails_then_skips(args, tmp_path, out, capsys)
    assert "object 0 (" in err and "all 120 usable values are 15: a constant light curve" in err
    s = Store(out)
    assert [str(r["object_id"]) for r in json.loads((out / "skipped.json").read_text())] == ["0"]
    valid = s.root["valid"][:]
    assert valid.tolist() == [False] + [True] * 11
    stored = 10 ** s.root["aux"][:, 1]  # log10 period
    ls = s.root["lc/period_search"][:, 0]
    np.testing.assert_allclose(stored[1:3], ls[1:3], rtol=1e-5)  # 0 and -1: the search's period
    np.testing.assert_allclose(stored[3:], [true_p[i] for i in range(3, 12)], rtol=1e-5)  # the catalogue's


def test_a_band_the_table_does_not_hold_is_one_clear_error(tmp_path, capsys):
    """A typo in --band (or a survey's own band codes) names the bands the table has; no traceback, and no hint
    to --on-error skip, which could not help."""
    write_tables(tmp_path, n_per_class=3)
    out = tmp_path / "s.zarr"
    args = ingest_args(tmp_path, out)
    args[args.index("--band") + 1] = "V,R"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "points.csv.gz: no rows of band 'R' in column 'band' for this store's objects (bands there: ['I', 'V'])" \
        in err
    assert "Traceback" not in err and "--on-error skip" not in err
    no_leftovers(tmp_path, out)


def test_points_left_out_are_counted_and_repeats_do_not_weigh_twice(tmp_path, capsys):
    """Rows no light curve should hold (a NaN, an error of 0, a row repeated exactly) are left out before the
    period search and counted per reason in the store's summary; an object left with too few names why."""
    from astrom3_hpc.data import periods
    from astrom3_hpc.data.sources.common import mag_to_flux_mjy
    from astrom3_hpc.data.store import Store

    rng = np.random.default_rng(5)
    curves = {}
    for i in range(9):
        t = np.sort(rng.uniform(0, 300, 90))
        curves[i] = np.stack([t, 15 + 0.3 * np.sin(2 * np.pi * t / rng.uniform(0.3, 3.0)), np.full(90, 0.02)], 1)
    lines = [f"{i},{t:.5f},{m:.4f},{e}" for i, c in curves.items() for t, m, e in c]
    lines += [lines[5]] * 3 + [lines[6]]  # object 0: four repeats of two rows, at the end of the file
    lines += ["1,310.0,nan,0.02", "1,311.0,15.1,0", "2,312.0,15.2,-0.01"]
    lines += [f"9,{t},15.{t},0" for t in range(20)]  # object 9: no usable error at all
    (tmp_path / "points.csv").write_text("id,t,mag,err\n" + "\n".join(lines) + "\n")
    (tmp_path / "objects.csv").write_text("id,cls\n" + "".join(f"{i},{'AB'[i % 2]}\n" for i in range(10)))
    out = tmp_path / "s.zarr"
    args = ["ingest", "lightcurves", "--points", str(tmp_path / "points.csv"), "--objects",
            str(tmp_path / "objects.csv"), "--id-column", "id", "--time-column", "t", "--mag-column", "mag",
            "--label-column", "cls", "--out", str(out), "--no-progress"]
    err = fails_then_skips(args, tmp_path, out, capsys)
    assert "object 9 (" in err and "0 usable rows of 20; left out: error <= 0 (20); at least 5 needed" in err
    s = Store(out)
    assert s.attrs["summary"]["points_dropped"] == {"non-finite value": {"points": 1, "objects": 1},
                                                    "error <= 0": {"points": 2, "objects": 2},
                                                    "exact repeat": {"points": 4, "objects": 1}}
    assert s.attrs["summary"]["lc_points"] == 9 * 90
    t, m, e = curves[0][:, 0], np.round(curves[0][:, 1], 4), curves[0][:, 2]
    flux, err = mag_to_flux_mjy(np.round(m, 4), e)
    expect = periods.search(np.round(t, 5), flux, err).as_array()
    np.testing.assert_allclose(s.root["lc/period_search"][0], expect, rtol=1e-6)


def test_a_store_with_no_object_is_an_error_not_an_empty_store(tmp_path, capsys):
    """Catches a store of nothing built with exit 0 (every object skipped, or none given), which then failed in
    whichever job first read it, far from the cause."""
    import csv
    import gzip

    write_tables(tmp_path, n_per_class=3)
    points = tmp_path / "points.csv.gz"
    with gzip.open(points, "rt", newline="") as f:
        rows = list(csv.reader(f))
    with gzip.open(points, "wt", newline="") as f:  # every object's every time unreadable
        csv.writer(f).writerows([rows[0]] + [[r[0], "yesterday", *r[2:]] for r in rows[1:]])
    out = tmp_path / "s.zarr"
    assert main(ingest_args(tmp_path, out, "--on-error", "skip")) == 2
    err = capsys.readouterr().err
    assert "all 9 objects were skipped (the first, OGLE-00000 in" in err
    assert "column 'hjd' holds 'yesterday', not a number" in err
    no_leftovers(tmp_path, out)
    assert main(["ingest", "synthetic", "-n", "0", "--out", str(out)]) == 2
    assert "the source has no objects" in capsys.readouterr().err
    no_leftovers(tmp_path, out)
    # Objects without a known class are no error: a store of them is for `embed` and `predict`.
    assert main(["ingest", "synthetic", "-n", "20", "--unseen-fraction", "1", "--out", str(out)]) == 0


def _finetune(store: Path, run: Path, *sets: str) -> int:
    return main(["finetune", "--config", str(ROOT / "configs/periodic_finetune.yaml"), "--run-dir", str(run),
                 "--store", str(store), "--seed", "42", "--set", *FINETUNE_SETS, *sets])


@pytest.fixture(scope="module")
def one_class_store(tmp_path_factory) -> Path:
    """Ten labelled objects, all RRab-like (8 / 1 / 1 in the generated split); the rest kept without a class."""
    d = tmp_path_factory.mktemp("one-class")
    write_tables(d, n_per_class=10)
    with open(d / "objects.csv", newline="") as f:
        rows = list(csv.reader(f))
    with open(d / "objects.csv", "w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [[r[0], r[1] if r[1] == "RRab-like" else "", *r[2:]] for r in rows[1:]])
    assert main(ingest_args(d, d / "s.zarr", "--keep-unlabelled")) == 0
    return d / "s.zarr"


def test_a_train_split_of_one_class_is_refused_before_any_run_directory(one_class_store, tmp_path, capsys):
    """Catches the baseline's (and average_baseline's) numpy broadcast error after the fit, and a fine-tune that
    reported macro-F1 1.000 for a classifier that can only answer the one class."""
    want = (f"{one_class_store}: split seed42/full/train holds one class (RRab-like): a classifier trained on it "
            f"can only answer RRab-like; nothing to classify")
    capsys.readouterr()
    assert main(["baseline", str(one_class_store), "--seed", "42", "--out", str(tmp_path / "bl")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"astrom3 baseline: error: {want}"], err
    assert not (tmp_path / "bl").exists()
    for name, sets in (("ft", ()), ("ft-avg", ("finetune.average_baseline=true",))):
        assert _finetune(one_class_store, tmp_path / name, *sets) == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [f"astrom3 finetune: error: {want}"], err
        assert not (tmp_path / name).exists()


@pytest.fixture(scope="module")
def stores_missing_a_split(tmp_path_factory) -> dict[str, Path]:
    """{split: store whose generated seed-42 split of it is empty}: classes of 5 objects share out 4 / 0 / 1
    (round(0.5) = 0), classes of 7 share out 6 / 1 / 0."""
    out = {}
    for split, n in (("val", 5), ("test", 7)):
        d = tmp_path_factory.mktemp(f"no-{split}")
        write_tables(d, n_per_class=n)
        assert main(ingest_args(d, d / "s.zarr")) == 0
        out[split] = d / "s.zarr"
    return out


@pytest.mark.parametrize("split, subset", [("val", "full"), ("test", "full"), ("test", "sub50")])
def test_an_empty_val_or_test_split_is_refused_before_any_run_directory(stores_missing_a_split, split, subset,
                                                                        tmp_path, capsys):
    """Catches a baseline that fitted, then failed on scikit-learn's "Found array with 0 sample(s)" and left a run
    directory, and a fine-tune that trained before it found its test split empty."""
    store = stores_missing_a_split[split]
    want = f"{store}: split seed42/{subset}/{split} is empty"
    capsys.readouterr()
    assert main(["baseline", str(store), "--seed", "42", "--subset", subset, "--out", str(tmp_path / "bl")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"astrom3 baseline: error: {want}"], err
    assert not (tmp_path / "bl").exists()
    assert _finetune(store, tmp_path / "ft", f"data.subset={subset}") == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"astrom3 finetune: error: {want}"], err
    assert not (tmp_path / "ft").exists()
