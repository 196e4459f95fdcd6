"""`astrom3 predict`: a finished run classifies another store's objects, scaled as its training objects were.

Real runs on real stores: a periodic fine-tune averaged with the baseline (its features, folds and the
baseline all pass through the new path), a baseline run and their ensemble. On the training store they
reproduce their own predictions.csv; on a second store holding some of the same objects (several without a
class) they give those objects the same probabilities, so nothing is normalised by the new store."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from contextlib import contextmanager

import numpy as np
import pytest

from test_ensemble import TINY
from lightcurve_tables import CLASSES, ingest_args, write_tables
from test_train import run_job

from astrom3_hpc.cli import main


def _rows(path):
    with open(path, newline="") as f:
        return {r["object_id"]: r for r in csv.DictReader(f)}


def _probs(rows: dict, ids) -> np.ndarray:
    return np.array([[float(rows[i][f"p_{c}"]) for c in sorted(CLASSES)] for i in ids])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    write_tables(d / "train")
    store = d / "train.zarr"
    assert main(ingest_args(d / "train", store)) == 0
    runs = {"hybrid": d / "hybrid", "baseline": d / "baseline", "ensemble": d / "ensemble"}
    run_job("finetune", runs["hybrid"], store, sets=(*TINY, "finetune.average_baseline=true"),
            extra=("--mode", "photo", "--init", "scratch"))
    assert main(["baseline", str(store), "--out", str(runs["baseline"])]) == 0
    assert main(["ensemble", str(runs["hybrid"]), str(runs["baseline"]), "--out", str(runs["ensemble"])]) == 0
    # A new "field": every third object of the same survey, a third of them without a class.
    with open(d / "train" / "objects.csv", newline="") as f:
        objects = list(csv.DictReader(f))
    new = d / "new"
    new.mkdir()
    shutil.copy(d / "train" / "points.csv.gz", new / "points.csv.gz")
    kept = objects[::3]
    with open(new / "objects.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["star", "cls", "P"])
        for i, r in enumerate(kept):
            w.writerow([r["star"], "" if i % 3 == 0 else r["cls"], r["P"]])
    new_store = d / "new.zarr"
    assert main(ingest_args(new, new_store, "--keep-unlabelled")) == 0
    return d, store, new_store, runs, [r["star"] for r in kept]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["hybrid", "baseline", "ensemble"])
def test_predict_reproduces_the_run_and_ignores_the_new_stores_scaling(trained, kind, capsys):
    d, store, new_store, runs, kept = trained
    run = runs[kind]
    same = d / f"same-{kind}"
    assert main(["predict", str(run), "--store", str(store), "--out", str(same)]) == 0
    everything = _rows(same / "predictions.csv")
    own = _rows(run / "predictions.csv")  # the run's own test predictions
    np.testing.assert_allclose(_probs(everything, own), _probs(own, own), atol=2e-6)
    assert all(everything[i]["predicted_class"] == own[i]["predicted_class"] for i in own)
    m = json.loads((same / "metrics.json").read_text())
    assert m["all"]["n"] == len(everything) == 3 * 14 and m["scored"]["n"] == 3 * 14

    out = d / f"new-{kind}"
    capsys.readouterr()
    assert main(["predict", str(run), "--store", str(new_store), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    new = _rows(out / "predictions.csv")
    assert sorted(new) == sorted(kept)
    np.testing.assert_allclose(_probs(new, kept), _probs(everything, kept), atol=2e-6)
    assert sum(r["true_class"] == "" for r in new.values()) == len(kept[::3])
    m = json.loads((out / "metrics.json").read_text())
    assert printed["objects"] == m["all"]["n"] == len(kept)
    assert m["scored"]["n"] == len(kept) - len(kept[::3]) and m["class_names"] == sorted(CLASSES)
    # Beside the runs, the outputs are not mistaken for (failed) runs by `astrom3 collect`.
    from astrom3_hpc.results.read import gather_dir

    found = {r.run_dir: r.status for r in gather_dir(d).runs}
    assert f"new-{kind}" not in found and found[run.name] == "complete"


def test_a_table_of_new_objects_without_any_class_is_ingested_and_classified(trained, tmp_path, capsys):
    """Catches "no labelled objects" refusing a table whose label cells are all blank under --keep-unlabelled, the
    way docs/lightcurves.md ingests new objects for `astrom3 predict`: a store without classes or splits."""
    d, _, new_store, runs, kept = trained
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(d / "new" / "points.csv.gz", new / "points.csv.gz")
    with open(d / "new" / "objects.csv", newline="") as f:
        rows = list(csv.reader(f))
    with open(new / "objects.csv", "w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [[r[0], "", r[2]] for r in rows[1:]])
    store = tmp_path / "blank.zarr"
    assert main(ingest_args(new, store, "--drop-unlabelled")) == 2  # without --keep-unlabelled: an error saying so
    err = capsys.readouterr().err
    assert f"objects.csv: no objects to ingest: {len(kept)} without a class left out by --drop-unlabelled " \
           "(--keep-unlabelled keeps them" in err
    assert not store.exists()
    assert main(ingest_args(new, store, "--keep-unlabelled")) == 0, capsys.readouterr().err
    capsys.readouterr()
    from astrom3_hpc.data.store import Store

    summary = Store(store).attrs["summary"]  # n_valid said 0: it counted labelled objects only
    assert (summary["n_valid"], summary["n_labelled"]) == (len(kept), 0)
    assert main(["info", str(store)]) == 0
    assert f"objects without a class: {len(kept)}" in capsys.readouterr().out
    for name, s in (("blank", store), ("some-labelled", new_store)):
        assert main(["predict", str(runs["baseline"]), "--store", str(s), "--out", str(tmp_path / name)]) == 0
    got, want = _rows(tmp_path / "blank" / "predictions.csv"), _rows(tmp_path / "some-labelled" / "predictions.csv")
    assert sorted(got) == sorted(kept) and all(r["true_class"] == "" for r in got.values())
    np.testing.assert_allclose(_probs(got, kept), _probs(want, kept), atol=2e-6)
    m = json.loads((tmp_path / "blank" / "metrics.json").read_text())
    assert m["all"]["n"] == len(kept) and m["class_names"] == sorted(CLASSES)
    # And embedded by the fine-tune (scaled by its training store): the vectors it gives them in a labelled store.
    from astrom3_hpc.science.common import read_embeddings

    for name, s in (("blank", store), ("some-labelled", new_store)):
        assert main(["embed", str(runs["hybrid"]), "--store", str(s), "--no-progress",
                     "--out-dir", str(tmp_path / f"emb-{name}")]) == 0, capsys.readouterr().err
    a, b = (read_embeddings(tmp_path / f"emb-{n}" / "embeddings.zarr") for n in ("blank", "some-labelled"))
    assert (a.label == -1).all() and sorted(a.object_id) == sorted(b.object_id)
    order = np.argsort(a.object_id), np.argsort(b.object_id)
    np.testing.assert_allclose(a.vectors["photo"][order[0]], b.vectors["photo"][order[1]], atol=1e-6)
    # Nothing to train on: said, before any run directory (the baseline failed in scikit-learn, having made one).
    capsys.readouterr()
    assert main(["baseline", str(store), "--seed", "42", "--out", str(tmp_path / "bl")]) == 2
    assert "split seed42/full/train is empty: the store holds no object with a class" in capsys.readouterr().err
    assert not (tmp_path / "bl").exists()


def test_predict_refuses_what_it_cannot_use(trained, tmp_path, capsys):
    d, store, new_store, runs, _ = trained
    assert main(["predict", str(tmp_path), "--store", str(new_store), "--out", str(tmp_path / "o")]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    # The training store moved: named, and --train-store points at it; another store is refused by content.
    moved = d / "moved.zarr"
    store.rename(moved)
    try:
        assert main(["predict", str(runs["hybrid"]), "--store", str(new_store), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert str(store) in err and "--train-store" in err
        assert main(["predict", str(runs["hybrid"]), "--store", str(new_store), "--out", str(tmp_path / "o"),
                     "--train-store", str(new_store)]) == 2
        assert "not the store" in capsys.readouterr().err
        assert main(["predict", str(runs["hybrid"]), "--store", str(new_store), "--out", str(tmp_path / "o"),
                     "--train-store", str(moved)]) == 0
    finally:
        moved.rename(store)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["metrics.json", "predictions.csv"]
    assert "ingest_differences" not in json.loads((tmp_path / "o" / "metrics.json").read_text())


def test_predict_refuses_to_write_over_a_run(trained, tmp_path, capsys):
    """Catches `--out RUN` overwriting the run's own metrics.json and predictions.csv: its test metrics were lost,
    and predict then refused the run itself as a 'predict' run."""
    from astrom3_hpc.train.predict import predict

    d, store, new_store, runs, _ = trained
    before = {r: {n: (r / n).read_bytes() for n in ("metrics.json", "predictions.csv")} for r in runs.values()}
    for run, out, why in ((runs["hybrid"], runs["hybrid"], "is the directory of"),
                          (runs["hybrid"], f"{runs['hybrid']}/../{runs['hybrid'].name}", "is the directory of"),
                          (runs["ensemble"], runs["baseline"], "is the directory of"),  # a member of the ensemble
                          (runs["baseline"], runs["hybrid"], "holds a metrics.json that predict did not write")):
        capsys.readouterr()
        assert main(["predict", str(run), "--store", str(new_store), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"astrom3 predict: error: {out} {why}"), err
        assert lines[0].endswith("give another output directory")
        with pytest.raises(ValueError, match="give another output directory"):
            predict(run, new_store, out, progress=False)
    assert {r: {n: (r / n).read_bytes() for n in ("metrics.json", "predictions.csv")} for r in runs.values()} == before
    # An earlier predict's directory is written anew.
    for _ in range(2):
        assert main(["predict", str(runs["baseline"]), "--store", str(new_store), "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["kind"] == "predict"


def test_predict_gives_back_the_callers_torch_threads(trained, monkeypatch):
    """Catches run_probabilities leaving torch's process-wide thread count at its `threads` (1 by default): a
    notebook that classified a store with it ran single-threaded from then on."""
    import torch

    from astrom3_hpc.data.store import Store
    from astrom3_hpc.train import predict as predict_module

    _, _, new_store, runs, _ = trained
    store = Store(new_store)
    rows = store.valid_rows()[:4]
    caller = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        probs, _, _ = predict_module.run_probabilities(runs["hybrid"], store, rows, threads=1, progress=False)
        assert probs.shape[0] == len(rows) and torch.get_num_threads() == 3

        @contextmanager
        def failing_forward(device):
            raise RuntimeError("forward failed")
            yield

        monkeypatch.setattr(predict_module, "evaluation_forward", failing_forward)
        with pytest.raises(RuntimeError, match="forward failed"):
            predict_module.run_probabilities(runs["hybrid"], store, rows, threads=1, progress=False)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(caller)


def _nan_logits_for_row(monkeypatch, row: int) -> None:
    """The classifier's output NaN for one store row only: what an object with an infinite light curve gave."""
    import torch

    from astrom3_hpc.model.classifier import AstroM3Classifier

    real = AstroM3Classifier.forward

    def forward(self, batch):
        logits = real(self, batch)
        hit = (batch["index"] == row).to(logits.device)[:, None]
        return torch.where(hit, torch.full_like(logits, float("nan")), logits)

    monkeypatch.setattr(AstroM3Classifier, "forward", forward)


