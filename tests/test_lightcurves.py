"""`astrom3 ingest lightcurves` (any survey's long CSV tables), Lomb-Scargle periods, `astrom3 baseline`,
predictions.csv, and the `periodic` light-curve encoder. Real ingestion, real training, real files."""

from __future__ import annotations

import csv
import gzip
import json
import os
import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import IN_CI, REALDATA, ROOT
from lightcurve_tables import CLASSES, ingest_args, write_splits, write_tables

from astrom3_hpc.cli import main


@pytest.fixture(scope="module")
def lc_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("lctables")
    truth = write_tables(d)
    write_splits(d, truth)
    out = d / "lc.zarr"
    assert main(ingest_args(d, out, "--splits-from", str(d))) == 0
    return d, out, truth


def test_ingest_any_class_names_given_splits_and_periods(lc_store):
    from astrom3_hpc.data.store import Store

    d, out, truth = lc_store
    s = Store(out)
    assert s.class_names == tuple(sorted(CLASSES))
    assert s.attrs["provenance"]["source"]["kind"] == "lightcurves"
    assert s.attrs["provenance"]["source"]["points"].endswith("points.csv.gz")
    names = json.loads((out / "object_names.json").read_text())
    assert names[0] == "OGLE-00000"  # string ids are kept beside the row ids
    # The store's split is exactly the split files' (rows follow the objects file's order).
    for split in ("train", "val", "test"):
        want = {line.split(",")[0] for line in (d / "splits/full/42" / f"{split}.csv").read_text().split()[1:]}
        assert {names[i] for i in s.split(42, "full", split)} == want
    assert len(s.split(42, "sub10", "train")) < len(s.split(42, "full", "train"))  # derived sub-X
    labels = s.labels
    assert all(s.class_names[labels[i]] == truth[n][0] for i, n in enumerate(names))
    # No --period-column: the Lomb-Scargle period is the stored period, with its power and a second peak.
    ps = s.root["lc/period_search"][:]
    true_p = np.array([truth[n][1] for n in names])
    assert np.mean(np.abs(ps[:, 0] / true_p - 1) < 0.01) > 0.9
    assert np.all((ps[:, 1] > 0) & (ps[:, 1] <= 1) & (ps[:, 3] <= ps[:, 1]) & (ps[:, 2] != ps[:, 0]))
    np.testing.assert_allclose(10 ** s.root["aux"][:, 1], ps[:, 0], rtol=1e-5)


def test_gaia_sized_integer_ids_stay_exact(tmp_path):
    """Gaia source_ids have 19 digits; through a float64 neighbouring ids would become one object."""
    from astrom3_hpc.data.sources.points_table import norm_id
    from astrom3_hpc.data.store import Store

    first = 4251347230184701952  # float64 spacing here is 512: all nine ids below round to one float
    truth = write_tables(tmp_path, n_per_class=3, id_of=lambda k: str(first + k))
    out = tmp_path / "g.zarr"
    assert main(ingest_args(tmp_path, out)) == 0
    s = Store(out)
    assert s.root["object_id"][:].tolist() == [int(k) for k in truth] == [first + k for k in range(9)]
    assert not (out / "object_names.json").exists()
    assert norm_id(" 004251347230184701954 ") == "4251347230184701954" and norm_id("123.0") == "123"
    # Beyond int64 the ids are kept as names, the store's object_id is the row.
    big = tmp_path / "big"
    truth = write_tables(big, n_per_class=3, id_of=lambda k: str(10 ** 20 + k))
    assert main(ingest_args(big, big / "b.zarr")) == 0
    assert json.loads((big / "b.zarr" / "object_names.json").read_text()) == list(truth)


