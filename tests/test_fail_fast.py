"""One rank fails, the job fails fast (issue 12): a damaged chunk that only one rank reads ends a 2-rank
mpiexec job within seconds, with the error printed once (before: the other rank waited 30 minutes)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from astrom3_hpc.core.config import load_config
from astrom3_hpc.train.pretrain import Pretrainer
from dist_helpers import child_env
from test_train import FAST, _cmd

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
    # Timed from the error line on, as the job's start-up (imports, rendezvous) depends on the machine's load.
    p = subprocess.Popen(_cmd("pretrain", tmp_path / "run", store, 2, "mpiexec"), env=child_env(), cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines, t_error = [], None
    try:
        for line in p.stderr:
            lines.append(line)
            if t_error is None and "is damaged" in line:
                t_error = time.monotonic()
        p.wait(timeout=240)
    finally:
        p.kill()
    elapsed = time.monotonic() - t_error if t_error else None
    err = "".join(lines)
    assert p.returncode != 0, err[-3000:]
    assert err.count("of array 'spec' is damaged") == 1, err[-3000:]
    assert "rank 1: error:" in err and "Traceback" not in err
    assert elapsed is not None and elapsed < 60, f"exited {elapsed} s after the error\n{err[-3000:]}"
    assert not (tmp_path / "run" / "checkpoints" / "latest.json").exists()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sets,said", [
    (["train.batch_size=31"], "error: train.batch_size 31 must be divisible by the world size 2"),
    (["optim.lr=1e8", "train.epochs=2"], "error: training stopped, nothing was checkpointed from this point:")])
def test_an_error_every_rank_finds_alike_is_printed_and_recorded_once(tiny_store, tmp_path, sets, said):
    """Catches a global batch that the world size does not divide printed by every rank (1 to N copies, whichever
    rank ended the job first), and a NaN stop's report of every rank printed by every rank (N x (N + 2) lines) and
    recorded by each in train.log with its traceback; and DeepSpeed's "op built successfully" on stdout."""
    from test_train import run_job

    run = tmp_path / "run"
    r = run_job("pretrain", run, tiny_store, world=2, launcher="torchrun", sets=sets, check=False)
    assert r.returncode != 0, r.stderr[-3000:]  # torchrun's own code
    assert r.stderr.count(said) == 1 and f"rank 0: {said}" in r.stderr, r.stderr[-3000:]
    assert (run / "train.log").read_text().count(" ERROR ") == 1
    assert "built successfully" not in r.stdout
