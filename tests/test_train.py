"""Real training jobs: DeepSpeed engines on CPU/gloo, started by torchrun, mpiexec or as one process.

Exact resume (bitwise on CPU in deterministic mode), preemption by a real SIGUSR1, fine-tuning from scratch
and from a pretraining run, and the refusal of a pretraining run of another split seed.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dist_helpers import child_env, free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FAST = ["train.epochs=2", "train.max_steps_per_epoch=4", "train.log_every_steps=1"]


def _cmd(kind: str, run_dir: Path, store: Path, world: int, launcher: str, sets=(), extra=()) -> list[str]:
    job = str(ROOT / "jobs" / f"{kind}.py")
    args = ["--config", str(ROOT / "configs" / "test.yaml"), "--run-dir", str(run_dir), *extra,
            "--set", f"data.store={store}", *FAST, *sets]
    if world == 1 and launcher == "single":
        return [sys.executable, job, *args]
    if launcher == "torchrun":
        return [str(BIN / "torchrun"), "--nproc_per_node", str(world), "--master_port", str(free_port()),
                job, *args]
    if launcher == "mpiexec":
        return ["mpiexec", "-n", str(world), sys.executable, job, *args]
    raise ValueError(launcher)


def run_job(kind, run_dir, store, world=1, launcher="single", sets=(), extra=(), timeout=420, check=True):
    r = subprocess.run(_cmd(kind, run_dir, store, world, launcher, sets, extra), env=child_env(),
                       capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and r.returncode != 0:
        raise AssertionError(f"{kind} exited {r.returncode}\n{r.stderr[-4000:]}")
    return r


def steps(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]


def epochs(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("seconds")
    return rows


def weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "best_model.pt", weights_only=False)["state_dict"]


def final_module(run_dir: Path) -> dict:
    tag = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["tag"]
    return torch.load(run_dir / "checkpoints" / tag / "mp_rank_00_model_states.pt", weights_only=False)["module"]


@pytest.mark.timeout(900)
def test_two_rank_pretraining_writes_a_complete_run_dir(pretrained_2rank):
    run = pretrained_2rank
    m = json.loads((run / "metrics.json").read_text())
    assert m["kind"] == "pretrain" and m["world_size"] == 2 and m["steps"] == 8
    info = json.loads((run / "run.json").read_text())
    assert info["launcher"] == "torchrun"
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 2 and cfg["model"]["preset"] == "paper"  # fully resolved
    rows = epochs(run)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert {"val_loss", "val_top1_photo_spectra", "val_top1_photo_meta", "val_top1_spectra_meta"} <= set(rows[0])
    assert [s["step"] for s in steps(run)] == list(range(1, 9))
    ev = m["embedding_eval"]
    for k in ("centroid_photo", "knn1_spectra", "knn1_average"):
        assert 0.0 <= ev[k] <= 1.0


@pytest.mark.timeout(600)
def test_evaluate_embeddings_takes_a_batch_size(pretrained_2rank, tmp_path):
    """The embedding pass's batch is a memory knob: a run whose recorded batch exceeds the store's train split
    fails with a message naming the store and the fix; --batch-size then evaluates every object."""
    import shutil

    import yaml

    run = tmp_path / "run"
    shutil.copytree(pretrained_2rank, run)
    exe = str(Path(sys.executable).parent / "astrom3")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["train"]["batch_size"] = 4096  # as imported weights recorded with a large batch would have
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run([exe, "evaluate-embeddings", str(run)], env=child_env(), capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode != 0 and "fewer objects than one global batch (4096)" in r.stderr, r.stderr[-3000:]
    r = subprocess.run([exe, "evaluate-embeddings", str(run), "--batch-size", "16"], env=child_env(),
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    want = json.loads((pretrained_2rank / "metrics.json").read_text())["embedding_eval"]
    got = json.loads((run / "embedding_eval.json").read_text())
    # The run's own numbers (2 ranks, its batch), whatever the batch and world size: the paper preset's key sampler
    # is re-seeded per batch. Unseeded, it continued the random stream, and the command disagreed with the run.
    assert got == want


@pytest.mark.timeout(600)
def test_evaluate_embeddings_reproduces_a_bf16_run(tiny_store, tmp_path):
    """Catches the run's own embedding evaluation running under bf16 autocast while the command ran in fp32: a
    kNN-1 accuracy moved (0.512 against 0.537) and the command overwrote the run's embedding_eval.json with it."""
    run = tmp_path / "bf16"
    run_job("pretrain", run, tiny_store, sets=["train.precision=bf16", "train.epochs=1", "train.max_steps_per_epoch=2"])
    want = json.loads((run / "metrics.json").read_text())["embedding_eval"]
    r = subprocess.run([str(Path(sys.executable).parent / "astrom3"), "evaluate-embeddings", str(run)],
                       env=child_env(), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / "embedding_eval.json").read_text()) == want