def test_period_column_overrides_lomb_scargle(tmp_path):
    from astrom3_hpc.data.store import Store

    truth = write_tables(tmp_path, n_per_class=3)
    out = tmp_path / "p.zarr"
    assert main(ingest_args(tmp_path, out, "--period-column", "P")) == 0
    s = Store(out)
    names = [f"OGLE-{i:05d}" for i in range(9)]
    np.testing.assert_allclose(10 ** s.root["aux"][:, 1], [truth[n][1] for n in names], rtol=1e-5)


@pytest.mark.parametrize("names", [[f"Long variable class name number {i:02d} (subtype {chr(65 + i)})"
                                    for i in range(14)],
                                   [f"C{i}" for i in range(40)],
                                   ["EW", "SR", "EA", "RRAB", "EB", "ROT", "RRC", "HADS", "M", "DSCT"]],
                         ids=["14-long-names", "40-classes", "astrom3-10"])
def test_every_class_label_of_a_survey_confusion_matrix_is_readable(names, monkeypatch, tmp_path):
    """Catches the fixed-size confusion_test.png: 14 long survey names squeezed the matrix to 180 px under column
    labels piled on each other, and 40 classes overlapped every row label, column label and count."""
    from astrom3_hpc.core import figures
    from astrom3_hpc.train.evaluate import classification_report, plot_confusion

    drawn = {}

    def measure(fig, path, dpi=110):
        fig.canvas.draw()
        r, ax = fig.canvas.get_renderer(), fig.axes[0]
        drawn.update(x=[t.get_window_extent(r) for t in ax.get_xticklabels()], size=fig.canvas.get_width_height(),
                     y=[t.get_window_extent(r) for t in ax.get_yticklabels()], matrix=ax.get_window_extent(r),
                     counts=[t.get_window_extent(r) for t in ax.texts], title=ax.get_title(), dpi=fig.dpi)
        figures.pyplot().close(fig)

    monkeypatch.setattr(figures, "save", measure)
    k = len(names)
    y = np.repeat(np.arange(k), 3)
    pred = np.where(np.arange(len(y)) % 3 == 0, (y + 1) % k, y)  # two counts in every row, in neighbouring cells
    plot_confusion(classification_report(y, pred, names), tmp_path / "cm.png", "survey")
    width, height = drawn["size"]
    for axis in ("x", "y"):
        boxes = drawn[axis]
        assert [a.overlaps(b) for a, b in zip(boxes, boxes[1:])] == [False] * (k - 1), axis
        assert all(b.x0 >= 0 and b.y0 >= 0 and b.x1 <= width and b.y1 <= height for b in boxes), axis
    cell = drawn["matrix"].width / k
    assert cell >= 0.2 * drawn["dpi"]  # at least 0.2 inch: the labels take room beside the matrix, not from it
    if k > 25:
        assert drawn["counts"] == [] and "40 classes: counts left out" in drawn["title"]
    else:
        assert len(drawn["counts"]) == 2 * k and all(b.width < cell and b.height < cell for b in drawn["counts"])


