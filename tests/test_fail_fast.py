"""One rank fails, the job fails fast (issue 12): a damaged chunk that only one rank reads ends a 2-rank
mpiexec job within seconds, with the error printed once (before: the other rank waited 30 minutes)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from astrom3_hpc.config import load_config
from astrom3_hpc.train.pretrain import Pretrainer
from test_train import FAST, run_job

ROOT = Path(__file__).resolve().parents[1]


def _chunk_only_rank1_reads_first(store: Path, tmp: Path) -> int:
    cfg = load_config(str(ROOT / "configs" / "test.yaml"), [f"data.store={store}", *FAST])
    t = Pretrainer(cfg, tmp / "unused")
    t.world = 2
    first = {}
    for r in (0, 1):
        t.rank = r
        b = t.loader("train", train=True)
        first[r] = set((b.batch_rows(0)[0] // b.chunk).tolist())
    only = sorted(first[1] - first[0])
    assert only, first
    return only[0]


@pytest.mark.timeout(300)
def test_a_damaged_chunk_on_one_rank_ends_the_mpiexec_job_within_a_minute(tiny_store, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(tiny_store, store)
    c = _chunk_only_rank1_reads_first(store, tmp_path)
    chunk = store / "spec" / "c" / str(c) / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[64:4160] = np.random.default_rng(0).bytes(4096)
    chunk.write_bytes(bytes(data))
    t0 = time.monotonic()
    r = run_job("pretrain", tmp_path / "run", store, world=2, launcher="mpiexec", check=False, timeout=240)
    elapsed = time.monotonic() - t0
    assert r.returncode != 0, r.stderr[-3000:]
    assert r.stderr.count("of array 'spec' is damaged") == 1, r.stderr[-3000:]
    assert "rank 1: error:" in r.stderr and "Traceback" not in r.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s\n{r.stderr[-3000:]}"
    assert not (tmp_path / "run" / "checkpoints" / "latest.json").exists()
