"""Training on damaged data stops with a clear error; nothing non-finite is ever checkpointed (issue 12)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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


class _Payload:
    """Unpickling this would touch a file: what a full torch.load of someone else's best_model.pt could do."""

    def __reduce__(self):
        return (Path.touch, (Path(_Payload.marker),))


def test_best_weights_load_as_tensors_only_and_a_damaged_file_is_one_line(tmp_path):
    good = tmp_path / "good.pt"
    checkpoint.save_weights(torch.nn.Linear(2, 2), good, {"epoch": 3, "val": {"loss": 1.5}})
    assert checkpoint.load_weights(good)["meta"]["epoch"] == 3
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cut\.pt could not be read as a run's weights \(.*\): damaged"):
        checkpoint.load_weights(cut)
    _Payload.marker = str(tmp_path / "ran")
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "meta": _Payload()}, evil)
    with pytest.raises(ValueError, match=r"evil\.pt could not be read"):
        checkpoint.load_weights(evil)
    assert not (tmp_path / "ran").exists()
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="holds no state_dict"):
        checkpoint.load_weights(tmp_path / "list.pt")


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
def test_a_non_finite_validation_loss_stops_the_run_at_its_epoch(tiny_store, tmp_path):
    """Catches NaN validation objects (training ones finite) going unnoticed: NaN is never a best loss, so the
    run trained to its end and failed on a missing best_model.pt, exit 2."""
    import zarr

    from astrom3_hpc.data.store import Store

    store = tmp_path / "nanval.zarr"
    shutil.copytree(tiny_store, store)
    built_before_checksums(store)
    offsets = Store(store).root["lc/offsets"][:]
    values = zarr.open_group(str(store), mode="r+")["lc/values"]
    for row in Store(store).split(42, "full", "val"):
        values[offsets[row]:offsets[row + 1]] = np.nan
    run = tmp_path / "run"
    r = run_job("pretrain", run, store, sets=["train.epochs=3"], check=False)
    assert r.returncode == 5, r.stderr[-3000:]
    assert "training stopped after epoch 0: the validation loss is nan" in r.stderr and "Traceback" not in r.stderr
    assert not (run / "metrics.jsonl").exists() and not (run / "best_model.pt").exists()


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


# What torch's zip writer raises when the disk fills up mid-file: it names neither the disk nor the file.
TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 16896 vs 16784"


def _disk_reports_free(monkeypatch, free: int) -> None:
    import collections

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, (1 << 30) - free, free))


def _torch_save_fills_the_disk(monkeypatch, only: str = "") -> None:
    """torch.save writes part of the file, then fails as it does on ENOSPC (a RuntimeError, no errno)."""
    real = torch.save

    def save(obj, f, *a, **kw):
        if only not in str(f):
            return real(obj, f, *a, **kw)
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04" + bytes(1000))
        raise RuntimeError(TORCH_FULL)

    monkeypatch.setattr(torch, "save", save)


def _reported(fn, capsys) -> tuple[int, list[str]]:
    """fn() as the CLI runs a command: its exit code and the error lines it printed."""
    from astrom3_hpc.core.errors import run_reporting_errors

    capsys.readouterr()
    code = run_reporting_errors("finetune", fn, ())
    return code, capsys.readouterr().err.splitlines()


class _SavingEngine:
    """The engine side of checkpoint.save: DeepSpeed writes its model states into the tag directory."""

    def __init__(self, fail=None):
        self.module = torch.nn.Linear(2, 2)
        self.fail = fail

    def save_checkpoint(self, ckpt_dir, tag, client_state, save_latest):
        (Path(ckpt_dir) / tag).mkdir(parents=True, exist_ok=True)
        states = Path(ckpt_dir) / tag / STATES
        if self.fail is not None:
            states.write_bytes(b"PK\x03\x04" + bytes(1000))  # cut short, as a full disk leaves it
            raise self.fail
        torch.save({"module": self.module.state_dict(), "client": client_state}, states)