def test_finetune_and_baseline_write_predictions_and_collect(lc_store, tmp_path, caplog, capsys):
    from astrom3_hpc.cli.results import main as collect_main
    from astrom3_hpc.data.store import Store

    caplog.set_level(logging.INFO)  # the CLI's level (pytest's own root handler keeps basicConfig from setting it)
    _, out, _ = lc_store
    s = Store(out)
    test_rows = s.split(42, "full", "test")
    runs = tmp_path / "runs"
    ft = runs / "photo-full-s42-scratch"
    rendezvous = {k: os.environ.get(k) for k in ("MASTER_PORT", "MASTER_ADDR", "RANK", "WORLD_SIZE")}
    assert main(["finetune", "--config", str(ROOT / "configs/test.yaml"), "--run-dir", str(ft), "--mode", "photo",
                 "--init", "scratch", "--store", str(out), "--set", "train.epochs=1", "train.batch_size=8"]) == 0
    # An in-process job leaves no rendezvous behind: an sbatch from this process once handed a 2-rank job the
    # finished job's MASTER_PORT, still held here (EADDRINUSE on rank 0, rank 1 waiting for the timeout).
    assert {k: os.environ.get(k) for k in rendezvous} == rendezvous
    # The paper's encoder on a light-curve store: the run says which models were measured for such stores.
    assert "--config configs/periodic_finetune.yaml" in caplog.text
    bl = runs / "baseline-s42"
    # A seed the store has no split for: one line naming it, and no run directory left behind.
    assert main(["baseline", str(out), "--seed", "7", "--out", str(runs / "baseline-s7")]) == 2
    assert "no such split 'splits/seed7/full/train'" in capsys.readouterr().err
    assert not (runs / "baseline-s7").exists()
    assert main(["baseline", str(out), "--seed", "42", "--out", str(bl)]) == 0
    for run in (ft, bl):
        m = json.loads((run / "metrics.json").read_text())
        assert m["test"]["class_names"] == sorted(CLASSES) and m["test"]["n"] == len(test_rows)
        assert (run / "confusion_test.png").stat().st_size > 1000
        with open(run / "predictions.csv") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["row"]) for r in rows] == sorted(test_rows.tolist())
        assert set(rows[0]) == {"row", "object_id", "true_class", "predicted_class",
                                *[f"p_{c}" for c in sorted(CLASSES)]}
        assert all(r["object_id"].startswith("OGLE-") for r in rows)
        assert all(abs(sum(float(r[f"p_{c}"]) for c in CLASSES) - 1) < 1e-4 for r in rows)
        assert all(r["predicted_class"] == max(CLASSES, key=lambda c: float(r[f"p_{c}"])) for r in rows)
        with open(run / "predictions_val.csv") as f:
            val = [int(r["row"]) for r in csv.DictReader(f)]
        assert val == sorted(s.split(42, "full", "val").tolist()) and m["val"]["n"] == len(val)
    # Each job's log is in its run dir (and nothing of one job leaks into the other's).
    assert "rank 0 INFO astrom3: finished:" in (ft / "train.log").read_text()
    bl_log = (bl / "train.log").read_text()
    assert "rank 0 INFO astrom3: baseline full seed 42: test accuracy" in bl_log and "finished:" not in bl_log
    # Three well-separated periods: the classical baseline should not miss.
    assert json.loads((bl / "metrics.json").read_text())["test"]["macro_f1"] > 0.9
    # The network averaged with the baseline (docs/lightcurves.md, "Which model to run").
    both = runs / "periodic+baseline-s42"
    assert main(["ensemble", str(ft), str(bl), "--out", str(both)]) == 0
    probs = {}
    for run in (ft, bl, both):
        with open(run / "predictions.csv") as f:
            probs[run] = np.array([[float(r[f"p_{c}"]) for c in sorted(CLASSES)] for r in csv.DictReader(f)])
    np.testing.assert_allclose(probs[both], (probs[ft] + probs[bl]) / 2, atol=1e-5)
    # The same average in one fine-tune run: the same network (same seed), the baseline fitted at its end.
    # (A second DeepSpeed engine in this process is not possible, so it runs as the jobs do.)
    from test_train import run_job

    hybrid = tmp_path / "hybrid"
    run_job("finetune", hybrid, out, sets=("train.epochs=1", "train.batch_size=8", "finetune.average_baseline=true"),
            extra=("--mode", "photo", "--init", "scratch"))
    for name in ("predictions.csv", "predictions_val.csv"):
        with open(hybrid / name) as f:
            mine = np.array([[float(r[f"p_{c}"]) for c in sorted(CLASSES)] for r in csv.DictReader(f)])
        with open((both if name == "predictions.csv" else ft) / name) as f:
            ref = np.array([[float(r[f"p_{c}"]) for c in sorted(CLASSES)] for r in csv.DictReader(f)])
        if name == "predictions_val.csv":  # the ensemble's own val average is checked in test_ensemble
            with open(bl / name) as f:
                ref = (ref + np.array([[float(r[f"p_{c}"]) for c in sorted(CLASSES)] for r in csv.DictReader(f)])) / 2
        np.testing.assert_allclose(mine, ref, atol=1e-5)
    mh, mf, mb = (json.loads((r / "metrics.json").read_text()) for r in (hybrid, ft, bl))
    assert mh["average_baseline"] is True and mh["test"]["macro_f1"] == json.loads(
        (both / "metrics.json").read_text())["test"]["macro_f1"]
    for key in ("test", "val"):
        assert mh["network"][key]["macro_f1"] == mf[key]["macro_f1"]
        assert mh["baseline"][key]["confusion"] == mb[key]["confusion"]
    assert "averaging with the classical baseline" in (hybrid / "train.log").read_text()
    # Averaging that run with the baseline run again would count the same fit twice: said, not silently done.
    with caplog.at_level(logging.WARNING, logger="astrom3"):
        assert main(["ensemble", str(hybrid), str(bl), "--out", str(tmp_path / "twice")]) == 0
    assert f"the classical baseline is in 2 of the 2 members ({hybrid}, {bl}" in caplog.text
    assert main(["ensemble", str(ft), str(ft), "--out", str(tmp_path / "same")]) == 2
    assert f"{ft}: listed more than once" in capsys.readouterr().err
    assert collect_main([str(runs), "--out", str(tmp_path / "res")]) == 0
    md = (tmp_path / "res" / "results.md").read_text()
    assert (tmp_path / "res" / "per_class_recall.png").stat().st_size > 1000
    assert "| photo | full | baseline | 1 |" in md and "| photo | full | ensemble | 1 |" in md and "HADS_or_DSCT" in md


