"""What a run directory records is what ran: the store a resumed run reads, the cells file that chose its values,
the threads its CPU rounding came from.

A pretraining resumed after its store moved kept the old path in config.yaml and run.json, so the tools that read
config.yaml (evaluate-embeddings, embed) failed on it with "not a Zarr v3 store ... build one with astrom3
ingest"; evaluate-embeddings had no --store. collect said "no cells file" of runs a cells file tuned (config.yaml
records `cells: null`). How many threads train.threads 0 came to was recorded nowhere.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CFG = str(REPO / "configs" / "test.yaml")
FAST = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=16"]


def test_a_resumed_run_names_the_store_it_reads_and_evaluate_embeddings_takes_a_moved_one(tiny_store, tmp_path,
                                                                                         capsys):
    import yaml

    from astrom3_hpc.cli import main
    from astrom3_hpc.core.errors import EXIT_PREEMPTED
    from astrom3_hpc.train.jobs import pretrain_config, run_pretrain

    old, new, run = tmp_path / "old.zarr", tmp_path / "new.zarr", tmp_path / "pre"
    shutil.copytree(tiny_store, old)
    assert run_pretrain(pretrain_config(CFG, [*FAST, f"data.store={old}"]), run, stop_after_steps=1) == EXIT_PREEMPTED
    first = json.loads((run / "run.json").read_text())
    assert first["store"] == str(old) and isinstance(first["threads"], int) and "resumptions" not in first
    # What config.yaml's nulls came to: the paper preset's reference quirks.
    assert first["model_preset_values"] == {"deterministic_eval": False, "attn_padding_mask": False,
                                            "lc_pooling": "flatten", "attn_head_layout": "reference",
                                            "lc_encoder": None, "periodic_features": None}
    old.rename(new)
    assert run_pretrain(pretrain_config(CFG, [*FAST, f"data.store={new}"]), run) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["store"] == str(new)
    rec = json.loads((run / "run.json").read_text())
    assert rec["started"] == first["started"] and rec["store"] == str(old)  # the first attempt's record stays
    (again,) = rec["resumptions"]
    assert again["store"] == str(new) and again["threads"] == first["threads"] and "resumed" in again
    exported = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    assert main(["evaluate-embeddings", str(run)]) == 0
    # Its process group and exports end with it: a job started next from this process (a sweep task's subprocess)
    # took the exported MASTER_PORT, which the leftover group still listened on (EADDRINUSE).
    assert {k: os.environ.get(k) for k in exported} == exported and not torch.distributed.is_initialized()

    moved = tmp_path / "moved.zarr"
    new.rename(moved)
    capsys.readouterr()
    assert main(["evaluate-embeddings", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"store {new} does not exist (moved? give its new path" in err and "build one" in err
    assert main(["evaluate-embeddings", str(run), "--store", str(moved)]) == 0
    assert json.loads((run / "embedding_eval.json").read_text())["split_seed"] == 42


def test_run_json_names_the_cells_file_and_collect_tables_it(tiny_store, tmp_path):
    from astrom3_hpc.results.collect import collect
    from astrom3_hpc.train.jobs import finetune_config, run_finetune

    cells = REPO / "configs" / "finetune_cells.yaml"
    run = tmp_path / "runs" / "photo-sub50-s42-scratch"
    cfg = finetune_config(CFG, [f"cells={cells}", *FAST, f"data.store={tiny_store}", "optim.warmup_epochs=0"],
                          mode="photo", subset="sub50", seed=42, init="scratch")
    assert cfg.optim.lr != finetune_config(CFG, FAST, mode="photo", subset="sub50").optim.lr  # the cell applied
    assert run_finetune(cfg, run) == 0
    assert json.loads((run / "run.json").read_text())["cells_file"] == str(cells)
    # A run of the same cell from before run.json named the file (a sweep finished after an upgrade): one row.
    old = tmp_path / "runs" / "photo-sub50-s0-scratch"
    cfg.data.seed = 0
    assert run_finetune(cfg, old) == 0
    rec = json.loads((old / "run.json").read_text())
    (old / "run.json").write_text(json.dumps({k: v for k, v in rec.items() if k != "cells_file"}))
    res = collect(tmp_path, out=tmp_path / "o", plot=False)
    (row,) = res["cell_hparams"]
    assert row["cells"] == str(cells) and row["lr"] == cfg.optim.lr and row["n_runs"] == 2
    md = (tmp_path / "o" / "results.md").read_text()
    assert f"(cells file: {cells})" in md and "no cells file" not in md


def test_a_resume_on_other_automatic_threads_is_warned_about(tmp_path, caplog):
    """train.threads 0 takes the job's cores; a requeue onto a node of another count rounds otherwise from there."""
    from astrom3_hpc.core.config import RunConfig
    from astrom3_hpc.train.rundir import RunDir

    (tmp_path / "run.json").write_text(json.dumps({"kind": "pretrain", "threads": 2, "started": "then"}))
    run = RunDir(tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="astrom3"):
            cfg = RunConfig()
            run.record_resumption(cfg, {"kind": "pretrain", "threads": 2, "store": "s"})
            assert not caplog.records
            run.record_resumption(cfg, {"kind": "pretrain", "threads": 1, "store": "s"})
            (said,) = [r.getMessage() for r in caplog.records]
            assert "resumed on 1 threads" in said and "started on 2" in said and "train.threads=2" in said
            caplog.clear()
            cfg.train.threads = 1  # asked for: the user chose it
            run.record_resumption(cfg, {"kind": "pretrain", "threads": 1, "store": "s"})
            assert not caplog.records
    finally:
        run.close()
    rec = json.loads((tmp_path / "run.json").read_text())
    assert rec["started"] == "then" and [a["threads"] for a in rec["resumptions"]] == [2, 1, 1]
