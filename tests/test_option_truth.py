"""Options do what `--help` says, or are refused in one line: found by checking every command's options against
their help (a review of 2026-12-07).

- `evaluate-embeddings` on a fine-tune run crashed inside the model (KeyError 'head.weight'); `finetune --init` of
  a fine-tune run recorded the result as a CLIP fine-tune.
- A `--set model.*` value given to a fine-tune from a pretraining vanished without a word.
- `demo --ranks 0` built the store and then crashed in torchrun; `sweep submit` (sbatch) dropped `--gpus-per-node`,
  `--cluster` and `--wait` silently; `outliers --list -1` listed all but one; `umap --n-neighbors 0` recorded 0
  and ran with 2, `--max-points -3` failed in numpy; `search --aux` / `--store` without `--query-file` were ignored;
  `ingest --shard-chunks -1` failed inside zarr.
"""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path

import pytest
import torch

from astrom3_hpc.cli import main

REPO = Path(__file__).resolve().parents[1]
CFG = str(REPO / "configs" / "test.yaml")
FAST = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=16"]


@pytest.fixture(scope="module")
def runs(tiny_store, pretrained_2rank, tmp_path_factory) -> tuple[Path, Path]:
    """A finished pretraining (the session's, read only) and a finished scratch fine-tune of the tiny store."""
    from astrom3_hpc.train.jobs import finetune_config, run_finetune

    d = tmp_path_factory.mktemp("truth")
    sets = [*FAST, f"data.store={tiny_store}"]
    assert run_finetune(finetune_config(CFG, sets, mode="photo", init="scratch"), d / "ft") == 0
    return pretrained_2rank, d / "ft"


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_a_fine_tune_run_is_no_pretraining(runs, tiny_store, tmp_path, capsys):
    pre, ft = runs
    capsys.readouterr()
    assert main(["evaluate-embeddings", str(ft)]) == 2
    err = _err(capsys)
    assert f"run dir {ft} is a finetune run, not a pretraining run" in err and "Traceback" not in err
    assert main(["finetune", "--config", CFG, "--mode", "photo", "--init", str(ft), "--run-dir",
                 str(tmp_path / "x"), "--store", str(tiny_store), "--set", *FAST]) == 2
    assert f"finetune.init {ft} is a finetune run, not a pretraining run" in _err(capsys)
    assert not (tmp_path / "x" / "metrics.json").exists()
    # Refused in its set-up, it left its process group for the next job in this process to join unseen.
    assert not torch.distributed.is_initialized()


def test_an_architecture_value_the_pretraining_overrides_is_warned_about(runs, tiny_store, tmp_path, caplog):
    from astrom3_hpc.train.jobs import finetune_config, run_finetune

    pre, _ = runs
    cfg = finetune_config(CFG, [*FAST, f"data.store={tiny_store}", "model.n_layers=4", "model.lc_dropout=0.3",
                                "finetune.fusion=concat"], mode="photo", init=str(pre))
    hook = sys.excepthook
    with caplog.at_level(logging.WARNING, logger="astrom3"):
        assert run_finetune(cfg, tmp_path / "clip") == 0
    # Nothing of the job outlives it in this process: torch wrapped the excepthook once per group ("[rank0]: "
    # ten times per traceback line after ten jobs), and DeepSpeed's reference cycles kept each engine, its
    # optimizer state and gloo threads until a full collection.
    assert sys.excepthook is hook
    assert not [o for o in gc.get_objects() if type(o).__name__ == "DeepSpeedEngine"]
    (said,) = [r.getMessage() for r in caplog.records if "architecture is trained" in r.getMessage()]
    assert "model.n_layers 4 (pretraining: " in said
    assert "lc_dropout" not in said  # the fine-tuning config's own: it is used
    (inert,) = [r.getMessage() for r in caplog.records if "settings this run does not use" in r.getMessage()]
    assert inert.endswith(": finetune.fusion=concat (only mode all fuses modalities)"), inert