def test_a_baseline_records_its_store_absolute_and_predicts_from_another_directory(lc_store, tmp_path,
                                                                                    monkeypatch):
    """`astrom3 baseline STORE` recorded STORE as typed: `predict` from another directory then said the training
    store, which never moved, did not exist."""
    _, out, _ = lc_store
    monkeypatch.chdir(out.parent)
    assert main(["baseline", out.name, "--seed", "42", "--out", str(tmp_path / "bl")]) == 0
    assert json.loads((tmp_path / "bl" / "metrics.json").read_text())["store"] == str(out.resolve())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["predict", "../bl", "--store", str(out), "--out", "pred", "--no-progress"]) == 0
    assert (tmp_path / "elsewhere" / "pred" / "predictions.csv").exists()


def test_a_modality_the_store_lacks_is_refused_before_any_training(lc_store, tmp_path):
    """Catches a run that learns from zero-filled inputs: fine-tuning spectra on a light-curve store exited 0 with
    chance-level scores. The trainer and `sweep create` now refuse it, naming the store and what it holds."""
    import subprocess
    import sys

    from astrom3_hpc.orchestration.submission import create_sweep

    _, out, _ = lc_store
    for args, setting in ((["finetune", "--mode", "spectra", "--init", "scratch"], "finetune.mode spectra"),
                          (["finetune", "--mode", "all", "--init", "scratch"], "finetune.mode all"),
                          (["pretrain"], "model.modalities")):
        run = tmp_path / args[0] / args[-1]
        r = subprocess.run([sys.executable, "-m", "astrom3_hpc.cli", *args, "--run-dir", str(run), "--set",
                            f"data.store={out}", "train.epochs=1"], capture_output=True, text=True)
        assert r.returncode == 2, r.stderr[-2000:]
        assert f"{out}: no object of the train split (seed 42, full) has spectra, which this run reads ({setting}); " \
               "the store holds photo (source: lightcurves)" in r.stderr and "Traceback" not in r.stderr
        assert not (run / "metrics.json").exists() and not (run / "checkpoints").exists()  # not "started"
    with pytest.raises(ValueError, match="holds photo only: mode all reads meta, spectra; mode meta reads meta. "):
        create_sweep(tmp_path / "sw", seeds=[42], modes=["photo", "meta", "all"], subsets=["full"],
                     inits=["scratch"], store=str(out))
    with pytest.raises(ValueError, match="holds photo only: init clip's pretraining reads meta, spectra. "):
        create_sweep(tmp_path / "sw", seeds=[42], modes=["photo"], subsets=["full"], store=str(out))
    assert not (tmp_path / "sw").exists()
    sw = create_sweep(tmp_path / "sw", seeds=[42], modes=["photo"], subsets=["full"], inits=["scratch", "baseline"],
                      store=str(out))
    assert len(sw.tasks) == 2


