"""Embeddings reused by the science tools only where the run's current best_model.pt made them.

A pretraining that was embedded, then resumed and improved (best_model.pt replaced), kept its old vectors:
`search`/`outliers`/`umap` read them silently and `search --query-file` embedded the query with the new model
among the old one's vectors. No model is trained here: untrained CLIPs of configs/test.yaml are written with the
checkpoint module's own save_weights, as a run's on_best writes them, under another epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _write_best(run: Path, seed: int, epoch: int) -> None:
    import torch

    from astrom3_hpc.model import build_clip
    from astrom3_hpc.science.common import run_config
    from astrom3_hpc.train.checkpoint import BEST_MODEL, save_weights

    torch.manual_seed(seed)
    save_weights(build_clip(run_config(run).model), run / BEST_MODEL,
                 {"epoch": epoch, "val": {"loss": 10.0 - epoch}, "seed": 42, "kind": "pretrain"})


@pytest.fixture
def run(tiny_store, tmp_path):
    """A pretraining run dir (config naming the tiny store, best weights of epoch 0) embedded once."""
    from astrom3_hpc.core.config import dump_config, load_config
    from astrom3_hpc.science.embed import embed_run

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    dump_config(load_config(ROOT / "configs" / "test.yaml", [f"data.store={tiny_store}"]), run / "config.yaml")
    _write_best(run, seed=0, epoch=0)
    embed_run(run, batch_size=200)
    return run


def _sha256(run: Path) -> str:
    from astrom3_hpc.train.checkpoint import weights_digest

    return weights_digest(run / "best_model.pt")


def _zarr_attrs(path: Path) -> dict:
    return json.loads((path / "zarr.json").read_text())["attributes"]


def test_search_embeds_again_after_best_model_was_replaced(run, caplog):
    """Catches search/outliers/umap reading embeddings.zarr of an earlier best_model.pt: after the run improved
    (epoch 2 weights), they are embedded again, recording the new weights, and named in the log."""
    from astrom3_hpc.science.common import read_embeddings
    from astrom3_hpc.science.search import search_run

    path = run / "science" / "embeddings.zarr"
    old = read_embeddings(path)
    first = _sha256(run)
    _write_best(run, seed=1, epoch=2)

    with caplog.at_level(logging.INFO, logger="astrom3"):
        search_run(run, rows=[int(old.row[0])], k=3)
    new = read_embeddings(path)
    assert new.attrs["model_meta"]["epoch"] == 2
    assert not np.allclose(new.vectors["photo"], old.vectors["photo"])
    assert (old.attrs["weights_digest"], new.attrs["weights_digest"]) == (first, _sha256(run))
    said = [r.getMessage() for r in caplog.records if "other weights" in r.getMessage()]
    assert said and "epoch 0 then" in said[0] and "epoch 2 now" in said[0], said

    # Current now: read as it is, not embedded a third time.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="astrom3"):
        search_run(run, rows=[int(old.row[0])], k=3)
    assert not [r for r in caplog.records if "embedding the run's store" in r.getMessage()]
    np.testing.assert_array_equal(read_embeddings(path).vectors["photo"], new.vectors["photo"])


def test_store_without_weights_hash_is_compared_by_epoch(run, caplog):
    """A store written before the hash was recorded: embedded again where its model's epoch differs from
    best_model.pt's, read with a warning (it cannot be checked further) where it is the same."""
    from astrom3_hpc.science.common import read_embeddings
    from astrom3_hpc.science.embed import embeddings_for

    path = run / "science" / "embeddings.zarr"
    meta = json.loads((path / "zarr.json").read_text())
    del meta["attributes"]["weights_digest"]
    (path / "zarr.json").write_text(json.dumps(meta))
    before = read_embeddings(path)

    with caplog.at_level(logging.INFO, logger="astrom3"):
        same = embeddings_for(run)
    np.testing.assert_array_equal(same.vectors["photo"], before.vectors["photo"])
    assert "weights_digest" not in _zarr_attrs(path)
    assert any("records no weights hash" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)

    _write_best(run, seed=1, epoch=1)
    again = embeddings_for(run)
    assert again.attrs["model_meta"]["epoch"] == 1 and "weights_digest" in again.attrs
    assert not np.allclose(again.vectors["photo"], before.vectors["photo"])