@pytest.mark.parametrize("checkpoints", [("step2", "step4"), ()])
def test_a_full_disk_while_writing_the_best_weights_is_one_line(tmp_path, monkeypatch, capsys, checkpoints):
    """Catches torch's `unexpected pos` traceback ending the job (exit 1) where the disk was full: the file, the
    space and the checkpoint a rerun resumes from are said in one line."""
    from astrom3_hpc.core.errors import EXIT_FAILED, DiskFullError

    if checkpoints:
        _fake_checkpoints(tmp_path, checkpoints)
    best = tmp_path / "best_model.pt"
    _torch_save_fills_the_disk(monkeypatch)
    _disk_reports_free(monkeypatch, 0)
    with pytest.raises(DiskFullError):
        checkpoint.save_weights(torch.nn.Linear(2, 2), best, {})
    code, err = _reported(lambda: checkpoint.save_weights(torch.nn.Linear(2, 2), best, {}), capsys)
    rerun = "it resumes from checkpoint step4" if checkpoints else "it runs from the start (no checkpoint yet)"
    assert code == EXIT_FAILED and err == [f"astrom3 finetune: error: {best}: no space left on device (0 bytes "
                                           f"free); free space and rerun the same command: {rerun}"], err
    assert not best.exists() and not list(tmp_path.glob(".best_model.pt.*"))


@pytest.mark.parametrize("failing", [STATES, "rng_rank0.pt", "latest.json"])
def test_a_full_disk_while_writing_a_checkpoint_is_one_line_and_leaves_no_partial_one(tmp_path, monkeypatch,
                                                                                      capsys, failing):
    """Catches the same traceback from DeepSpeed's save (or the RNG states' or latest.json's write), which also
    left a cut-short checkpoints/step6/ behind."""
    from astrom3_hpc.core.errors import EXIT_FAILED

    ckpt = _fake_checkpoints(tmp_path)
    engine = _SavingEngine(RuntimeError(TORCH_FULL) if failing == STATES else None)
    if failing == "rng_rank0.pt":
        _torch_save_fills_the_disk(monkeypatch, only="rng_rank0.pt")
    if failing == "latest.json":
        monkeypatch.setattr(checkpoint, "write_json", lambda path, obj: (_ for _ in ()).throw(
            OSError(28, "No space left on device")))
    _disk_reports_free(monkeypatch, 0)
    code, err = _reported(lambda: checkpoint.save(engine, ckpt, "step6", {"state": {"step": 6}}), capsys)
    file = ckpt / failing if failing == "latest.json" else ckpt / "step6" / failing
    assert code == EXIT_FAILED and err == [
        f"astrom3 finetune: error: {file}: no space left on device (0 bytes free) while writing checkpoint step6 "
        "(removed); free space and rerun the same command: it resumes from checkpoint step4"], err
    # step2 made room before the write (two checkpoints at most on disk, not three); step4, which latest.json
    # names, stays until a new one is complete.
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest.json", "step4"]
    assert checkpoint.latest_tag(ckpt) == "step4"
    monkeypatch.undo()  # space freed: the same save goes through under the same tag
    checkpoint.save(_SavingEngine(), ckpt, "step6", {"state": {"step": 6}})
    assert checkpoint.latest_tag(ckpt) == "step6"
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest.json", "step4", "step6"]