def test_unlabelled_objects_are_kept_on_request_and_classified_by_every_run(tmp_path, capsys):
    """A survey's unclassified variables ride along in the store (label -1, in no split) and every fine-tune
    and baseline run writes their predicted classes."""
    from test_train import run_job

    from astrom3_hpc.data.store import Store

    truth = write_tables(tmp_path, n_per_class=14, unlabelled_per_class=2)
    with open(tmp_path / "objects.csv") as f:
        unlabelled = sorted(r["star"] for r in csv.DictReader(f) if not r["cls"])
    out = tmp_path / "s.zarr"
    assert main(ingest_args(tmp_path, out, "--keep-unlabelled", "--drop-unlabelled")) == 2
    assert "at most one of --drop-unlabelled and --keep-unlabelled" in capsys.readouterr().err
    assert main(ingest_args(tmp_path, out)) == 2
    assert "--keep-unlabelled" in capsys.readouterr().err  # the error names the way to keep them
    assert main(ingest_args(tmp_path, out, "--keep-unlabelled")) == 0
    s = Store(out)
    names = json.loads((out / "object_names.json").read_text())
    rows = s.unlabelled_rows()
    assert sorted(names[i] for i in rows) == unlabelled and (s.labels[rows] == -1).all()
    assert s.class_names == tuple(sorted(CLASSES)) and s.attrs["provenance"]["source"]["n_unlabelled"] == 6
    for split in ("train", "val", "test"):
        assert not set(s.split(42, "full", split)) & set(rows)
    assert main(["info", str(out)]) == 0
    assert "objects without a class: 6" in capsys.readouterr().out
    runs = {"baseline": tmp_path / "baseline", "finetune": tmp_path / "ft", "hybrid": tmp_path / "hybrid"}
    assert main(["baseline", str(out), "--out", str(runs["baseline"])]) == 0
    run_job("finetune", runs["finetune"], out, sets=("train.epochs=1", "train.batch_size=8"),
            extra=("--mode", "photo", "--init", "scratch"))
    run_job("finetune", runs["hybrid"], out, sets=("train.epochs=1", "train.batch_size=8",
                                                  "finetune.average_baseline=true"),
            extra=("--mode", "photo", "--init", "scratch"))
    preds = {}
    for kind, run in runs.items():
        with open(run / "predictions_unlabelled.csv") as f:
            preds[kind] = list(csv.DictReader(f))
        assert [r["object_id"] for r in preds[kind]] == [names[i] for i in rows]
        assert all(r["true_class"] == "" and r["predicted_class"] in CLASSES for r in preds[kind])
        m = json.loads((run / "metrics.json").read_text())
        assert m["unlabelled"]["n"] == 6 and sum(m["unlabelled"]["predicted"].values()) == 6
        assert m["test"]["n"] == len(s.split(42, "full", "test"))  # scores count labelled objects only
    # Well-separated periods: the baseline names the hidden classes.
    assert sum(r["predicted_class"] == truth[r["object_id"]][0] for r in preds["baseline"]) >= 5
    p = {k: np.array([[float(r[f"p_{c}"]) for c in sorted(CLASSES)] for r in v]) for k, v in preds.items()}
    np.testing.assert_allclose(p["hybrid"], (p["finetune"] + p["baseline"]) / 2, atol=1e-5)
    both = tmp_path / "ensemble"
    assert main(["ensemble", str(runs["finetune"]), str(runs["baseline"]), "--out", str(both)]) == 0
    with open(both / "predictions_unlabelled.csv") as f:
        ens = list(csv.DictReader(f))
    assert [r["object_id"] for r in ens] == [r["object_id"] for r in preds["hybrid"]]
    np.testing.assert_allclose([[float(r[f"p_{c}"]) for c in sorted(CLASSES)] for r in ens], p["hybrid"], atol=1e-5)
    assert json.loads((both / "metrics.json").read_text())["unlabelled"]["n"] == 6


