"""Run identity (issue 12): a run dir resumes only the same run; fine-tuning's leak check reads what the
weights were trained on and compares store content, not paths."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
import yaml

from conftest import build_synthetic_store
from test_train import run_job

ONE = ["train.epochs=1", "train.max_steps_per_epoch=2"]


@pytest.fixture(scope="module")
def store(tiny_store, tmp_path_factory):
    dst = tmp_path_factory.mktemp("own") / "store.zarr"
    shutil.copytree(tiny_store, dst)
    return dst


@pytest.fixture(scope="module")
def pre(store, tmp_path_factory):
    run = tmp_path_factory.mktemp("pre") / "run"
    old = os.umask(0o022)  # the job inherits it
    try:
        run_job("pretrain", run, store, sets=ONE)
    finally:
        os.umask(old)
    return run


def _seed_in_config(run):
    return yaml.safe_load((run / "config.yaml").read_text())["data"]["seed"]


def test_identity_is_recorded_with_the_run_and_the_weights(pre, store):
    ident = json.loads((pre / "identity.json").read_text())
    assert ident["seed"] == 42 and ident["world_size"] == 1 and ident["batch_size"] > 0
    assert len(ident["store"]["fingerprint"]) == 64 and ident["store"]["n_objects"] == 640
    import torch

    meta = torch.load(pre / "best_model.pt", weights_only=False)["meta"]
    assert meta["store_identity"] == ident["store"] and meta["seed"] == 42


@pytest.mark.parametrize("change,expect", [("data.seed=0", "seed: 42 in the run dir, 0 now"),
                                           ("train.batch_size=16", "batch_size: 32 in the run dir, 16 now"),
                                           ("optim.lr=0.1", "optim.lr: ")])
def test_a_rerun_with_other_settings_is_refused(pre, store, change, expect):
    before = (pre / "steps.jsonl").read_text()
    log_before = (pre / "train.log").read_text()
    r = run_job("pretrain", pre, store, sets=[*ONE, change], check=False)
    assert r.returncode == 6, r.stderr[-3000:]
    assert expect in r.stderr and "start this one with --run-dir NEW_DIR" in r.stderr and "Traceback" not in r.stderr
    assert _seed_in_config(pre) == 42 and (pre / "steps.jsonl").read_text() == before
    # The refusal is the refused run's: the run in the directory keeps its log as it was.
    assert (pre / "train.log").read_text() == log_before


def test_a_no_resume_rerun_into_a_held_dir_is_refused(pre, store):
    r = run_job("pretrain", pre, store, sets=[*ONE, "data.seed=0"], extra=["--no-resume"], check=False)
    assert r.returncode == 6 and "already holds a run" in r.stderr, r.stderr[-3000:]
    assert _seed_in_config(pre) == 42


@pytest.mark.timeout(300)
def test_a_rerun_on_another_world_size_is_refused(pre, store, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(pre, run)
    r = run_job("pretrain", run, store, world=2, launcher="mpiexec", sets=ONE, check=False, timeout=240)
    assert r.returncode != 0 and "world_size: 1 in the run dir, 2 now" in r.stderr, r.stderr[-3000:]


def test_finetune_reads_the_seed_from_the_weights_not_only_config_yaml(pre, store, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(pre, mixed)
    cfg = yaml.safe_load((mixed / "config.yaml").read_text())
    cfg["data"]["seed"] = 0  # as a later run of another seed would have rewritten it
    (mixed / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = run_job("finetune", tmp_path / "ft", store, extra=["--seed", "0", "--init", str(mixed)], check=False)
    assert r.returncode == 2 and "trained with split seed 42" in r.stderr and "mixes two runs" in r.stderr
    assert not (tmp_path / "ft" / "metrics.json").exists()


@pytest.mark.timeout(600)
def test_finetune_refuses_a_store_rebuilt_in_place_with_more_objects(pre, store, tmp_path):
    keep = tmp_path / "kept.zarr"
    shutil.move(store, keep)
    try:
        build_synthetic_store(store, n=656)
        r = run_job("finetune", tmp_path / "ft", store, extra=["--seed", "42", "--init", str(pre)], check=False)
        assert r.returncode == 2 and "640 objects at pretraining, 656 now" in r.stderr, r.stderr[-3000:]
        assert "test leak" in r.stderr
    finally:
        shutil.rmtree(store, ignore_errors=True)
        shutil.move(keep, store)


def test_run_dir_files_are_readable_by_colleagues_under_umask_022(pre):
    for name in ("config.yaml", "identity.json", "run.json", "metrics.json", "best_model.pt",
                 "checkpoints/latest.json"):
        assert stat.S_IMODE((pre / name).stat().st_mode) == 0o644, name


def test_weights_that_do_not_fit_are_a_clear_error(pre, store, tmp_path):
    import torch

    bad = tmp_path / "bad"
    shutil.copytree(pre, bad)
    ckpt = torch.load(bad / "best_model.pt", weights_only=False)
    key = next(k for k in ckpt["state_dict"] if ".photo." in k or "encoders.photo" in k)
    del ckpt["state_dict"][key]
    torch.save(ckpt, bad / "best_model.pt")
    r = run_job("finetune", tmp_path / "ft", store, extra=["--seed", "42", "--init", str(bad)], check=False)
    assert r.returncode == 7, r.stderr[-3000:]
    assert "CLIP weights do not fit the classifier" in r.stderr and "Traceback" not in r.stderr


def test_a_key_added_after_the_run_was_written_resumes_at_its_default():
    from astrom3_hpc.core.config import RunConfig
    from astrom3_hpc.train.fingerprint import _flatten, differences

    config = _flatten(RunConfig().to_dict())
    new = {"config": config, "seed": 42, "world_size": 1, "batch_size": 32}
    old = {**new, "config": {k: v for k, v in config.items() if k != "finetune.average_baseline"}}
    assert differences(old, new) == []  # a run dir written before the key existed
    on = {**new, "config": {**config, "finetune.average_baseline": True}}
    assert differences(old, on) == ["finetune.average_baseline: '<absent>' in the run dir, True now"]
    # A key the run dir holds is compared as always, default or not.
    assert differences(on, new) == ["finetune.average_baseline: True in the run dir, False now"]


def test_a_store_description_key_added_by_a_later_ingest_resumes_where_it_is_empty():
    """Catches a lightcurves store rebuilt by a newer ingest from the same files (the same content fingerprint)
    refusing every run made on the old one: its source description gained `unsplit_ids: []`."""
    from astrom3_hpc.train.fingerprint import differences, same_source

    source = {"kind": "lightcurves", "n_objects": 30}
    old = {"store": {"fingerprint": "f", "n_objects": 30, "source": source}, "seed": 42}
    new = {**old, "store": {**old["store"], "source": {**source, "unsplit_ids": [], "n_unsplit_ids": 0}}}
    assert differences(old, new) == [] and same_source(old["store"]["source"], new["store"]["source"])
    held = {**old, "store": {**old["store"], "source": {**source, "unsplit_ids": ["7"], "n_unsplit_ids": 1}}}
    assert differences(old, held) == ["store.source.n_unsplit_ids: '<absent>' in the run dir, 1 now",
                                      "store.source.unsplit_ids: '<absent>' in the run dir, ['7'] now"]
    assert not same_source(old["store"]["source"], held["store"]["source"])
    assert not same_source(source, {**source, "kind": "ztf-vsx"}) and not same_source(source, None)


def test_a_runs_own_config_yaml_and_another_spelling_of_its_init_resume_it(tmp_path, monkeypatch):
    """Catches two refusals of the same run: `--init ./p42` where it was started with `--init p42` (the path was
    compared as a string), and a rerun from its config.yaml, which says `cells: null` where the run's identity
    had the cells file (whose values both hold)."""
    from astrom3_hpc.core.config import RunConfig
    from astrom3_hpc.train.fingerprint import _flatten, differences

    monkeypatch.chdir(tmp_path)
    config = {k: v for k, v in _flatten(RunConfig().to_dict()).items() if k != "cells"}
    old = {"config": {**config, "finetune.init": "p42", "cells": "/x/finetune_cells.yaml"}, "seed": 42,
           "world_size": 1, "batch_size": 32}  # an identity.json written when cells was compared
    for init in ("./p42", str(tmp_path / "p42")):
        assert differences(old, {**old, "config": {**config, "finetune.init": init}}) == []
    assert differences(old, {**old, "config": {**config, "finetune.init": "p43"}}) == [
        "finetune.init: 'p42' in the run dir, 'p43' now"]


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if ": error: " in line]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("damage,name,code", [
    (lambda r: (r / "checkpoints" / "latest.json").write_text('{"tag": "ste'), "checkpoints/latest.json", 2),
    (lambda r: (r / "checkpoints" / "step2" / "rng_rank0.pt").unlink(), "checkpoints/step2/rng_rank0.pt is missing",
     2),
    (lambda r: (r / "identity.json").write_text('{"config": {\n'), "identity.json is damaged", 6)])
def test_a_damaged_run_dir_file_is_one_line_naming_it(pre, store, tmp_path, damage, name, code):
    run = tmp_path / "run"
    shutil.copytree(pre, run)
    damage(run)
    r = run_job("pretrain", run, store, sets=ONE, check=False)
    assert r.returncode == code, r.stderr[-3000:]
    lines = _error_lines(r.stderr)
    assert len(lines) == 1 and f"{run}/{name}" in lines[0] and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "world size" not in lines[0]


def test_a_pretraining_run_and_a_finetune_are_different_runs(pre, tmp_path):
    from astrom3_hpc.train.fingerprint import RunMismatchError, check_run_dir, write_identity

    run = tmp_path / "run"
    shutil.copytree(pre, run)
    recorded = json.loads((run / "identity.json").read_text())
    recorded.pop("digest")
    same = {k: v for k, v in recorded.items() if k != "kind"}
    write_identity(run, {**same, "kind": "pretrain"})
    check_run_dir(run, {**same, "kind": "pretrain"}, resume=True)
    with pytest.raises(RunMismatchError, match="kind: 'pretrain' in the run dir, 'finetune' now") as e:
        check_run_dir(run, {**same, "kind": "finetune"}, resume=True)
    assert e.value.exit_code == 6
    # An identity.json written before the kind was recorded: the run's run.json (or metrics.json) says it.
    write_identity(run, same)
    check_run_dir(run, {**same, "kind": "pretrain"}, resume=True)
    with pytest.raises(RunMismatchError, match="kind: 'pretrain' in the run dir, 'finetune' now"):
        check_run_dir(run, {**same, "kind": "finetune"}, resume=True)
    (run / "run.json").unlink()
    with pytest.raises(RunMismatchError, match="kind: 'pretrain' in the run dir, 'finetune' now"):
        check_run_dir(run, {**same, "kind": "finetune"}, resume=True)
    (run / "metrics.json").unlink()
    check_run_dir(run, {**same, "kind": "finetune"}, resume=True)  # says nowhere: not refused for lacking it


@pytest.mark.timeout(300)
def test_a_finetune_into_a_pretraining_run_dir_is_refused_and_an_older_run_dir_resumes(pre, store, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(pre, run)
    before = (run / "steps.jsonl").read_text()
    r = run_job("finetune", run, store, sets=ONE, extra=["--seed", "42"], check=False)
    assert r.returncode == 6 and "kind: 'pretrain' in the run dir, 'finetune' now" in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and (run / "steps.jsonl").read_text() == before
    # A run dir written before the kind was recorded still resumes as itself.
    ident = json.loads((run / "identity.json").read_text())
    assert ident.get("kind") == "pretrain"
    ident.pop("kind")
    (run / "identity.json").write_text(json.dumps(ident))
    r = run_job("pretrain", run, store, sets=ONE, check=False)
    assert r.returncode == 0, r.stderr[-3000:]


def _finetune_from(cwd, run_dir, store, init, check=True):
    """`astrom3 finetune --init INIT --run-dir RUN_DIR` started in `cwd` (paths as typed there)."""
    import subprocess

    from dist_helpers import child_env
    from test_train import _cmd

    cmd = _cmd("finetune", run_dir, store, 1, "single", sets=ONE, extra=["--seed", "42", "--init", str(init)])
    r = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=420, cwd=cwd)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.timeout(600)
def test_a_relative_init_is_recorded_absolute_and_the_run_resumes_from_another_directory(pre, store, tmp_path):
    """Catches `--init runs/pre42` recorded as typed: the identical job rerun from another directory (absolute or
    ../ paths) was refused as another run (exit 6)."""
    proj, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(pre, proj / "runs" / "pre42")
    _finetune_from(proj, "runs/ft", store, "runs/pre42")
    ft, init = proj / "runs" / "ft", str((proj / "runs" / "pre42").resolve())
    assert json.loads((ft / "identity.json").read_text())["config"]["finetune.init"] == init
    assert yaml.safe_load((ft / "config.yaml").read_text())["finetune"]["init"] == init
    steps = (ft / "steps.jsonl").read_text()
    _finetune_from(elsewhere, "../proj/runs/ft", store, "../proj/runs/pre42")  # absolute paths: below
    assert (ft / "steps.jsonl").read_text() == steps  # resumed the finished run: nothing trained again
    # A run dir an older astrom3 wrote, its init as typed: its metrics.json's init_dir says which run it named.
    ident = json.loads((ft / "identity.json").read_text())
    ident["config"]["finetune.init"] = "runs/pre42"
    (ft / "identity.json").write_text(json.dumps(ident))
    _finetune_from(elsewhere, ft, store, proj / "runs" / "pre42")
    r = _finetune_from(elsewhere, ft, store, pre, check=False)  # another pretraining run: still refused
    assert r.returncode == 6 and f"finetune.init: 'runs/pre42' in the run dir, '{pre.resolve()}' now" in r.stderr


def test_an_unfinished_run_dir_with_a_relative_init_resumes_where_its_directory_tells(tmp_path, monkeypatch):
    """An older run dir without metrics.json: the one directory above it holding the recorded path is where the job
    started; none or two such directories leave the path read against the current directory."""
    from astrom3_hpc.core.config import RunConfig
    from astrom3_hpc.train.fingerprint import OtherRunError, _flatten, check_run_dir, write_identity

    config = _flatten(RunConfig().to_dict())
    run = tmp_path / "proj" / "runs" / "ft"
    (tmp_path / "proj" / "runs" / "pre42").mkdir(parents=True)
    run.mkdir()
    write_identity(run, {"config": {**config, "finetune.init": "runs/pre42"}, "seed": 42})
    now = {"config": {**config, "finetune.init": str(tmp_path / "proj" / "runs" / "pre42")}, "seed": 42}
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # runs/pre42 is not here
    check_run_dir(run, now, resume=True)
    other = {"config": {**config, "finetune.init": str(tmp_path / "runs" / "pre42")}, "seed": 42}
    with pytest.raises(OtherRunError, match="finetune.init: 'runs/pre42' in the run dir"):
        check_run_dir(run, other, resume=True)
    (tmp_path / "runs" / "pre42").mkdir(parents=True)  # now two directories above hold it: which one is unknown
    with pytest.raises(OtherRunError, match="finetune.init: 'runs/pre42' in the run dir"):
        check_run_dir(run, now, resume=True)
    monkeypatch.chdir(tmp_path)
    check_run_dir(run, other, resume=True)  # read against the current directory, as before


def test_a_baseline_writes_only_over_the_same_baseline(pre, store, tmp_path, capsys):
    """Catches `baseline --out` writing into any directory: over a finished run it left that run's weights and
    checkpoints beside its own metrics.json; over another seed it replaced that result without a word."""
    from astrom3_hpc.cli import main

    run = tmp_path / "run"
    shutil.copytree(pre, run)
    before = (run / "metrics.json").read_bytes()
    assert main(["baseline", str(store), "--out", str(run)]) == 6
    assert f"--out {run} holds a pretrain run: a baseline there would mix" in capsys.readouterr().err
    assert (run / "metrics.json").read_bytes() == before
    out = tmp_path / "bl"
    assert main(["baseline", str(store), "--out", str(out)]) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert main(["baseline", str(store), "--out", str(out), "--seed", "0"]) == 6
    assert "holds another baseline run:\n  seed: 42 in the run dir, 0 now" in capsys.readouterr().err
    assert main(["baseline", str(store), "--out", str(out)]) == 0  # the same baseline again: rewritten alike
    again = json.loads((out / "metrics.json").read_text())
    assert again["test_accuracy"] == first["test_accuracy"] and again["seed"] == 42
    # A baseline stopped before its results (no checkpoint to resume) holds nothing another one would mix with.
    for name in list(out.iterdir()):
        if name.name not in ("identity.json", "run.json", "train.log"):
            name.unlink() if name.is_file() else shutil.rmtree(name)
    from astrom3_hpc.train.baseline import refuse_other_run

    refuse_other_run(out, {**json.loads((out / "identity.json").read_text()), "seed": 0})  # free: no raise
    # A fine-tune into a baseline's directory is refused by the kind alone, not by every setting it lacks.
    from astrom3_hpc.train.fingerprint import RunMismatchError, check_run_dir

    finetune = {**json.loads((pre / "identity.json").read_text()), "kind": "finetune"}
    with pytest.raises(RunMismatchError, match="would mix two runs:\n  kind: 'baseline' in the run dir, 'finetune' "
                                               "now\nRerun"):
        check_run_dir(out, finetune, resume=True)


def test_a_store_rebuilt_in_place_with_other_content_is_not_the_pretraining_store(tiny_store):
    """Catches the leak check comparing object counts and sources only: tables edited (or split files changed) and
    ingested again into the same path keep both, and fine-tuning would score objects the pretraining trained on."""
    from astrom3_hpc.data.store import Store
    from astrom3_hpc.train.fingerprint import store_identity
    from astrom3_hpc.train.leak import same_store

    store = Store(tiny_store)
    pre = store_identity(store)
    assert same_store(pre, store) is None
    edited = {**pre, "fingerprint": "0" * len(pre["fingerprint"])}
    assert same_store(edited, store) == f"content fingerprint {'0' * 12} at pretraining, {pre['fingerprint'][:12]} now"
