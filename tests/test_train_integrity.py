"""Training on damaged data stops with a clear error; nothing non-finite is ever checkpointed (issue 12)."""

from __future__ import annotations

import json
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


STATES = "mp_rank_00_model_states.pt"  # DeepSpeed's file of the weights and optimizer state


def _fake_checkpoints(root, tags=("step2", "step4")):
    """checkpoints/ as save() leaves it (real torch files; the engine's are stand-ins) and latest.json."""
    ckpt = root / "checkpoints"
    for tag in tags:
        (ckpt / tag).mkdir(parents=True)
        torch.save({"module": {}}, ckpt / tag / STATES)
        torch.save(checkpoint.rng_state(), ckpt / tag / "rng_rank0.pt")
    (ckpt / "latest.json").write_text(json.dumps({"tag": tags[-1], "step": 4}))
    return ckpt


class _Engine:
    def __init__(self, error=None):
        self.error = error

    def load_checkpoint(self, ckpt_dir, tag, **kw):
        if self.error is not None:
            raise self.error
        return f"{ckpt_dir}/{tag}", {"state": {}}


@pytest.mark.parametrize("text,expect", [('{"tag": "ste', "is damaged: not readable JSON"),
                                         ("", "is damaged: not readable JSON"),
                                         ("[]", "is damaged: it names no checkpoint"),
                                         ("{}", "is damaged: it names no checkpoint"),
                                         ('{"tag": 4}', "is damaged: it names no checkpoint")])
def test_a_damaged_latest_json_is_one_error_naming_it(tmp_path, text, expect):
    ckpt = _fake_checkpoints(tmp_path)
    (ckpt / "latest.json").write_text(text)
    with pytest.raises(ValueError) as e:
        checkpoint.latest_tag(ckpt)
    msg = str(e.value)
    assert msg.startswith(f"{ckpt / 'latest.json'} {expect}") and "\n" not in msg, msg
    assert 'write {"tag": "step4"} into' in msg  # the newest checkpoint kept


def _garble(path):
    path.write_bytes(np.random.default_rng(0).bytes(2000))


@pytest.mark.parametrize("damage,bad,expect", [
    (lambda t: shutil.rmtree(t), None, "names checkpoint step4, but {t} does not exist"),
    (lambda t: (t / STATES).unlink(), STATES, "{f} is missing"),
    (lambda t: (t / STATES).write_bytes((t / STATES).read_bytes()[:300]),
     STATES, "{f} is truncated or not a torch file"),
    (lambda t: _garble(t / STATES), STATES, "{f} is truncated or not a torch file"),
    (lambda t: (t / "rng_rank0.pt").unlink(), "rng_rank0.pt", "{f} is missing"),
    (lambda t: (t / "rng_rank0.pt").write_bytes(b""), "rng_rank0.pt", "{f} is truncated or not a torch file"),
    (lambda t: torch.save({"not": "rng"}, t / "rng_rank0.pt"), "rng_rank0.pt", "{f} could not be loaded (KeyError")])
def test_a_damaged_checkpoint_is_one_error_naming_the_file(tmp_path, damage, bad, expect):
    ckpt = _fake_checkpoints(tmp_path)
    tag = ckpt / "step4"
    damage(tag)
    with pytest.raises(ValueError) as e:
        checkpoint.load(_Engine(), ckpt, "step4")
    msg = str(e.value)
    assert expect.format(t=tag, f=tag / (bad or "")) in msg and "\n" not in msg, msg
    assert "world size" not in msg  # a missing rng file is a lost file (another world size is refused before)
    assert f'write {{"tag": "step2"}} into {ckpt / "latest.json"}' in msg  # how to resume from the previous one


def test_an_engine_that_cannot_read_the_checkpoint_names_it(tmp_path):
    ckpt = _fake_checkpoints(tmp_path, tags=("step4",))
    err = RuntimeError("PytorchStreamReader failed reading file data/20: invalid header or archive is corrupted")
    with pytest.raises(ValueError) as e:
        checkpoint.load(_Engine(err), ckpt, "step4")
    assert str(e.value) == (f"checkpoint {ckpt / 'step4'} could not be loaded (RuntimeError: PytorchStreamReader "
                            "failed reading file data/20: invalid header or archive is corrupted); no other "
                            "checkpoint is kept: start over with a new --run-dir")
    assert checkpoint.load(_Engine(), ckpt, "step4") == {"state": {}}  # intact: loads