def test_lomb_scargle_backends_agree():
    from astrom3_hpc.data import periods

    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0, 300, 200))
    y = np.sin(2 * np.pi * t / 0.377) + rng.normal(0, 0.1, len(t))
    a = periods.search(t, y, np.full(len(t), 0.1), "nifty")
    b = periods.search(t, y, np.full(len(t), 0.1), "astropy")
    assert abs(a.period / 0.377 - 1) < 1e-3 and abs(b.period / a.period - 1) < 1e-4
    assert abs(a.power - b.power) < 1e-3


def test_min_period_reaches_short_pulsators(tmp_path, capsys):
    """A 0.022-day delta Scuti is below the default grid; --min-period 0.02 finds it, and the store says so."""
    from astrom3_hpc.data import periods
    from astrom3_hpc.data.store import Store

    rng = np.random.default_rng(4)
    t = np.sort(rng.uniform(0, 300, 250))
    y = np.sin(2 * np.pi * t / 0.022) + rng.normal(0, 0.1, len(t))
    assert abs(periods.search(t, y, None).period / 0.022 - 1) > 0.05
    assert abs(periods.search(t, y, None, min_period=0.02).period / 0.022 - 1) < 1e-3
    write_tables(tmp_path, n_per_class=3)
    out = tmp_path / "m.zarr"
    assert main(ingest_args(tmp_path, out, "--min-period", "0")) == 2
    assert "--min-period must be a positive number of days" in capsys.readouterr().err
    assert not out.exists()
    assert main(ingest_args(tmp_path, out, "--min-period", "0.02")) == 0
    assert Store(out).attrs["provenance"]["source"]["min_period_days"] == 0.02


