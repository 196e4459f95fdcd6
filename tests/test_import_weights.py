"""`astrom3 import-weights`: a reference checkpoint becomes a pretraining run dir that fine-tuning and the
science tools accept; its unknown split seed must be acknowledged; misfitting checkpoints are refused whole."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from test_golden import GOLDEN, _batch, _require
from test_train import run_job

from astrom3_hpc.cli import main

BIN = f"{sys.executable[:sys.executable.rindex('/')]}/astrom3"


@pytest.fixture(scope="module")
def golden():
    return torch.load(_require("model_small.pt"), weights_only=True)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("imp") / "run"
    r = subprocess.run([BIN, "import-weights", str(GOLDEN / "model_small.pt"), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def test_run_dir_layout_and_record(imported):
    names = {p.name for p in imported.iterdir()}
    assert {"config.yaml", "best_model.pt", "run.json", "imported.json", "checkpoints"} <= names
    rec = json.loads((imported / "imported.json").read_text())
    assert rec["split_seed"] is None and rec["format"] == "torch" and rec["n_heads"] == 4
    assert rec["source_file"].endswith("model_small.pt") and len(rec["sha256"]) == 64
    assert not any(p.name.startswith(".") for p in imported.parent.iterdir())  # no temporary left behind


def test_science_tools_load_the_imported_model_and_reproduce_the_reference(imported, golden):
    from astrom3_hpc.science.common import load_model

    model, cfg, meta = load_model(imported)
    assert meta["kind"] == "pretrain" and meta["seed"] is None and cfg.model.d_model == 32
    torch.manual_seed(1234)
    with torch.no_grad():
        emb = model(_batch(golden))
    for k, m in (("p", "photo"), ("s", "spectra"), ("m", "meta")):
        torch.testing.assert_close(emb[m], golden["clip"]["embeddings"][k], atol=1e-5, rtol=1e-5)


def test_embed_accepts_the_imported_run(imported, tiny_store, tmp_path):
    out = tmp_path / "sci"
    import numpy as np

    from astrom3_hpc.data.store import Store
    from astrom3_hpc.science.common import read_embeddings

    assert main(["embed", str(imported), "--store", str(tiny_store), "--out-dir", str(out), "--no-progress"]) == 0
    emb, valid = read_embeddings(out / "embeddings.zarr"), np.flatnonzero(Store(tiny_store).root["valid"][:])
    assert np.array_equal(emb.row, valid)  # every valid object embedded by the imported weights
    assert all(np.isfinite(v).all() and v.shape[0] == len(valid) for v in emb.vectors.values())


def test_safetensors_import_gives_the_same_weights(imported, golden, tmp_path):
    from safetensors.torch import save_file

    f = tmp_path / "astrom3.safetensors"
    save_file({k: v.contiguous() for k, v in golden["state_dict"].items()}, str(f))
    out = tmp_path / "run-st"
    assert main(["import-weights", str(f), "--out", str(out)]) == 0
    assert json.loads((out / "imported.json").read_text())["format"] == "safetensors"
    a = torch.load(out / "best_model.pt", weights_only=False)["state_dict"]
    b = torch.load(imported / "best_model.pt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_overwrite_replaces_only_an_imported_run(imported, tmp_path, capsys):
    """Catches `import-weights --out runs --overwrite` deleting a whole folder of runs to put the import there."""
    runs = tmp_path / "runs"
    (runs / "ft-s42").mkdir(parents=True)
    (runs / "NOTES.txt").write_text("mine")
    small = str(GOLDEN / "model_small.pt")
    assert main(["import-weights", small, "--out", str(runs)]) == 2
    assert f"{runs} already exists: pass --overwrite to replace an imported run there" in capsys.readouterr().err
    assert main(["import-weights", small, "--out", str(runs), "--overwrite"]) == 2
    assert f"--out {runs} exists and is not an imported run (no imported.json)" in capsys.readouterr().err
    assert (runs / "NOTES.txt").read_text() == "mine" and (runs / "ft-s42").is_dir()
    again = tmp_path / "again"
    shutil.copytree(imported, again)
    assert main(["import-weights", small, "--out", str(again), "--overwrite"]) == 0
    assert json.loads((again / "imported.json").read_text())["source_file"] == small


def test_bad_shape_is_refused_naming_file_and_key(golden, tmp_path, capsys):
    sd = dict(golden["state_dict"])
    sd["spectra_proj.weight"] = torch.zeros(64, 1000)
    f = tmp_path / "bad.pt"
    torch.save(sd, f)
    out = tmp_path / "run-bad"
    assert main(["import-weights", str(f), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.pt" in err and "spectra_proj.weight" in err and "(64, 1000)" in err
    assert not out.exists() and list(tmp_path.iterdir()) == [f]
    # A file that is no checkpoint at all, and an unknown key.
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    assert main(["import-weights", str(tmp_path / "junk.pt"), "--out", str(out)]) == 2
    torch.save({**golden["state_dict"], "extra_head.weight": torch.zeros(3)}, f)
    assert main(["import-weights", str(f), "--out", str(out)]) == 2
    assert "extra_head.weight" in capsys.readouterr().err and not out.exists()


@pytest.mark.timeout(900)
def test_finetune_from_imported_weights_needs_the_acknowledgement(imported, tiny_store, tmp_path):
    refused = tmp_path / "refused"
    r = run_job("finetune", refused, tiny_store, extra=["--mode", "photo", "--init", str(imported)], check=False)
    assert r.returncode == 2
    assert "split seed is unknown" in r.stderr and "--allow-unknown-seed" in r.stderr
    assert not (refused / "metrics.json").exists()
    wrong = run_job("finetune", tmp_path / "wrong", tiny_store, check=False,
                    extra=["--mode", "photo", "--seed", "42", "--pretrain-seed", "0", "--init", str(imported)])
    assert wrong.returncode == 2 and "test leak" in wrong.stderr

    run = tmp_path / "ft"
    run_job("finetune", run, tiny_store, sets=["train.epochs=1"],
            extra=["--mode", "photo", "--init", str(imported), "--allow-unknown-seed"])
    m = json.loads((run / "metrics.json").read_text())
    assert m["init"] == "clip" and m["epochs_run"] == 1 and 0 <= m["test_accuracy"] <= 1
    # The imported architecture (d_model 32, 2 layers, 4 heads) was used, not the fine-tuning config's.
    cfg = (run / "config.yaml").read_text()
    assert "d_model: 32" in cfg and "n_layers: 2" in cfg
    # Naming the seed works as well (then it is checked against --seed like a recorded one).
    run2 = tmp_path / "ft-seed"
    run_job("finetune", run2, tiny_store, sets=["train.epochs=1"],
            extra=["--mode", "photo", "--seed", "42", "--pretrain-seed", "42", "--init", str(imported)])
    assert json.loads((run2 / "metrics.json").read_text())["epochs_run"] == 1


def test_evaluate_embeddings_of_imported_weights_needs_their_seed(tiny_store, tmp_path):
    """Catches evaluate-embeddings scoring imported weights on the placeholder seed's test split without a word:
    their split seed is unknown, so that split may hold objects they were pretrained on (fine-tuning from them
    already refused it)."""
    run = tmp_path / "imp"
    r = subprocess.run([BIN, "import-weights", str(GOLDEN / "model_small.pt"), "--out", str(run), "--store",
                        str(tiny_store)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ev = [BIN, "evaluate-embeddings", str(run), "--batch-size", "32"]
    r = subprocess.run(ev, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "split seed is unknown" in r.stderr and "--pretrain-seed S" in r.stderr, r.stderr
    assert not (run / "embedding_eval.json").exists()
    r = subprocess.run([*ev, "--pretrain-seed", "0"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads((run / "embedding_eval.json").read_text())
    assert out["split_seed"] == 0 and "split_seed_unknown" not in out and out["n_test"] > 0
    r = subprocess.run([*ev, "--allow-unknown-seed"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "unknown split seed" in r.stderr, r.stderr[-3000:]
    out = json.loads((run / "embedding_eval.json").read_text())
    assert out["split_seed"] == 42 and out["split_seed_unknown"] is True