@pytest.mark.timeout(600)
def test_evaluate_embeddings_refuses_another_store_than_the_weights(pretrained_2rank, tmp_path):
    """Catches evaluate-embeddings scoring whatever store config.yaml names (an older run dir's relative path read
    from another directory, a store rebuilt in place) and overwriting the run's embedding_eval.json with it."""
    import shutil

    import yaml

    from conftest import build_synthetic_store

    run = tmp_path / "run"
    shutil.copytree(pretrained_2rank, run)
    other = build_synthetic_store(tmp_path / "other.zarr", seed=1)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["store"] = str(other)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    before = (run / "embedding_eval.json").read_bytes()
    r = subprocess.run([str(Path(sys.executable).parent / "astrom3"), "evaluate-embeddings", str(run)],
                       env=child_env(), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 2 and "was trained on another store than" in r.stderr, r.stderr[-3000:]
    assert "built from different sources" in r.stderr and "Traceback" not in r.stderr
    assert (run / "embedding_eval.json").read_bytes() == before


@pytest.mark.timeout(900)
def test_resume_after_stop_is_exact(pretrained_2rank, tiny_store, tmp_path):
    run = tmp_path / "resumed"
    r = run_job("pretrain", run, tiny_store, world=2, launcher="torchrun", extra=["--stop-after-steps", "5"],
                check=False)
    # torchrun reports any non-zero child as its own failure (exit 1) and names the child's code.
    assert r.returncode == 1 and "exitcode  : 75" in r.stderr, r.stderr[-3000:]
    assert not (run / "metrics.json").exists()
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 5
    run_job("pretrain", run, tiny_store, world=2, launcher="torchrun")
    assert steps(run) == steps(pretrained_2rank)  # same losses, bit for bit
    assert epochs(run) == epochs(pretrained_2rank)
    a, b = final_module(run), final_module(pretrained_2rank)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.timeout(600)
def test_resume_restores_the_schedule_and_early_stopping_and_drops_rows_past_the_checkpoint(tiny_store, tmp_path):
    """With a learning rate too small to move fp32 weights, every epoch's validation loss equals epoch 0's: with
    patience 1 the run stops after epoch 1, its plateau count at 1. A resume that forgot the early-stopping or
    plateau state took epoch 1 for an improvement (best_model.pt replaced by a worse epoch, the run going on),
    and one that kept the rows a killed attempt wrote past its checkpoint logged that epoch twice."""
    run = tmp_path / "run"
    sets = ["optim.lr=1e-12", "optim.warmup_epochs=0", "train.epochs=4", "train.early_stop_patience=1",
            "train.max_steps_per_epoch=2"]
    r = run_job("pretrain", run, tiny_store, sets=sets, extra=["--stop-after-steps", "3"], check=False)
    assert r.returncode == 75, r.stderr[-3000:]
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["epoch"] == 1
    first = epochs(run)
    assert [e["epoch"] for e in first] == [0]
    # What an attempt killed after that checkpoint leaves behind: its next step and epoch rows.
    with open(run / "steps.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "epoch": 1, "loss": 1.0, "lr": 1e-12}) + "\n")
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({**first[0], "epoch": 1, "step": 4, "val_loss": 0.5, "best": True, "seconds": 1}) + "\n")
    run_job("pretrain", run, tiny_store, sets=sets)
    rows = epochs(run)
    assert [(e["epoch"], e["best"]) for e in rows] == [(0, True), (1, False)]
    assert rows[1]["val_loss"] == rows[0]["val_loss"]
    assert [s["step"] for s in steps(run)] == [1, 2, 3, 4]
    assert json.loads((run / "metrics.json").read_text())["best_val"]["epoch"] == 0
    tag = json.loads((run / "checkpoints" / "latest.json").read_text())["tag"]
    client = torch.load(run / "checkpoints" / tag / "mp_rank_00_model_states.pt", weights_only=False)
    assert (client["early"]["bad_epochs"], client["early"]["best_epoch"]) == (1, 0)
    assert client["schedule"]["bad_epochs"] == 1 and client["schedule"]["best"] == rows[0]["val_loss"]


@pytest.mark.timeout(900)
def test_dataloader_workers_give_the_same_training_run(pretrained_2rank, tiny_store, tmp_path):
    """Persistent workers filling shared batch slots, on each of 2 ranks; every epoch stops after 4 steps, so
    each one abandons a partly consumed worker epoch. Losses and weights equal the in-process loader's."""
    run = tmp_path / "workers"
    run_job("pretrain", run, tiny_store, world=2, launcher="torchrun", sets=["data.num_workers=2"])
    assert steps(run) == steps(pretrained_2rank)
    a, b = final_module(run), final_module(pretrained_2rank)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.mpi
@pytest.mark.timeout(600)
def test_mpiexec_launch(tiny_store, tmp_path):
    run = tmp_path / "mpi"
    run_job("pretrain", run, tiny_store, world=2, launcher="mpiexec",
            sets=["train.epochs=1", "train.max_steps_per_epoch=2"])
    assert json.loads((run / "run.json").read_text())["launcher"] == "mpi"
    assert json.loads((run / "metrics.json").read_text())["world_size"] == 2


@pytest.mark.timeout(600)
def test_zero2_bf16_two_ranks(tiny_store, tmp_path):
    run = tmp_path / "z2"
    run_job("pretrain", run, tiny_store, world=2, launcher="torchrun",
            sets=["train.epochs=1", "train.max_steps_per_epoch=3", "train.zero_stage=2", "train.precision=bf16",
                  "train.deterministic=false"])
    losses = [s["loss"] for s in steps(run)]
    assert len(losses) == 3 and all(0 < x < 1e4 for x in losses)
    # ZeRO-2 itself, not a stage silently dropped (stage 0 passes the lines above): Adam moments sharded per rank.
    tag = json.loads((run / "checkpoints" / "latest.json").read_text())["tag"]
    assert sorted(p.name for p in (run / "checkpoints" / tag).glob("zero_pp_rank_*_optim_states.pt")) == [
        f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(2)]


def zero2_bf16_probe(store: str, run_dir: str) -> dict:
    """One rank of a 2-rank ZeRO-2 + bf16 pretraining set up as the job sets it up; one real training step."""
    from torch import nn

    from astrom3_hpc.core.config import load_config
    from astrom3_hpc.train.pretrain import Pretrainer

    cfg = load_config(ROOT / "configs" / "test.yaml", [f"data.store={store}", "train.zero_stage=2",
                                                         "train.precision=bf16", "train.deterministic=false"])
    t = Pretrainer(cfg, run_dir)
    t.setup_distributed()
    t.setup_data()
    t.setup_engine()
    linear_out = []
    for name, mod in t.model.named_modules():
        if isinstance(mod, nn.Linear):
            mod.register_forward_hook(lambda m, i, o, name=name: linear_out.append((name, o.dtype)))
    grads_at_step = []
    engine_step = t.engine.step

    def step(*a, **kw):  # what each rank still holds as .grad when the optimizer step starts
        grads_at_step.append(sum(p.numel() for p in t.model.parameters() if p.grad is not None))
        return engine_step(*a, **kw)

    t.engine.step = step
    t.train_step(next(iter(t.train_batches.iter_epoch(0))))
    opt = getattr(t.optimizer, "optimizer", t.optimizer)  # the client Adam inside DeepSpeed's wrapper
    sd = t.optimizer.state_dict()
    return {"n_params": sum(p.numel() for p in t.model.parameters()),
            "n_adam_state": sum(v.numel() for st in opt.state.values() for k, v in st.items() if k == "exp_avg"),
            "zero_stage": int(sd["zero_stage"]), "partition_count": list(sd["partition_count"]),
            "grads_at_step": grads_at_step, "linear_out": linear_out}


@pytest.mark.timeout(600)
def test_zero2_partitions_optimizer_state_and_gradients_and_computes_in_bf16(tiny_store, tmp_path):
    """ZeRO-2 at world 2: each rank's Adam state covers half the parameters, gradients are not kept whole on
    any rank, and the encoders' matmuls run in bf16.

    Catches: zero_stage not reaching DeepSpeed (stage 0: every rank holds full Adam state), stage 1 instead of
    2 (full gradients held on every rank), and precision=bf16 ignored (float32 matmuls). The bf16 check looks
    only at what the forward computed, so it holds for any mixed-precision scheme (bf16 weights, autocast).
    """
    from dist_helpers import run_distributed

    per_rank = run_distributed(zero2_bf16_probe, 2, args=(str(tiny_store), str(tmp_path / "run")), init=False,
                               timeout=400)
    n = per_rank[0]["n_params"]
    for r in per_rank:
        assert r["zero_stage"] == 2 and r["partition_count"] == [2]
        # DeepSpeed pads the flat group to a multiple of the world size (and an alignment of a few elements).
        assert n / 2 <= r["n_adam_state"] <= n / 2 + 64, (r["n_adam_state"], n)
        assert r["grads_at_step"] == [0]  # reduced into the rank's partition and freed during backward
        enc = [dt for name, dt in r["linear_out"] if name.startswith("encoders.")]
        assert len(enc) >= 4 and all(dt == torch.bfloat16 for dt in enc), r["linear_out"]
    assert sum(r["n_adam_state"] for r in per_rank) >= n


@pytest.mark.timeout(600)
def test_sigusr1_checkpoints_exits_75_and_resumes(tiny_store, tmp_path):
    run = tmp_path / "sig"
    cmd = _cmd("pretrain", run, tiny_store, 1, "single", sets=["train.epochs=3", "train.max_steps_per_epoch=6"])
    p = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if (run / "steps.jsonl").exists() and len((run / "steps.jsonl").read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGUSR1)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 75, err[-3000:]
    stopped_at = json.loads((run / "checkpoints" / "latest.json").read_text())["step"]
    assert stopped_at >= 2 and not (run / "metrics.json").exists()
    run_job("pretrain", run, tiny_store, sets=["train.epochs=3", "train.max_steps_per_epoch=6"])
    assert [s["step"] for s in steps(run)] == list(range(1, 19))
    assert json.loads((run / "metrics.json").read_text())["steps"] == 18


@pytest.mark.timeout(600)
def test_a_resume_keeps_its_checkpoint_intact_and_puts_back_the_best_weights_it_kept(tiny_store, tmp_path):
    """Two ways a resume could leave the wrong files behind.
    - Stopped on an epoch's last batch, a run resumes with no step left before its validation and end-of-epoch save:
      that save fell on the same step, and DeepSpeed rewrote the files latest.json named in place (a job killed
      during that write would have had no intact checkpoint). Now it goes to a tag of its own.
    - best_model.pt is written at every improvement, checkpoints only every train.checkpoint_every_epochs: an
      attempt that died between the two left best weights the resumed run's early-stopping state knows nothing of
      (here: a later attempt's file, made by hand). The checkpoint keeps its own (a hard link), and a resume puts
      it back before anything else."""
    run = tmp_path / "edge"
    sets = ["train.epochs=2", "train.max_steps_per_epoch=3"]
    r = run_job("pretrain", run, tiny_store, sets=sets, extra=["--stop-after-steps", "6"], check=False)
    assert r.returncode == 75, r.stderr[-3000:]
    latest = run / "checkpoints" / "latest.json"
    assert json.loads(latest.read_text()) == {"tag": "step6", "step": 6, "epoch": 1, "batch_in_epoch": 3}
    stopped = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
               for p in (run / "checkpoints" / "step6").iterdir()}
    best = run / "best_model.pt"
    assert best.samefile(run / "checkpoints" / "step6" / "best_model.pt")
    good = torch.load(best, weights_only=False)
    assert good["meta"]["epoch"] == 0
    later = {"state_dict": {k: v + 1 for k, v in good["state_dict"].items()}, "meta": {**good["meta"], "epoch": 1}}
    best.unlink()
    torch.save(later, best)  # what an attempt that improved at epoch 1 and then died would have left
    r = run_job("pretrain", run, tiny_store, sets=sets)
    assert "the best weights of step6 put back" in r.stderr, r.stderr[-3000:]
    assert json.loads(latest.read_text())["tag"] == "step6.1" and (run / "metrics.json").exists()
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in (run / "checkpoints" / "step6").iterdir()} == stopped
    # The kept weights: epoch 0's, or epoch 1's if the replayed validation improved on them; never the stray file.
    kept = torch.load(best, weights_only=False)
    assert not all(torch.equal(kept["state_dict"][k], v) for k, v in later["state_dict"].items())
    if kept["meta"]["epoch"] == 0:
        assert all(torch.equal(kept["state_dict"][k], v) for k, v in good["state_dict"].items())