@pytest.mark.skipif(not (REALDATA / "ztf_vsx").is_dir() and not IN_CI, reason="shared real data not present")
def test_real_ztf_slice(tmp_path):
    """40 real ZTF DR3 objects through the generic reader with the VSX types as classes."""
    from astrom3_hpc.data.store import Store

    src = REALDATA / "ztf_vsx"
    with open(src / "ztf_vsx_objects.csv") as f:
        every = list(csv.DictReader(f))
    rows = [r for t, n in (("RRAB", 15), ("RRC", 13), ("ELL", 12)) for r in [r for r in every if r["Type"] == t][:n]]
    keep = {r["vsx_oid"] for r in rows}
    with open(tmp_path / "objects.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with gzip.open(src / "ztf_vsx_lightcurves_long.csv.gz", "rt") as fi, open(tmp_path / "points.csv", "w") as fo:
        fo.write(fi.readline())
        fo.writelines(line for line in fi if line.split(",", 1)[0] in keep)
    out = tmp_path / "ztf.zarr"
    assert main(["ingest", "lightcurves", "--points", str(tmp_path / "points.csv"), "--objects",
                 str(tmp_path / "objects.csv"), "--id-column", "vsx_oid", "--time-column", "mjd", "--mag-column",
                 "mag", "--err-column", "magerr", "--band-column", "filter", "--band", "2", "--label-column",
                 "Type", "--out", str(out), "--no-progress", "--on-error", "skip"]) == 0
    s = Store(out)
    assert set(s.class_names) <= {"RRAB", "RRC", "ELL"} and s.n_objects == 40
    ids = s.root["object_id"][:]
    cat = {int(r["vsx_oid"]): float(r["period"]) for r in rows if r["period"]}
    ps = s.root["lc/period_search"][:, 0]
    rr = [i for i, o in enumerate(ids) if o in cat and s.class_names[s.labels[i]] in ("RRAB", "RRC")]
    ratio = np.array([ps[i] / cat[int(ids[i])] for i in rr])
    # Pulsators: Lomb-Scargle finds the catalogue period itself.
    assert len(rr) >= 20 and np.mean(np.abs(ratio - 1) < 0.01) > 0.85


def test_periodic_encoder_sees_the_fold_and_paper_is_unchanged():
    import torch

    from astrom3_hpc.core.config import ModelConfig
    from astrom3_hpc.data.lc_features import FEATURE_NAMES
    from astrom3_hpc.data.preprocess import DAYS_PER_YEAR
    from astrom3_hpc.model import build_classifier
    from astrom3_hpc.data.lc_folds import fold_at_period_and_double, fold_bins, phase

    paper = build_classifier(ModelConfig(preset="paper", d_model=16, n_layers=1, n_heads=2, d_ff=32), "photo", 3)
    assert paper.input_keys["photo"] == ("lc", "lc_mask")
    per = build_classifier(ModelConfig(preset="periodic", d_model=16, n_layers=1, n_heads=2, d_ff=32), "photo", 4)
    assert per.input_keys["photo"] == ("lc", "lc_mask", "lc_period", "lc_period_search", "lc_features", "lc_fold")
    B, L = 3, 200
    t = torch.sort(torch.rand(B, L), dim=1).values
    span_years = 2.0
    lc = torch.zeros(B, L, 9)
    lc[:, :, 0] = t
    lc[:, :, 8] = span_years
    days = t * span_years * DAYS_PER_YEAR
    lc[:, :, 1] = torch.sin(2 * torch.pi * days / 0.5)
    mask = torch.ones(B, L)
    logits = per({"lc": lc, "lc_mask": mask, "lc_period": torch.full((B,), 0.5),
                  "lc_period_search": torch.zeros(B, 4), "lc_features": torch.zeros(B, len(FEATURE_NAMES)),
                  "lc_fold": fold_at_period_and_double(days, lc[:, :, 1], mask, torch.full((B,), 0.5))})
    assert logits.shape == (B, 4) and torch.isfinite(logits).all()
    # The folded view at the true period is a clean sinusoid; the brightest bin comes first.
    folded = fold_bins(phase(days, torch.full((B,), 0.5)), lc[:, :, 1], mask)
    assert folded.shape == (B, 2, 32)
    assert torch.all(folded[:, 0, 0] > 0.9) and torch.all(folded[:, 0, 16] < -0.9)
    # periodic_fold_period: the fold nets also read log10 of the period the curve was folded at, so one fold
    # shape at two periods is two inputs (a delta Scuti and a contact binary at half its orbit).
    cfg = ModelConfig(preset="periodic", d_model=16, n_layers=1, n_heads=2, d_ff=32, periodic_fold_period=True,
                      periodic_views=["time", "phase", "fold", "fold_full"])
    cfg.validate()
    fp = build_classifier(cfg, "photo", 4).encoders["photo"]
    fp.eval()
    assert fp.fold[0].in_channels == fp.fold_full[0].in_channels == 5
    fold = fold_at_period_and_double(days, lc[:, :, 1], mask, torch.full((B,), 0.5))[:1].expand(B, -1, -1)
    with_p = fp._with_period(fold, torch.tensor([0.04, 0.2, 0.2]))
    assert torch.equal(with_p[:, :4], fold) and torch.allclose(with_p[:, 4, 0],
                                                               torch.log10(torch.tensor([0.04, 0.2, 0.2])))
    out = fp.fold_full(with_p)
    assert not torch.allclose(out[0], out[1]) and torch.allclose(out[1], out[2])
    with pytest.raises(ValueError, match="model.periodic_fold_period"):
        ModelConfig(preset="periodic", periodic_fold_period="yes").validate()


def test_embed_a_photometry_only_store(lc_store, pretrained_2rank, tmp_path):
    """A CLIP model pretrained elsewhere embeds a lightcurves store: photometry vectors for every object."""
    import subprocess
    import sys

    from dist_helpers import child_env

    from astrom3_hpc.science.common import read_embeddings

    _, out, _ = lc_store
    run = pretrained_2rank  # read only: the vectors go to --out-dir
    r = subprocess.run([sys.executable, "-m", "astrom3_hpc.cli", "embed", str(run), "--store", str(out),
                        "--out-dir", str(tmp_path / "sci"), "--no-progress"], env=child_env(), capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    emb = read_embeddings(tmp_path / "sci" / "embeddings.zarr")
    assert len(emb.row) == 42 and emb.present[:, 0].all() and not emb.present[:, 1:].any()
    assert np.isfinite(emb.vectors["photo"]).all()
    assert emb.attrs["class_names"] == sorted(CLASSES)
    # The science tools name objects by the survey's ids, as predictions.csv does: they wrote the store row as
    # `object_id`, and `search --query 10` searched with row 10, whatever object the user's "10" was.
    names = json.loads((out / "object_names.json").read_text())
    assert list(emb.names) == [names[r] for r in emb.row]
    query = names[int(emb.row[5])]
    assert main(["search", str(run), "--query", query, "--out-dir", str(tmp_path / "sci"), "-k", "3"]) == 0
    res = json.loads((tmp_path / "sci" / "search" / f"object-{query}_photo.json").read_text())
    assert res["query"]["object_id"] == query and res["query"]["row"] == int(emb.row[5])
    assert res["neighbours"]["photo"][0]["object_id"] == query  # itself, by its own id
    assert main(["search", str(run), "--query", "5", "--out-dir", str(tmp_path / "sci")]) != 0  # not an id here
    assert main(["outliers", str(run), "--out-dir", str(tmp_path / "sci")]) == 0
    with open(tmp_path / "sci" / "outliers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["object_id"] for r in rows} <= set(names) and all(names[int(r["row"])] == r["object_id"] for r in rows)


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_mpi_ingest_equals_serial(lc_store, tmp_path):
    """Two ranks each read the tables and search the periods of their own objects: the same store. The small
    tables keep the default 8192-object chunks here: ranks once had to own whole table chunks, so a store smaller
    than one (a few-thousand-object survey) went to rank 0 alone, and this one left rank 1 idle."""
    import os
    import subprocess
    import sys

    from astrom3_hpc.data.store import Store

    d, serial, _ = lc_store
    out = tmp_path / "mpi.zarr"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    args = ingest_args(d, out, "--splits-from", str(d))
    k = args.index("--table-chunk")
    del args[k:k + 2]
    r = subprocess.run(["mpiexec", "-n", "2", "astrom3", *args], env=env, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = Store(serial), Store(out)
    assert b.attrs["provenance"]["mpi_ranks"] == 2 and b.attrs["layout"]["table_chunk"] == 8192
    n = b.attrs["n_objects"]
    first = -(-n // 8) // 2 * 8  # rank 0: the first half of the whole 8-object spectra blocks
    assert b.attrs["summary"]["objects_per_rank"] == [first, n - first] and 0 < first < n
    for name in ("object_id", "label", "lc/values", "lc/period_search", "aux", "splits/seed42/full/train",
                 "splits/seed42/sub10/test"):
        np.testing.assert_array_equal(a.root[name][:], b.root[name][:], err_msg=name)
    assert (serial / "object_names.json").read_text() == (out / "object_names.json").read_text()
