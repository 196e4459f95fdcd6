"""Per-cell fine-tuning protocol (issue 11 item 2): the paper sweep resolves every task's (mode, subset) cell from
configs/finetune_cells.yaml, the trainer honours each value, and command-line overrides still win."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import IN_CI

from astrom3_hpc.core.config import ConfigError, load_config
from astrom3_hpc.orchestration.sweep import Sweep
from astrom3_hpc.train.engine import clip_gradients, ds_config
from astrom3_hpc.train.schedule import LRSchedule

ASTROM3 = str(Path(sys.executable).parent / "astrom3")
REPO = Path(__file__).resolve().parents[1]
PAPER_FT = REPO / "configs" / "paper_finetune.yaml"
# The shared spec beside the checkout (where CI puts it), else the developers' copy.
SPEC_CSV = next((p for p in (REPO.parent / "shared" / "spec" / "finetune_hparams.csv",
                             Path("/work/shared/spec/finetune_hparams.csv")) if p.exists()),
                REPO.parent / "shared" / "spec" / "finetune_hparams.csv")

# Rows of the spec's finetune_hparams.csv (the reference's published configs, MeriDK/AstroM3 @ 8bed51b).
PHOTO_SUB10 = dict(lr=0.00012927149363744576, beta1=0.9149369320298176, weight_decay=0.002405679286704065,
                   dropout=0.09225591774389948, plateau_factor=0.9319938220468964, grad_clip=5.0)
SPECTRA_FULL = dict(lr=0.003970178217704787, beta1=0.7623427777917324, weight_decay=0.00015797808521611945,
                    dropout=0.3161089643126984, plateau_factor=0.6019231988810758, grad_clip=5.0)
META_SUB10 = dict(lr=0.009586101387197628, beta1=0.960355167407052, weight_decay=0.0016692845865161668,
                  dropout=0.1479383968245285, plateau_factor=0.48040637245293494, grad_clip=0.0)  # clip_grad False


# docs/authors_finetune_cells.csv (configs/config-photo-sub10-clip.yaml of the reference).
PHOTO_SUB10_CLIP = dict(lr=0.00032096870443854236, beta1=0.7384973431605952, weight_decay=0.00231459141945381,
                        dropout=0.19592857206605097, plateau_factor=0.9070302745432356, grad_clip=5.0)
AUTHORS_CSV = REPO / "docs" / "authors_finetune_cells.csv"


def _check(hp: dict, want: dict) -> None:
    for k, v in want.items():
        got = hp["dropout"][0] if k == "dropout" else hp[k]
        assert got == v, (k, got, v)
    assert (hp["beta2"], hp["warmup_epochs"], hp["plateau_patience"], hp["epochs"], hp["batch_size"],
            hp["early_stop_patience"]) == (0.999, 10, 3, 50, 512, 6)


def test_paper_sweep_resolves_each_cell(tmp_path):
    sweep = tmp_path / "sw"
    r = subprocess.run([ASTROM3, "sweep", "create", str(sweep), "--config", str(PAPER_FT), "--seeds", "42,0",
                        "--store", str(tmp_path / "x.zarr")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "finetune_cells.yaml" in r.stdout
    sw = Sweep.load(sweep)
    assert len(sw.tasks) == 2 * 4 * 4 * 2
    by = {(t.mode, t.subset, t.seed, t.init): t.hparams for t in sw.tasks}
    for seed in (42, 0):
        _check(by[("photo", "sub10", seed, "scratch")], PHOTO_SUB10)
        _check(by[("spectra", "full", seed, "scratch")], SPECTRA_FULL)
        _check(by[("meta", "sub10", seed, "scratch")], META_SUB10)
        # A CLIP task gets the reference's -clip config, tuned apart (it had the scratch values before).
        _check(by[("photo", "sub10", seed, "clip")], PHOTO_SUB10_CLIP)
    assert by[("all", "sub25", 42, "scratch")]["dropout"] == [0.18510349585129432, 0.2368339859667335,
                                                              0.18578856175652889]  # config-all-sub25.yaml
    assert by[("all", "sub25", 42, "clip")]["dropout"] == [0.1435063397534398, 0.1416336577956044,
                                                           0.3079559669538407]  # config-all-sub25-clip.yaml
    # The config each task's `astrom3 finetune` builds is the one recorded, CLIP tasks' included.
    for init, want in (("scratch", SPECTRA_FULL), ("clip", {"lr": 0.002551272196821267,
                                                              "dropout": 0.3993914441570152})):
        t = next(t for t in sw.tasks if (t.mode, t.subset, t.init) == ("spectra", "full", init))
        cfg = sw.task_config(t)
        assert cfg.optim.lr == want["lr"] and cfg.model.spec_dropout == want["dropout"], init


DROPOUT_COLUMNS = {"lc_dropout": "p_dropout", "spec_dropout": "s_dropout", "meta_dropout": "m_dropout"}


def _assert_row(c, row, dropouts) -> None:
    """Config `c` holds the CSV row's optimiser, schedule, training and (for `dropouts`) encoder dropout values."""
    assert c.optim.lr == float(row["lr"]) and c.optim.betas == [float(row["beta1"]), float(row["beta2"])]
    assert c.optim.weight_decay == float(row["weight_decay"])
    assert c.optim.plateau_factor == float(row["scheduler_factor"])
    assert c.optim.plateau_patience == int(row["scheduler_patience"])
    assert c.optim.warmup_epochs == int(row["warmup_epochs"])
    assert c.optim.grad_clip == (float(row["clip_value"]) if row["clip_grad"] == "True" else 0.0)
    assert (c.train.epochs, c.train.batch_size, c.train.early_stop_patience) == (
        int(row["epochs"]), int(row["batch_size"]), int(row["early_stopping_patience"]))
    for key in dropouts:
        assert getattr(c.model, key) == float(row[DROPOUT_COLUMNS[key]]), key