def test_query_file_refused_among_another_models_vectors(run, tmp_path):
    """Catches `search --query-file --embeddings OLD`: the query embedded by the run's current model and searched
    among vectors another model made; given embeddings are never replaced, so the search is refused."""
    from astrom3_hpc.science.search import search_run

    given = tmp_path / "old.zarr"
    shutil.copytree(run / "science" / "embeddings.zarr", given)
    _write_best(run, seed=1, epoch=2)
    q = tmp_path / "q.csv"
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0, 100, 300))
    q.write_text("time,flux,flux_err\n" + "".join(
        f"{x:.5f},{10 + math.sin(2 * math.pi * x / 0.61):.5f},0.05\n" for x in t))

    with pytest.raises(ValueError, match=r"other weights.*epoch 0 then, epoch 2 now.*searched among another"):
        search_run(run, query_file=q, aux=[0.5, 0.61, 0.1, 0.9], targets=["photo"], k=3, embeddings=given)
    assert not (run / "science" / "search").exists()


def test_a_full_disk_at_embeds_last_write_is_one_line_and_keeps_the_old_vectors(run, monkeypatch, capsys):
    """Catches the swap of the finished embeddings into place failing on a full disk as a traceback through
    replace_dir (under several ranks, the others then waited at a barrier for ever): rank 0's last write is now
    one DiskFullError line naming the output, on every rank, with the old vectors and no temporary store left."""
    import errno

    from astrom3_hpc.cli import main
    from astrom3_hpc.science import embed

    path = run / "science" / "embeddings.zarr"
    before = _zarr_attrs(path)
    _write_best(run, seed=1, epoch=2)

    def full(tmp, out):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(embed, "replace_dir", full)
    capsys.readouterr()
    assert main(["embed", str(run), "--no-progress"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and f"{path}: no space left on device" in err[0], err
    assert _zarr_attrs(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["embeddings.zarr"]


def test_the_same_tensors_saved_again_keep_their_embeddings_and_old_stores_compare_by_file(run, caplog):
    """Catches a deterministic rerun's best_model.pt (the same tensors, another archive name inside the file)
    being embedded again; a store of an earlier version, recording only the file's sha256, is still reused while
    that file is unchanged and embedded again once it is replaced."""
    import torch

    from astrom3_hpc.science.embed import embeddings_for
    from astrom3_hpc.train.checkpoint import save_weights

    path, best = run / "science" / "embeddings.zarr", run / "best_model.pt"
    before_bytes = best.read_bytes()
    blob = torch.load(best, weights_only=True)
    model = torch.nn.Module()
    model.state_dict = lambda: blob["state_dict"]
    save_weights(model, best, blob["meta"])
    assert best.read_bytes() != before_bytes  # torch.save names the archive after its temporary file
    with caplog.at_level(logging.INFO, logger="astrom3"):
        embeddings_for(run)
    assert not [r for r in caplog.records if "other weights" in r.getMessage()]

    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["weights_sha256"] = hashlib.sha256(best.read_bytes()).hexdigest()
    del meta["attributes"]["weights_digest"]
    (path / "zarr.json").write_text(json.dumps(meta))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="astrom3"):
        embeddings_for(run)
    assert not [r for r in caplog.records if "other weights" in r.getMessage() or "records no" in r.getMessage()]
    assert "weights_digest" not in _zarr_attrs(path)

    _write_best(run, seed=1, epoch=1)
    again = embeddings_for(run)
    assert again.attrs["model_meta"]["epoch"] == 1 and again.attrs["weights_digest"] == _sha256(run)