def test_predict_gives_no_class_from_nan_probabilities(trained, tmp_path, monkeypatch, capsys):
    """Catches a row of NaN probabilities classified as the first class (argmax of NaN is 0), exit 0: counted in
    the report and written to predictions.csv as `B,A,nan,nan,nan`."""
    from astrom3_hpc.data.store import Store, object_names

    _, _, new_store, runs, _ = trained
    store = Store(new_store)
    row = int(store.valid_rows()[1])
    _nan_logits_for_row(monkeypatch, row)
    for kind in ("hybrid", "ensemble"):
        capsys.readouterr()
        assert main(["predict", str(runs[kind]), "--store", str(new_store), "--out", str(tmp_path / kind)]) == 5
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"astrom3 predict: error: {runs[kind]} on {new_store}: 1 "
                                                       "object(s) got non-finite class probabilities (object_id "
                                                       f"{object_names(store)[row]})"), lines
        assert not (tmp_path / kind).exists()


@pytest.mark.timeout(600)
def test_a_fine_tune_gives_no_class_from_nan_probabilities(trained, tmp_path, monkeypatch, capsys):
    """Catches the fine-tune's own test evaluation classifying a test object whose probabilities are NaN as the
    first class, exit 0, with the object in its accuracy, macro-F1 and predictions.csv."""
    from conftest import ROOT

    from astrom3_hpc.data.store import Store, object_names

    _, store, _, _, _ = trained
    s = Store(store)
    row = int(s.split(42, "full", "test")[2])  # never trained or validated on: only the test evaluation sees it
    _nan_logits_for_row(monkeypatch, row)
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["finetune", "--config", str(ROOT / "configs" / "test.yaml"), "--run-dir", str(run), "--mode", "photo",
                 "--init", "scratch", "--store", str(store),
                 "--set", *TINY, "train.epochs=1", "train.max_steps_per_epoch=2"]) == 5
    err = capsys.readouterr().err
    assert f"astrom3 finetune: error: {run}, test objects: 1 object(s) got non-finite class probabilities " \
           f"(object_id {object_names(s)[row]})" in err, err
    assert not (run / "metrics.json").exists() and not (run / "predictions.csv").exists()