@pytest.mark.skipif(not SPEC_CSV.exists() and not IN_CI, reason="the spec's CSV is outside the repository")
def test_every_cell_equals_the_spec_csv():
    key = {"photo": "lc_dropout", "spectra": "spec_dropout", "meta": "meta_dropout"}
    n = 0
    for row in csv.DictReader(SPEC_CSV.open()):
        if not row["job"].startswith("finetune-"):
            continue
        mode = {"finetune-photo": "photo", "finetune-spectra": "spectra", "finetune-meta": "meta"}[row["job"]]
        _assert_row(load_config(PAPER_FT, [f"finetune.mode={mode}", f"data.subset={row['subset']}"]), row,
                    [key[mode]])
        n += 1
    assert n == 12


def test_every_clip_and_all_cell_equals_the_authors_configs(tmp_path):
    """The cells the spec's CSV lacks (fine-tuning from a pretraining, and "all" from scratch) hold the reference's
    config-<mode>-<subset>[-clip].yaml values as docs/authors_finetune_cells.csv records them, and a fine-tune
    whose init is a run directory resolves its CLIP cell (it resolved the scratch one)."""
    key = {"photo": ["lc_dropout"], "spectra": ["spec_dropout"], "meta": ["meta_dropout"],
           "all": ["lc_dropout", "spec_dropout", "meta_dropout"]}
    seen = set()
    for row in csv.DictReader(AUTHORS_CSV.open()):
        mode, init = row["job"].removeprefix("finetune-"), row["init"]
        assert init in ("clip", "scratch") and (init == "clip") == row["source_path"].endswith("-clip.yaml"), row
        sets = [f"finetune.mode={mode}", f"data.subset={row['subset']}"]
        if init == "clip":
            sets.append(f"finetune.init={tmp_path / 'pretrain-run'}")
        _assert_row(load_config(PAPER_FT, sets), row, key[mode])
        seen.add((mode, row["subset"], init))
    subsets = ("full", "sub50", "sub25", "sub10")
    assert seen == {(m, s, "clip") for m in key for s in subsets} | {("all", s, "scratch") for s in subsets}