@pytest.mark.timeout(600)
def test_two_ranks_classify_a_split_of_one_object(tmp_path):
    """A split of fewer objects than ranks (here the one object of a class training never saw) leaves a rank an
    empty batch, which the light-curve encoders cannot run on: the fine-tune failed after its training, and every
    rerun resumed into the same failure, so the run never finished. Ranks with nothing to classify now skip it."""
    from conftest import build_synthetic_store

    from astrom3_hpc.data.store import Store

    store = build_synthetic_store(tmp_path / "u.zarr", n=300, unseen_fraction=0.004)
    assert len(Store(store).unlabelled_rows()) == 1
    run = tmp_path / "ft"
    run_job("finetune", run, store, world=2, launcher="torchrun", sets=["train.epochs=1"],
            extra=["--mode", "photo", "--init", "scratch"])
    m = json.loads((run / "metrics.json").read_text())
    assert m["unlabelled"]["n"] == 1 and sum(m["unlabelled"]["predicted"].values()) == 1
    assert len((run / "predictions_unlabelled.csv").read_text().splitlines()) == 2
    assert m["test"]["n"] == len(Store(store).split(42, "full", "test"))


@pytest.mark.timeout(900)
def test_finetune_from_clip_and_scratch_report_both_test_sets(pretrained_2rank, tiny_store, tmp_path):
    for init in ("scratch", str(pretrained_2rank)):
        run = tmp_path / ("ft-" + ("scratch" if init == "scratch" else "clip"))
        run_job("finetune", run, tiny_store, extra=["--mode", "photo", "--subset", "sub50", "--seed", "42",
                                                     "--init", init])
        m = json.loads((run / "metrics.json").read_text())
        assert m["init"] == ("scratch" if init == "scratch" else "clip") and m["subset"] == "sub50"
        assert m["test"]["n"] < m["test_full"]["n"]  # the sub-X test set and the full one
        for rep in (m["test"], m["test_full"]):
            assert 0 <= rep["accuracy"] <= 1 and len(rep["confusion"]) == 10
            assert sum(map(sum, rep["confusion"])) == rep["n"]
        assert (run / "confusion_test.png").stat().st_size > 1000
        assert (run / "confusion_test_full.png").exists()
        # One prediction line per object of each test set (the sub-X one and the full one) and of validation.
        for name, key in (("predictions.csv", "test"), ("predictions_test_full.csv", "test_full"),
                          ("predictions_val.csv", "val")):
            assert len((run / name).read_text().splitlines()) == m[key]["n"] + 1
    # `astrom3 predict` with the paper preset, which samples attention keys at evaluation: an object's class
    # probabilities do not depend on the batch it lands in. Equal up to float rounding, not to the digit: on some
    # CPUs a batch of 7 and one of 64 take matmul kernels that round differently (6th digit), where keys drawn
    # per batch would move them by far more.
    from astrom3_hpc.cli import main

    tables = []
    for bs in ("7", "64"):
        assert main(["predict", str(run), "--store", str(tiny_store), "--out", str(tmp_path / f"pred{bs}"),
                     "--batch-size", bs]) == 0
        with open(tmp_path / f"pred{bs}" / "predictions.csv", newline="") as f:
            tables.append(list(csv.reader(f)))
    a, b = tables
    assert len(a) == len(b) > m["test_full"]["n"] + 1 and a[0] == b[0]
    assert [r[:4] for r in a] == [r[:4] for r in b]  # rows, ids, true and predicted classes
    np.testing.assert_allclose(np.array([r[4:] for r in a[1:]], float), np.array([r[4:] for r in b[1:]], float),
                               rtol=1e-4, atol=1e-6)
    # Its checkpoints deleted (to free disk), the finished run is not trained again under its old metrics.json.
    shutil.rmtree(run / "checkpoints")
    best = (run / "best_model.pt").read_bytes()
    r = run_job("finetune", run, tiny_store, extra=["--mode", "photo", "--subset", "sub50", "--seed", "42",
                                                     "--init", str(pretrained_2rank)], check=False)
    assert r.returncode == 6 and "holds a finished run (metrics.json) and no checkpoint" in r.stderr, r.stderr[-2000:]
    assert (run / "best_model.pt").read_bytes() == best
    (run / "metrics.json").write_text("{")  # truncated: "its results stand" would be said of nothing
    r = run_job("finetune", run, tiny_store, extra=["--mode", "photo", "--subset", "sub50", "--seed", "42",
                                                     "--init", str(pretrained_2rank)], check=False)
    assert r.returncode == 6 and "holds a damaged metrics.json (metrics.json does not parse" in r.stderr
    assert "move the run dir aside, or use a new --run-dir" in r.stderr and "results stand" not in r.stderr


@pytest.mark.timeout(600)
def test_finetune_refuses_a_pretraining_run_of_another_seed(pretrained_2rank, tiny_store, tmp_path):
    run = tmp_path / "leak"
    r = run_job("finetune", run, tiny_store, extra=["--mode", "photo", "--seed", "0", "--init",
                                                     str(pretrained_2rank)], check=False)
    assert r.returncode == 2
    assert "split seed 42" in r.stderr and "seed 0" in r.stderr and "test leak" in r.stderr
    assert not (run / "metrics.json").exists()
    # A pretraining that has not finished (stopped, preempted, failed) is not an encoder to fine-tune from: its
    # best weights were taken, and the "clip" result measured a pretraining stopped anywhere.
    unfinished = tmp_path / "unfinished"
    shutil.copytree(pretrained_2rank, unfinished)
    (unfinished / "metrics.json").unlink()
    r = run_job("finetune", run, tiny_store, extra=["--mode", "photo", "--init", str(unfinished)], check=False)
    assert r.returncode == 2 and f"pretraining run {unfinished} has not finished" in r.stderr, r.stderr[-2000:]
