"""Training on damaged data stops with a clear error; nothing non-finite is ever checkpointed (issue 12)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from astrom3_hpc.train import checkpoint
from astrom3_hpc.train.finite import FiniteGuard, NonFiniteError
from conftest import built_before_checksums
from test_train import run_job


def _nan_fill(path) -> None:
    path.write_bytes(np.full(path.stat().st_size // 4, np.nan, np.float32).tobytes())


def test_guard_names_the_first_bad_step_batch_and_objects_at_the_next_check():
    model = torch.nn.Linear(3, 1)
    guard = FiniteGuard(torch.device("cpu"))
    for step, value in enumerate([1.0, float("nan"), 2.0]):
        model.zero_grad()
        loss = model(torch.full((2, 3), value)).sum()
        loss.backward()
        guard.observe(step, 0, step, torch.tensor([10 + step, 20 + step]), loss, model)
    with pytest.raises(NonFiniteError, match=r"step 2 \(epoch 0, batch 1\), object ids \[11, 21\]"):
        guard.check()


def test_guard_catches_a_non_finite_gradient_with_a_finite_loss():
    model = torch.nn.Linear(1, 1)
    guard = FiniteGuard(torch.device("cpu"))
    x = torch.tensor([[0.0]], requires_grad=False)
    loss = model(x).sum() * 0 + model.weight.sum() * 0
    loss.backward()
    model.weight.grad.fill_(float("inf"))
    guard.observe(0, 0, 0, None, loss, model)
    with pytest.raises(NonFiniteError, match="at step 1"):
        guard.check()


def test_non_finite_weights_are_never_written(tmp_path):
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN or infinite weights"):
        checkpoint.save_weights(model, tmp_path / "best_model.pt", {})
    assert not (tmp_path / "best_model.pt").exists()
    with pytest.raises(NonFiniteError):
        FiniteGuard(torch.device("cpu")).check(model)


@pytest.mark.timeout(600)
def test_nan_light_curves_stop_pretraining_without_a_checkpoint(tiny_store, tmp_path):
    store = tmp_path / "nan.zarr"
    shutil.copytree(tiny_store, store)
    built_before_checksums(store)  # only the guard can catch this
    for chunk in (store / "lc" / "values" / "c").rglob("*"):
        if chunk.is_file():
            _nan_fill(chunk)
    run = tmp_path / "run"
    # Logged every 100 steps: the bad step is found at the end of the epoch, still named as step 1.
    r = run_job("pretrain", run, store, sets=["train.log_every_steps=100"], check=False)
    assert r.returncode == 5, r.stderr[-3000:]
    assert "non-finite loss or gradient at step 1 (epoch 0, batch 0), object ids [" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (run / "checkpoints" / "latest.json").exists()
    assert not (run / "best_model.pt").exists() and not (run / "metrics.json").exists()


@pytest.mark.timeout(600)
def test_pretraining_on_a_damaged_store_fails_before_any_checkpoint(tiny_store, tmp_path):
    store = tmp_path / "bad.zarr"
    shutil.copytree(tiny_store, store)
    chunk = store / "lc" / "values" / "c" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[100:4196] = np.random.default_rng(0).bytes(4096)
    chunk.write_bytes(bytes(data))
    run = tmp_path / "run"
    r = run_job("pretrain", run, store, check=False)
    assert r.returncode == 3, r.stderr[-3000:]
    assert f"{chunk}: chunk 'c/1/0' of array 'lc/values' is damaged" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (run / "checkpoints" / "latest.json").exists()
