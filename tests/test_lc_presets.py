"""The light-curve presets end to end on a real store: the `periodic` preset trains on the cached features and
folds that `astrom3 baseline` shares; a job signal while a job computes or waits for those caches ends in exit 75;
the large-survey presets are their documented differences from the preset, and the fast one trains five networks,
predicts and feeds the science tools. Real stores, real runs."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightcurve_tables import lc_store, private_copy

from astrom3_hpc.cli import main
from astrom3_hpc.data import lc_features as lcf
from astrom3_hpc.data.store import Store

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)
def test_periodic_preset_trains_with_features_and_baseline_shares_the_cache(tmp_path):
    from test_train import run_job

    store = lc_store(tmp_path / "tables")
    run = tmp_path / "periodic"
    r = run_job("finetune", run, store, sets=("model.preset=periodic", "model.d_model=16", "model.n_layers=1",
                                              "model.n_heads=2", "model.d_ff=32", "train.epochs=2",
                                              "train.batch_size=8", "finetune.class_weights=balanced",
                                              "finetune.distill=baseline", "data.lc_fold_resamples=4",
                                              "data.lc_feature_resampling=true", "finetune.label_smoothing=0.1"),
                extra=("--mode", "photo", "--init", "scratch"))
    m = json.loads((run / "metrics.json").read_text())
    s = Store(store)
    y = s.labels[s.split(42, "full", "train")]
    assert m["label_smoothing"] == 0.1 and "label_smoothing: 0.1" in (run / "config.yaml").read_text()
    assert m["distill"] == "baseline" and f"cross-fitted probabilities for {len(y)} training objects" in r.stderr
    want = len(y) / (len(s.class_names) * np.bincount(y, minlength=len(s.class_names)))
    np.testing.assert_allclose(m["class_weights"], want, rtol=1e-5)  # the loss was weighted as the baseline's
    assert m["test"]["n"] == len(Store(store).split(42, "full", "test")) and (run / "predictions.csv").exists()
    cached = lcf.cache_path(Store(store))
    assert cached.exists()  # written by the training job, once
    mtime = cached.stat().st_mtime_ns
    assert main(["baseline", str(store), "--seed", "42", "--out", str(tmp_path / "bl")]) == 0
    assert cached.stat().st_mtime_ns == mtime  # the baseline read it, did not rewrite it
    sd = torch.load(run / "best_model.pt", weights_only=False)["state_dict"]
    assert any(".features." in k for k in sd)
    # The preset's full-curve fold view: trained, its folds cached by the same job.
    assert any(".fold_full." in k for k in sd)
    assert len(list((Path(store) / lcf.CACHE_DIR).glob("lc_fold-*.npy"))) == 1
    # Trained on resampled folds (data.lc_fold_resamples), cached by the same job; the run's config says so.
    assert len(list((Path(store) / lcf.CACHE_DIR).glob("lc_fold_resampled-k4-*.npy"))) == 1
    assert "lc_fold_resamples: 4" in (run / "config.yaml").read_text()
    # And on the features of the same subsets, cached beside the whole curves' features, which validation used.
    assert len(list((Path(store) / lcf.CACHE_DIR).glob("lc_features_resampled-k4-*.npy"))) == 1
    assert "lc_feature_resampling: true" in (run / "config.yaml").read_text()


@pytest.mark.timeout(600)
def test_a_signal_while_waiting_for_the_stores_features_ends_in_a_checkpoint_and_exit_75(feat_store, tmp_path):
    """SLURM's USR1 (or preemption's SIGTERM) can arrive before training starts: while a job computes its store's
    caches, or waits for another job computing them. It used to kill the job (the handler was installed after
    the data set-up), and SLURM failed the task; now it sets the flag like any other, and the first steps end in a
    checkpoint and exit 75 for requeue."""
    import fcntl
    import signal
    import subprocess
    import time

    from dist_helpers import child_env, wait_for
    from test_train import _cmd

    store_dir, _ = private_copy(feat_store, tmp_path)
    shutil.rmtree(store_dir / lcf.CACHE_DIR, ignore_errors=True)  # what earlier tests cached in the module's store
    lock = store_dir / lcf.CACHE_DIR / ".lc_features.lock"
    lock.parent.mkdir()
    run, err = tmp_path / "run", tmp_path / "job.err"
    cmd = _cmd("finetune", run, store_dir, 1, "single", extra=("--mode", "photo", "--init", "scratch"),
               sets=("model.preset=periodic", "model.d_model=16", "model.n_layers=1", "model.n_heads=2",
                     "model.d_ff=32", "train.batch_size=8"))
    with open(lock, "w") as held, open(err, "w") as job_err:
        fcntl.flock(held, fcntl.LOCK_EX)  # another job computing the store's features
        p = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=job_err, cwd=ROOT)
        wait_for(lambda: "computing the classical light-curve features; waiting for it" in err.read_text(),
                 "wait for the features", [p], timeout=300, log=err)
        p.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        assert p.poll() is None, err.read_text()[-3000:]  # still waiting, the signal noted
    # The lock is released: the job computes the features, trains its first steps, checkpoints and stops.
    assert p.wait(timeout=300) == 75, err.read_text()[-3000:]
    assert "checkpoint written, exit 75 for requeue" in err.read_text()
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] >= 1
    assert not (run / "metrics.json").exists() and lcf.cache_path(Store(store_dir)).exists()


@pytest.mark.timeout(600)
def test_a_signal_stops_a_baseline_at_once_with_exit_75_and_nothing_written(feat_store, tmp_path):
    """`astrom3 baseline` has nothing to checkpoint: a job signal (here while it waits for another job computing
    the store's features) stops it with exit 75, which the array script requeues, instead of killing it (SLURM
    failed the task); its metrics and predictions are not written, and a second run does the whole job."""
    import fcntl
    import signal
    import subprocess

    from dist_helpers import child_env, wait_for

    store_dir, _ = private_copy(feat_store, tmp_path)
    shutil.rmtree(store_dir / lcf.CACHE_DIR, ignore_errors=True)
    lock = store_dir / lcf.CACHE_DIR / ".lc_features.lock"
    lock.parent.mkdir()
    run, err = tmp_path / "baseline", tmp_path / "job.err"
    cmd = [sys.executable, "-m", "astrom3_hpc.cli", "baseline", str(store_dir), "--out", str(run)]
    with open(lock, "w") as held, open(err, "w") as job_err:
        fcntl.flock(held, fcntl.LOCK_EX)
        p = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=job_err, cwd=ROOT)
        wait_for(lambda: "computing the classical light-curve features; waiting for it" in err.read_text(),
                 "wait for the features", [p], timeout=300, log=err)
        p.send_signal(signal.SIGUSR1)
        assert p.wait(timeout=60) == 75, err.read_text()[-3000:]
    text = err.read_text()
    assert f"astrom3 baseline: {run} stopped by SIGUSR1 before it finished" in text and "Traceback" not in text
    # .lock: held no more; identity.json: which baseline a rerun may write over
    assert sorted(f.name for f in run.iterdir()) == [".lock", "identity.json", "run.json", "train.log"]
    assert "stopped by SIGUSR1" in (run / "train.log").read_text()
    assert sorted(f.name for f in lock.parent.iterdir()) == [lock.name]  # nothing cached, no temporary left
    r = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / "metrics.json").exists() and (run / "predictions.csv").exists()


def test_large_survey_preset_is_the_preset_plus_three_settings():
    from astrom3_hpc.core.config import load_config

    small = load_config(str(ROOT / "configs" / "periodic_finetune.yaml"))
    large = load_config(str(ROOT / "configs" / "periodic_finetune_large.yaml"))
    assert not small.data.lc_feature_resampling and not small.model.periodic_fold_period
    assert small.finetune.distill == "none"
    assert large.data.lc_feature_resampling and large.model.periodic_fold_period
    assert large.finetune.distill == "baseline"
    # Everything else is inherited.
    for a, b in ((small.data, large.data), (small.model, large.model), (small.optim, large.optim),
                 (small.train, large.train)):
        diff = {k for k in vars(a) if getattr(a, k) != getattr(b, k)}
        assert diff <= {"lc_feature_resampling", "periodic_fold_period"}, diff


def test_fast_large_survey_preset_is_the_large_one_without_the_informer_and_five_members():
    from astrom3_hpc.core.config import load_config

    large = load_config(str(ROOT / "configs" / "periodic_finetune_large.yaml"))
    fast = load_config(str(ROOT / "configs" / "periodic_finetune_large_fast.yaml"))
    assert large.model.periodic_tokens and large.finetune.members == 1
    assert not fast.model.periodic_tokens and fast.model.periodic_views == ["fold_full"]
    assert fast.finetune.members == 5
    for a, b in ((large.data, fast.data), (large.model, fast.model), (large.optim, fast.optim),
                 (large.train, fast.train), (large.finetune, fast.finetune)):
        diff = {k for k in vars(a) if getattr(a, k) != getattr(b, k)}
        assert diff <= {"periodic_tokens", "periodic_views", "members"}, diff


def test_fast_large_survey_preset_trains_five_networks_without_an_informer_and_predicts(tmp_path, capsys):
    from test_train import run_job

    store = lc_store(tmp_path / "tables")
    run = tmp_path / "fast"
    run_job("finetune", run, store, extra=("--config", str(ROOT / "configs" / "periodic_finetune_large_fast.yaml")),
            sets=("train.batch_size=8", "model.d_model=16"))
    m = json.loads((run / "metrics.json").read_text())
    assert m["weight_seeds"] == [42, 43, 44, 45, 46] and m["distill"] == "baseline"
    sd = torch.load(run / "best_model.pt", weights_only=False)["state_dict"]
    assert any(".fold_full." in k for k in sd) and not any(".tokens." in k for k in sd)
    s = Store(store)
    assert m["test"]["n"] == len(s.split(42, "full", "test")) and (run / "predictions.csv").exists()
    assert main(["predict", str(run), "--store", str(store), "--out", str(tmp_path / "pred")]) == 0
    # predict rebuilds the same five networks from the run: its classes for the test objects are the run's own.
    kept = {r["row"]: r["predicted_class"] for r in csv.DictReader(open(run / "predictions.csv"))}
    again = {r["row"]: r["predicted_class"] for r in csv.DictReader(open(tmp_path / "pred" / "predictions.csv"))}
    assert kept and {k: again[k] for k in kept} == kept
    _science_tools_read_a_fine_tune_run(run, store, tmp_path, capsys)


def _science_tools_read_a_fine_tune_run(run, store, tmp_path, capsys):
    """A photometry-only survey has no second modality to pretrain CLIP with: the network trained on it is its
    embedding model. Each object's vector is its members' head inputs, each normalised, side by side over
    sqrt(n): a unit vector whose cosine similarity is the mean of the members' own."""
    import zarr

    from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches
    from astrom3_hpc.model.members import each_member
    from astrom3_hpc.model.presets import resolve
    from astrom3_hpc.model.registry import cached_inputs
    from astrom3_hpc.science.common import load_model, read_embeddings

    assert main(["embed", str(run), "--no-progress"]) == 0
    emb = read_embeddings(run / "science" / "embeddings.zarr")
    assert emb.modalities == ["photo"] and emb.attrs["model_kind"] == "finetune" and len(emb) == Store(store).n_objects
    model, cfg, meta = load_model(run)
    members = each_member(model.model)
    assert len(members) == 5 and emb.view("photo").shape[1] == 5 * members[0].head.in_features
    batches = TrimodalBatches(LoaderSpec(store=str(store), seed=42, split="test", train=False, batch_size=16,
                                         read_spectra=False, **cached_inputs(resolve(cfg.model))))
    batch = batches.make_batch(batches.rows[:16], 0, 0)
    with torch.no_grad():
        own = [torch.nn.functional.normalize(m.features(batch), dim=-1) for m in members]
    positions = [emb.position_of_row(r) for r in batch["index"].tolist()]
    v = emb.view("photo")[positions]
    np.testing.assert_allclose(v, torch.cat(own, -1).numpy() / np.sqrt(5), atol=1e-5)
    np.testing.assert_allclose(v @ v.T, torch.stack([o @ o.T for o in own]).mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(emb.view("average"), emb.view("photo"), atol=1e-6)
    assert zarr.open_group(str(run / "science" / "embeddings.zarr"), mode="r").attrs["complete"]
    # Search by object, outliers (one view: candidates are that view's top k) and UMAP read it.
    row = int(batch["index"][0])
    capsys.readouterr()
    assert main(["search", str(run), "--query-row", str(row), "-k", "3"]) == 0
    hits = json.loads(capsys.readouterr().out)["queries"][0]["neighbours"]["photo"]
    assert hits[0][2] == pytest.approx(1.0, abs=1e-5) and len(hits) == 3
    assert main(["outliers", str(run), "--top-k", "5"]) == 0
    out = json.loads((run / "science" / "outliers.json").read_text())
    assert len(out["candidates"]) == 5 and out["params"]["min_modalities"] == 1  # as applied, not the asked 2
    # Another store holding some of the same objects (one class left out, so its train split's quantiles differ):
    # scaled by the training store, as predict scales, each object gets the same vector there as here.
    from lightcurve_tables import ingest_args

    (tmp_path / "map.json").write_text(json.dumps({"M_or_SR": "", "HADS_or_DSCT": "HADS_or_DSCT",
                                                   "RRab-like": "RRab-like"}))
    other = tmp_path / "other.zarr"
    assert main(ingest_args(tmp_path / "tables", other, "--class-map", str(tmp_path / "map.json"),
                            "--drop-unlabelled")) == 0
    assert main(["embed", str(run), "--store", str(other), "--out-dir", str(tmp_path / "sci")]) == 0
    there = read_embeddings(tmp_path / "sci" / "embeddings.zarr")
    assert 0 < len(there) < len(emb)
    from astrom3_hpc.data.store import object_names

    names_here, names_there = object_names(Store(store)).tolist(), object_names(Store(other))
    here = [emb.position_of_row(names_here.index(names_there[r])) for r in there.row]
    np.testing.assert_allclose(there.view("photo"), emb.view("photo")[here], atol=1e-5)
    moved = tmp_path / "moved.zarr"
    Path(store).rename(moved)
    assert main(["embed", str(run), "--store", str(other), "--out-dir", str(tmp_path / "sci2")]) == 2
    assert f"was trained on {store}, which does not exist" in capsys.readouterr().err
    assert main(["embed", str(run), "--store", str(other), "--out-dir", str(tmp_path / "sci2"),
                 "--train-store", str(moved)]) == 0
    np.testing.assert_allclose(read_embeddings(tmp_path / "sci2" / "embeddings.zarr").view("photo"),
                               there.view("photo"), atol=1e-6)
    Path(moved).rename(store)
    # A raw file cannot be embedded: the network reads what ingestion computes for a store.
    (tmp_path / "q.csv").write_text("time,mag,err\n" + "".join(f"{t},15.0,0.1\n" for t in range(20)))
    assert main(["search", str(run), "--query-file", str(tmp_path / "q.csv")]) == 2
    assert "--query-file needs a pretraining run" in capsys.readouterr().err


def test_lc_presets_benchmark_times_the_preset_and_another_config_in_one_run(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import lc_presets

    store = lc_store(tmp_path / "tables")
    capsys.readouterr()
    assert lc_presets.main([str(store), "--epochs", "2", "--threads", "1", "--only", "preset-no-informer",
                            "--set", "train.batch_size=8", "model.d_model=16", "model.d_ff=32"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"preset", "preset-no-informer"}
    # the ratio column is the preset's s/epoch over each row's, from this run's own timings
    assert rows["preset"][1] == "1.0x"
    base, other = float(rows["preset"][0]), float(rows["preset-no-informer"][0])
    assert base > 0 and other > 0 and float(rows["preset-no-informer"][1][:-1]) == pytest.approx(base / other, rel=0.15)
    with pytest.raises(SystemExit):
        lc_presets.main([str(store), "--epochs", "1"])