@pytest.mark.skipif(not SPEC_CSV.exists() and not IN_CI, reason="the spec's CSV is outside the repository")
def test_paper_pretraining_equals_the_spec_csv():
    """Catches configs/paper.yaml carrying the spec's 3-digit roundings of the authors' pretraining values."""
    rows = [r for r in csv.DictReader(SPEC_CSV.open()) if r["job"] == "pretrain-clip"]
    assert len(rows) == 1
    _assert_row(load_config(REPO / "configs" / "paper.yaml"), rows[0], list(DROPOUT_COLUMNS))


def test_overrides_win_and_cells_can_be_turned_off(tmp_path):
    sweep = tmp_path / "sw"
    r = subprocess.run([ASTROM3, "sweep", "create", str(sweep), "--config", str(PAPER_FT), "--seeds", "42",
                        "--modes", "photo", "--set", "optim.lr=0.00123", "model.lc_dropout=0.05"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for t in Sweep.load(sweep).tasks:
        assert t.hparams["lr"] == 0.00123 and t.hparams["dropout"] == [0.05]
        assert t.hparams["warmup_epochs"] == 10  # the rest still comes from the cell
    c = load_config(PAPER_FT, ["cells=null", "data.subset=sub10"])
    assert c.cells is None and c.optim.lr == 0.0039210319036872545  # paper.yaml's own values
    with pytest.raises(ConfigError, match="no cell for mode 'photo', subset 'sub10'"):
        bad = tmp_path / "cells.yaml"
        bad.write_text("cells:\n  photo:\n    full: {optim: {lr: 0.1}}\n")
        load_config(PAPER_FT, [f"cells={bad}", "data.subset=sub10"])
    own = tmp_path / "own.yaml"  # a file of one's own without clip_cells serves runs from a pretraining too
    own.write_text("cells:\n  photo:\n    full: {optim: {lr: 0.1}}\n")
    assert load_config(PAPER_FT, [f"cells={own}", f"finetune.init={tmp_path}"]).optim.lr == 0.1
    own.write_text("cells:\n  photo:\n    full: {optim: {lr: 0.1}}\nclip_cells:\n  photo:\n    sub10: {}\n")
    with pytest.raises(ConfigError, match="no cell for mode 'photo', subset 'full' in 'clip_cells'"):
        load_config(PAPER_FT, [f"cells={own}", f"finetune.init={tmp_path}"])
    # A bad key in a cell fails at sweep creation, naming it, not in an array task later.
    bad.write_text("cells:\n  photo:\n    full: {optim: {lr: 0.1, betaz: [0.9, 0.9]}}\n")
    r = subprocess.run([ASTROM3, "sweep", "create", str(tmp_path / "sw2"), "--config", str(PAPER_FT),
                        "--seeds", "42", "--modes", "photo", "--subsets", "full", "--set", f"cells={bad}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "betaz" in r.stderr and not (tmp_path / "sw2" / "manifest.json").exists()


def test_cells_that_is_not_a_file_name_is_a_config_error(tmp_path):
    """`cells:` given a table inline, a number, or the cells file itself passed as --config: Path(cells) raised a
    TypeError traceback (exit 1) instead of one line naming the key."""
    inline = tmp_path / "inline.yaml"
    inline.write_text("name: t\ncells:\n  photo:\n    full:\n      optim: {lr: 0.01}\n")
    cells_file = REPO / "configs" / "finetune_cells.yaml"
    for path, sets, got in [(inline, [], "got a mapping"), (cells_file, [], "got a mapping"),
                            (PAPER_FT, ["cells=5"], "got 5"), (PAPER_FT, ["cells=[a.yaml]"], "got ['a.yaml']")]:
        with pytest.raises(ConfigError, match=f"^{path}: cells: expected the path of a cells file.*{re.escape(got)}"):
            load_config(path, sets)
    r = subprocess.run([ASTROM3, "finetune", "--config", str(cells_file), "--run-dir", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"astrom3 finetune: error: {cells_file}: cells: expected")


def test_trainer_honours_warmup_clipping_and_plateau():
    meta = load_config(PAPER_FT, ["finetune.mode=meta", "data.subset=sub10"])
    photo = load_config(PAPER_FT, ["finetune.mode=photo", "data.subset=sub10"])
    # ZeRO stage 0 clips in the trainer (clip_gradients, no host sync), ZeRO stages inside DeepSpeed.
    assert ds_config(meta, 1)["gradient_clipping"] == 0.0 and ds_config(photo, 1)["gradient_clipping"] == 0.0
    zero = load_config(PAPER_FT, ["finetune.mode=photo", "data.subset=sub10", "train.zero_stage=1"])
    assert ds_config(zero, 1)["gradient_clipping"] == 5.0
    layer = torch.nn.Linear(4, 3)

    def clipped_norm(cfg, g: float) -> float:
        layer.weight.grad, layer.bias.grad = torch.full((3, 4), g), torch.full((3,), g)
        clip_gradients(layer, cfg)
        return float(torch.cat([layer.weight.grad.flatten(), layer.bias.grad]).norm())

    assert clipped_norm(photo, 10.0) == pytest.approx(5.0, rel=1e-5)  # the cell's clip_value
    assert clipped_norm(photo, 0.1) == pytest.approx(0.1 * 15**0.5, rel=1e-6)  # under the limit: untouched
    assert clipped_norm(meta, 10.0) == pytest.approx(10.0 * 15**0.5, rel=1e-6)  # clip_grad False
    assert clipped_norm(zero, 10.0) == pytest.approx(10.0 * 15**0.5, rel=1e-6)  # DeepSpeed's job under ZeRO
    assert ds_config(photo, 2)["train_batch_size"] == 512
    s = LRSchedule.from_config(photo.optim, photo.train.epochs)
    lrs = [s.lr(e) for e in range(11)]
    assert lrs[0] == pytest.approx(photo.optim.lr * photo.optim.warmup_start_factor)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11])) and lrs[10] == photo.optim.lr  # 10-epoch warm-up
    for e in range(10, 15):
        s.end_epoch(e, 1.0)  # no improvement after the first post-warm-up epoch
    assert s.lr(15) == pytest.approx(photo.optim.lr * photo.optim.plateau_factor)


def test_manifest_records_hparams_as_json(tmp_path):
    r = subprocess.run([ASTROM3, "sweep", "create", str(tmp_path / "sw"), "--seeds", "42", "--modes", "meta",
                        "--subsets", "full", "--inits", "scratch"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "none (one config for every task" in r.stdout
    m = json.loads((tmp_path / "sw" / "manifest.json").read_text())
    assert m["tasks"][0]["hparams"]["cells"] is None


def test_a_runs_config_yaml_reloads_to_the_same_config_from_anywhere(tmp_path, monkeypatch):
    """Catches the resolved config.yaml keeping `cells:` beside the values it had applied (a reload applied the
    cell again over the run's overrides: epochs 2 -> 50, batch 32 -> 512) and a relative data.store (read against
    the reader's directory: evaluate-embeddings from elsewhere scored another store)."""
    from astrom3_hpc.core.config import dump_config

    monkeypatch.chdir(tmp_path)
    sets = ["data.store=data/s.zarr", "train.epochs=2", "train.batch_size=32", "optim.lr=0.001",
            "data.subset=sub10"]
    cfg = load_config(PAPER_FT, sets)
    dump_config(cfg, tmp_path / "config.yaml")
    monkeypatch.chdir(REPO)
    again = load_config(tmp_path / "config.yaml")
    assert again.data.store == str(tmp_path / "data" / "s.zarr") and again.cells is None
    want = cfg.to_dict()
    want["data"]["store"], want["cells"] = again.data.store, None
    assert again.to_dict() == want and (again.train.epochs, again.train.batch_size) == (2, 32)