def test_predict_warns_about_light_curves_made_otherwise(trained, tmp_path, caplog):
    """... and about classes spelled otherwise ("m_or_sr" for the run's "M_or_SR"), left unscored."""
    d, store, new_store, runs, _ = trained
    shutil.copytree(d / "new", tmp_path / "new")
    with open(d / "new" / "objects.csv", newline="") as f:
        rows = list(csv.reader(f))
    with open(tmp_path / "new" / "objects.csv", "w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [[r[0], r[1].lower(), r[2]] for r in rows[1:]])
    other = tmp_path / "other.zarr"  # the same objects, another period grid
    assert main(ingest_args(tmp_path / "new", other, "--keep-unlabelled", "--min-period", "0.02")) == 0
    with caplog.at_level(logging.WARNING, logger="astrom3"):
        assert main(["predict", str(runs["baseline"]), "--store", str(other), "--out", str(tmp_path / "o")]) == 0
    assert "min_period_days 0.03 there, 0.02 here" in caplog.text
    assert "class 'm_or_sr' is the run's 'M_or_SR' but for case or punctuation: its objects are classified, " \
           "not scored" in caplog.text
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["ingest_differences"] == {str(store): {"min_period_days": [0.03, 0.02]}}
    assert "scored" not in m and m["n_labelled_unknown_class"] == sum(1 for r in rows[1:] if r[1])


@pytest.mark.timeout(600)
def test_predict_classifies_only_objects_with_what_the_model_reads(trained, tiny_store, tmp_path, capsys, caplog):
    """Catches a model classifying objects from zero-filled inputs: a metadata run on a store of light curves
    alone once labelled every object, exit 0."""
    _, _, new_store, _, _ = trained
    meta = tmp_path / "meta"
    run_job("finetune", meta, tiny_store, sets=("train.epochs=1", "train.batch_size=8"),
            extra=("--mode", "meta", "--init", "scratch"))
    assert main(["predict", str(meta), "--store", str(new_store), "--out", str(tmp_path / "o")]) == 2
    assert f"{new_store}: no valid object has the modalities {meta} reads (meta)" in capsys.readouterr().err
    assert not (tmp_path / "o" / "predictions.csv").exists()
    # On a store where some objects lack the modality: those are left out, counted and said.
    from astrom3_hpc.data.store import Store

    import zarr

    from astrom3_hpc.data.checksums import write_table

    mixed = tmp_path / "mixed.zarr"
    shutil.copytree(tiny_store, mixed)
    arr = zarr.open_group(str(mixed), mode="r+")["present"]
    present = arr[:]
    present[::4, 2] = False  # a quarter of the objects without metadata, the store's checksums rewritten to match
    present[1::4, 1] = False  # another quarter without spectra, which neither model below reads
    arr[:] = present
    write_table(mixed)
    s = Store(mixed)
    caplog.set_level(logging.WARNING)
    assert main(["predict", str(meta), "--store", str(mixed), "--out", str(tmp_path / "m")]) == 0
    out = json.loads((tmp_path / "m" / "metrics.json").read_text())
    lacking = int((~present[s.valid_rows(), 2]).sum())
    assert lacking > 0 and out["n_without_modalities"] == lacking
    assert len(_rows(tmp_path / "m" / "predictions.csv")) == len(s.valid_rows()) - lacking
    assert f"{lacking} of the {len(s.valid_rows())} objects of {mixed} lack meta" in caplog.text
    # Mode "all" of a model of two modalities (light curves and metadata, a survey without spectra): it trains on
    # the store's three-column presence mask and asks for what it reads, not for every modality of the format.
    both = tmp_path / "photo+meta"
    run_job("finetune", both, tiny_store, sets=("train.epochs=1", "train.batch_size=8",
                                                "model.modalities=[photo,meta]"),
            extra=("--mode", "all", "--init", "scratch"))
    # The run says which "all" it was: a table would otherwise put it beside the paper's trimodal column.
    assert json.loads((both / "metrics.json").read_text())["modalities"] == ["photo", "meta"]
    assert "finetune.mode all reads photo, meta only: model.modalities" in (both / "train.log").read_text()
    assert main(["predict", str(both), "--store", str(mixed), "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["n_without_modalities"] == lacking


def test_a_job_signal_stops_predict_with_nothing_written(trained, tmp_path, monkeypatch):
    """Catches `astrom3 predict` dying on SLURM's USR1/SIGTERM (killed, not requeued with exit 75)."""
    import os
    import signal

    from astrom3_hpc.core.signals import Stopped
    from astrom3_hpc.train import predict as predict_module

    real = predict_module.run_probabilities

    def signal_then_run(*a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **kw)

    monkeypatch.setattr(predict_module, "run_probabilities", signal_then_run)
    _, _, new_store, runs, _ = trained
    with pytest.raises(Stopped) as stop:
        predict_module.predict(runs["baseline"], new_store, tmp_path / "out")
    assert stop.value.exit_code == 75 and "stopped by SIGTERM" in str(stop.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind,how", [("baseline", "baseline (a baseline run)"),
                                      ("hybrid", "hybrid (finetune.average_baseline)"),
                                      ("ensemble", "hybrid (finetune.average_baseline)")])
def test_predict_without_scikit_learn_is_one_line_naming_the_extra(trained, tmp_path, monkeypatch, capsys, kind, how):
    """Catches an ImportError traceback (exit 1) where the run refits the classical baseline and the `science`
    extra is not installed: a finished run copied to a machine that only classifies new stores."""
    import sys

    d, _, new_store, runs, _ = trained
    for module in ("sklearn", "sklearn.ensemble", "threadpoolctl"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails, as where the package is not installed
    capsys.readouterr()
    assert main(["predict", str(runs[kind]), "--store", str(new_store), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"astrom3 predict: error: predicting with {d / how} needs scikit-learn: "
                                "pip install 'astrom3-hpc[science]'"], err
    assert not (tmp_path / "o").exists()


def test_predict_records_the_store_it_classified_resolved(trained, tmp_path, monkeypatch):
    """Catches `--store new.zarr` recorded as typed in predict's metrics.json, beside the absolute run: read from
    another directory it names no store."""
    d, _, new_store, runs, _ = trained
    monkeypatch.chdir(d)
    assert main(["predict", str(runs["baseline"]), "--store", "new.zarr", "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["store"] == str(new_store.resolve())


@pytest.mark.timeout(600)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_predict_reproduces_a_paper_preset_run_whose_attention_samples_keys(tiny_store, tmp_path, capsys, precision):
    """Catches the fine-tune's own evaluation drawing the paper preset's attention-key samples from the training
    random stream (predict re-seeds per batch): `predict` on the training store then differed from the run's own
    predictions.csv by up to 0.03 in a probability, and an ensemble's class could change. bf16: the run evaluated
    under autocast, predict in fp32 (7e-4 apart, and classes tied by bf16 rounding went to the lower index)."""
    run = tmp_path / "paper"
    run_job("finetune", run, tiny_store, sets=("model.preset=paper", "train.epochs=1", "train.max_steps_per_epoch=2",
                                               "train.batch_size=16", f"train.precision={precision}"),
            extra=("--mode", "photo", "--init", "scratch"))
    for batch in ("256", "7"):  # and whatever the batch layout
        out = tmp_path / f"again-{batch}"
        assert main(["predict", str(run), "--store", str(tiny_store), "--out", str(out), "--no-progress",
                     "--batch-size", batch]) == 0
        again = _rows(out / "predictions.csv")
        for name in ("predictions.csv", "predictions_val.csv"):
            own = _rows(run / name)
            names = [k[2:] for k in next(iter(own.values())) if k.startswith("p_")]
            p_own = np.array([[float(own[i][f"p_{c}"]) for c in names] for i in own])
            p_again = np.array([[float(again[i][f"p_{c}"]) for c in names] for i in own])
            np.testing.assert_allclose(p_again, p_own, atol=1e-5, err_msg=f"{name}, --batch-size {batch}")
            assert [again[i]["predicted_class"] for i in own] == [own[i]["predicted_class"] for i in own]
    capsys.readouterr()


def test_evaluation_forward_is_fp32_eager_and_seeded_whatever_the_caller_set():
    """Catches an evaluation pass inheriting the caller's bf16 autocast or a compiled module's generated code (whose
    attention-key samples come from inductor's generator, out of the seed's reach): the run's own evaluation then
    disagreed with `astrom3 predict`, `embed` and `evaluate-embeddings`, which run in fp32 and eager."""
    import torch

    from astrom3_hpc.train.predict import evaluation_forward

    compiled = []

    def backend(gm, example_inputs):
        compiled.append(gm)
        return gm.forward

    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(x) + torch.rand_like(x)

    m = Noisy()
    m.compile(backend=backend)
    x = torch.ones(2, 4)
    outs = []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(2):
            with evaluation_forward("cpu"):
                outs.append(m(x))
    assert not compiled and all(o.dtype == torch.float32 for o in outs)
    assert torch.equal(outs[0], outs[1])  # seeded alike, whatever ran before
    m(x)
    assert compiled  # outside it, the module runs compiled as trained