def test_settings_a_fine_tune_never_reads_are_named():
    """Catches values accepted without a word that left the run exactly as without them (identical weights)."""
    from astrom3_hpc.core.config import load_config
    from astrom3_hpc.train.finetune import inert_settings

    sets = ["finetune.distill_weight=0.9", "finetune.pretrain_seed=0", "finetune.freeze_encoders=true",
            "model.periodic_views=[fold]", "finetune.fusion=concat"]
    assert [s.split(" (")[0] for s in inert_settings(load_config(CFG, sets))] == [
        "finetune.fusion=concat", "finetune.distill_weight=0.9", "finetune.pretrain_seed=0",
        "finetune.freeze_encoders=true", "model.periodic_views=['fold']"]
    assert inert_settings(load_config(CFG, ["finetune.mode=all", "finetune.fusion=concat"])) == []
    periodic = ["model.preset=periodic", "model.periodic_views=[fold]", "finetune.mode=photo"]
    assert inert_settings(load_config(CFG, periodic)) == []
    assert inert_settings(load_config(CFG, [*periodic[:2], "finetune.mode=meta"])) == [
        "model.periodic_views=['fold'] (no periodic light-curve encoder in this run)"]


@pytest.mark.parametrize("argv, says", [
    (["demo", "--ranks", "0"], "--ranks: must be an integer >= 1"),
    (["demo", "-n", "0"], "--n-objects: must be an integer >= 1"),
    (["outliers", "RUN", "--list", "-1"], "--list: must be an integer >= 0"),
    (["umap", "RUN", "--n-neighbors", "1"], "--n-neighbors: must be an integer >= 2"),
    (["umap", "RUN", "--max-points", "-3"], "--max-points: must be an integer >= 0"),
    (["ingest", "synthetic", "--out", "X", "--shard-chunks", "-1"], "--shard-chunks: must be an integer >= 0"),
    (["sweep", "submit", "SW", "--backend", "submitit", "--gpus-per-node", "-1"], "must be an integer >= 0"),
])
def test_out_of_range_counts_are_usage_errors(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and says in _err(capsys)


def test_options_of_another_mode_are_refused_not_dropped(runs, tiny_store, tmp_path, capsys):
    pre, _ = runs
    sw = tmp_path / "sw"
    argv = ["sweep", "submit", str(sw), "--config", CFG, "--pretrain-config", CFG, "--store", str(tiny_store),
            "--seeds", "42", "--modes", "photo", "--subsets", "full", "--dry-run"]
    capsys.readouterr()
    for extra in (["--gpus-per-node", "2"], ["--cluster", "local"], ["--wait"]):
        assert main([*argv, *extra]) == 2
        assert f"{extra[0]}: options of --backend submitit" in _err(capsys)
    assert not sw.exists()  # refused before the sweep was created
    for flag in (["--aux", "1", "2", "3", "4"], ["--store", str(tiny_store)]):
        assert main(["search", str(pre), "--query-row", "0", *flag]) == 2
        assert f"{flag[0]} preprocesses a --query-file; none was given" in _err(capsys)


def test_layout_refuses_a_negative_shard_count():
    from astrom3_hpc.data.store import Layout

    with pytest.raises(ValueError, match="shard_chunks must be >= 0"):
        Layout(n_objects=10, shard_chunks=-1).validate()


def test_a_run_whose_recorded_config_this_version_cannot_read_is_named(runs, tiny_store, tmp_path, capsys):
    """Catches `model: unknown key(s) ['old_key']` from predict and evaluate-embeddings naming no file: the key
    is in the run's config.yaml, which another version wrote."""
    import shutil

    import yaml

    pre, ft = runs
    for run, argv in ((ft, ["predict", "{run}", "--store", str(tiny_store), "--out", str(tmp_path / "p")]),
                      (pre, ["evaluate-embeddings", "{run}"])):
        copy = tmp_path / run.name
        shutil.copytree(run, copy)
        recorded = yaml.safe_load((copy / "config.yaml").read_text())
        recorded["model"]["old_key"] = 1
        (copy / "config.yaml").write_text(yaml.safe_dump(recorded))
        capsys.readouterr()
        assert main([a.format(run=copy) for a in argv]) == 2
        err = _err(capsys).strip()
        assert f"error: {copy / 'config.yaml'}: model: unknown key(s) ['old_key']" in err, err
        assert len(err.splitlines()) == 1, err