def test_no_inode_for_the_rng_file_removes_the_cut_short_checkpoint_and_kept_ones_are_complete(tmp_path, monkeypatch,
                                                                                                capsys):
    """Catches the RNG file's temporary file failing to be created (no inode left) outside the guard that removes
    a cut-short checkpoint: step6 stayed with the model states alone, and a later save pruned the intact step4
    in its favour, leaving a resume point that could not be resumed."""
    import errno

    from astrom3_hpc.core import atomic

    ckpt = _fake_checkpoints(tmp_path)
    real = atomic.tempfile.mkstemp

    def mkstemp(*a, prefix="", **kw):
        if prefix.startswith(".rng_rank0.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, prefix=prefix, **kw)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    code, err = _reported(lambda: checkpoint.save(_SavingEngine(), ckpt, "step6", {"state": {"step": 6}}), capsys)
    assert code == 1 and len(err) == 1 and "while writing checkpoint step6 (removed)" in err[0], err
    assert "it resumes from checkpoint step4" in err[0]
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest.json", "step4"]
    monkeypatch.undo()
    (ckpt / "step5").mkdir()  # what a job killed in the middle of a save leaves: model states, no RNG file
    torch.save({"module": {}}, ckpt / "step5" / STATES)
    checkpoint.save(_SavingEngine(), ckpt, "step8", {"state": {"step": 8}})
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest.json", "step4", "step8"]


def test_a_failed_write_on_a_disk_with_room_keeps_its_own_error(tmp_path, monkeypatch):
    """Only evidence says "disk full": another failure of the same write stays itself (the partial checkpoint is
    removed all the same)."""
    ckpt = _fake_checkpoints(tmp_path)
    _disk_reports_free(monkeypatch, 50 << 30)  # the probe write that follows goes through on the real disk
    with pytest.raises(RuntimeError, match="unexpected pos"):
        checkpoint.save(_SavingEngine(RuntimeError(TORCH_FULL)), ckpt, "step6", {"state": {}})
    assert not (ckpt / "step6").exists() and checkpoint.latest_tag(ckpt) == "step4"
    _torch_save_fills_the_disk(monkeypatch)
    with pytest.raises(RuntimeError, match="unexpected pos"):
        checkpoint.save_weights(torch.nn.Linear(2, 2), tmp_path / "best_model.pt", {})


def test_a_full_quota_or_an_errno_says_so_whatever_the_free_space(tmp_path, monkeypatch):
    """A quota is not the file system's free space: ENOSPC or EDQUOT in the error's chain, or a probe write that
    fails with one, is the evidence then."""
    import errno
    import types

    from astrom3_hpc.core import errors

    ckpt = _fake_checkpoints(tmp_path)
    _disk_reports_free(monkeypatch, 50 << 30)
    with pytest.raises(errors.DiskFullError, match=r"step6/mp_rank_00_model_states.pt: no space left on device "
                                                   r"\(53687091200 bytes free\) while writing checkpoint step6"):
        checkpoint.save(_SavingEngine(OSError(errno.ENOSPC, "No space left on device")), ckpt, "step6", {})
    assert not (ckpt / "step6").exists()

    def quota_full(**kw):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    _torch_save_fills_the_disk(monkeypatch)
    monkeypatch.setattr(errors, "tempfile", types.SimpleNamespace(mkstemp=quota_full))
    quota = r"best_model.pt: disk quota exceeded \(of bytes or of files: .*\); free space"
    with pytest.raises(errors.DiskFullError, match=quota) as e:
        checkpoint.save_weights(torch.nn.Linear(2, 2), tmp_path / "best_model.pt", {})
    assert e.value.errno == errno.EDQUOT and isinstance(e.value.__cause__, RuntimeError)


def test_a_file_system_out_of_inodes_says_so_rather_than_quoting_its_free_bytes(tmp_path, monkeypatch):
    """Catches "no space left on device (118087680 bytes free)" for a file system with bytes to spare and no
    file entries left: the user went looking for bytes."""
    import errno
    import types

    from astrom3_hpc.core import errors

    def statvfs(inodes: int):  # shutil.disk_usage reads the same call
        return lambda d: types.SimpleNamespace(f_files=1000, f_favail=inodes, f_frsize=4096, f_blocks=1 << 20,
                                               f_bfree=1 << 19, f_bavail=1 << 19)

    monkeypatch.setattr(errors.os, "statvfs", statvfs(0))
    code, why = errors.no_space(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert code == errno.ENOSPC and why.startswith("no free inodes (file entries) left on the file system, though ")
    monkeypatch.setattr(errors.os, "statvfs", statvfs(5))
    assert errors.no_space(OSError(errno.ENOSPC, "No space left on device"), tmp_path)[1].startswith(
        "no space left on device (")
