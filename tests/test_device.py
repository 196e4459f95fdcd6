"""The CUDA path's placement rules, proven on CPU (no GPU needed).

- A real 2-rank pretraining job (DeepSpeed, gloo) runs under the strict device checker (tests/device_check.py:
  the CPU plays host and accelerator, collectives accept accelerator tensors only, as NCCL does): training
  steps, a preemption checkpoint, a resume, validations, best weights and the final evaluation.
- The collectives of the validation mean and of the preemption agreement, under the checker.
- Env -> CUDA device index (one GPU per task: every rank on cuda:0, and DeepSpeed told the same).
- RNG states saved on a node with 4 visible GPUs load on a node with 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from device_check import ACCEL, DeviceMixError, StrictDevice
from dist_helpers import run_distributed

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------- the checker itself

def test_checker_rejects_what_cuda_rejects_and_accepts_what_it_accepts():
    with StrictDevice() as chk:
        x = torch.ones(3, device=ACCEL)
        h = torch.ones(3)
        assert x.device == ACCEL and h.device == torch.device("cpu")
        with pytest.raises(DeviceMixError, match="same device"):
            x + h
        with pytest.raises(DeviceMixError, match="stack"):
            torch.stack([x.sum(), torch.tensor(1.0)])
        y = x * torch.tensor(2.0)  # a 0-dim host tensor is a scalar for CUDA too
        z = torch.zeros(3, device=x.device) + y  # follows x
        assert float(z.sum()) == 6.0 and chk.syncs["__float__"] == 1
        with pytest.raises(DeviceMixError, match="numpy"):
            z.numpy()
        assert z.cpu().numpy().sum() == 6.0 and (h.to(ACCEL) + z).sum().item() == 9.0


# ------------------------------------------------------------------------ a training job under the checker

def _checked_job(store: str, run_dir: str, stop_after: int | None, sets: tuple[str, ...] = (),
                      kind: str = "pretrain") -> dict:
    from astrom3_hpc.core.config import load_config
    from astrom3_hpc.train.finetune import Finetuner
    from astrom3_hpc.train.pretrain import Pretrainer

    cfg = load_config(ROOT / "configs" / "test.yaml",
                      [f"data.store={store}", "train.epochs=2", "train.max_steps_per_epoch=3",
                       "train.eval_max_batches=2", "train.log_every_steps=2", *sets])

    class Checked(Pretrainer if kind == "pretrain" else Finetuner):
        def setup_distributed(self):
            super().setup_distributed()
            assert self.device == ACCEL, f"the trainer computes on {self.device}, not compute_device()"

        def build_model(self):
            # DeepSpeed moves the module to its accelerator (here the CPU): the checker's accelerator.
            return chk.tag_module(super().build_model())

        def train_step(self, batch):
            before = sum(chk.syncs.values())
            loss = super().train_step(batch)
            step_syncs.append(sum(chk.syncs.values()) - before)
            return loss

    step_syncs: list[int] = []  # host reads of device tensors inside each training step
    with StrictDevice() as chk:
        code = Checked(cfg, run_dir, stop_after_steps=stop_after).run_job()
    return {"code": code, "syncs": dict(chk.syncs), "comm": sorted({(n, str(d)) for n, d in chk.comm}),
            "autocast_bf16_ops": chk.bf16_outputs, "step_syncs": step_syncs}


@pytest.mark.timeout(600)
def test_two_rank_pretraining_under_the_strict_device_checker(tiny_store, tmp_path):
    run = tmp_path / "run"
    first = run_distributed(_checked_job, 2, args=(str(tiny_store), str(run), 2), timeout=400,
                            init=False)
    assert [r["code"] for r in first] == [75, 75]
    second = run_distributed(_checked_job, 2, args=(str(tiny_store), str(run), None), timeout=400,
                             init=False)
    assert [r["code"] for r in second] == [0, 0]
    # No host sync inside a training step (losses are read at log boundaries).
    assert [r["step_syncs"] for r in first] == [[0, 0]] * 2 and [r["step_syncs"] for r in second] == [[0] * 4] * 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["world_size"] == 2
    assert [json.loads(s)["step"] for s in (run / "steps.jsonl").read_text().splitlines()] == [1, 2, 4, 6]


@pytest.mark.timeout(600)
def test_finetuning_with_class_weights_and_a_teacher_reads_nothing_back_inside_a_step(feat_store, tmp_path):
    """Catches fine-tuning's class weights and distillation teacher kept on the host: each step copied the weights
    to the device and read the batch's object indices back (`index.cpu()`) to look up the teacher, which makes
    the host wait for a GPU in every step."""
    run = tmp_path / "ft"
    sets = ("finetune.mode=photo", "finetune.init=scratch", "finetune.class_weights=balanced",
            "finetune.distill=baseline", "model.preset=periodic", "train.batch_size=16")
    (res,) = run_distributed(_checked_job, 1, args=(str(feat_store), str(run), None, sets, "finetune"),
                             timeout=400, init=False)
    assert res["code"] == 0
    assert res["step_syncs"] and set(res["step_syncs"]) == {0}, res["step_syncs"]


@pytest.mark.timeout(600)
def test_bf16_two_rank_run_communicates_fp32_and_keeps_fp32_weights(tiny_store, tmp_path):
    """bf16 is autocast over fp32 parameters: gradients (DeepSpeed's all-reduce) and the contrastive gather
    travel in fp32, the temperatures and best_model.pt are fp32, and the forward really ran in bf16."""
    run = tmp_path / "bf16"
    res = run_distributed(_checked_job, 2, args=(str(tiny_store), str(run), None,
                                                      ("train.precision=bf16", "train.epochs=1")), timeout=400,
                          init=False)
    assert [r["code"] for r in res] == [0, 0]
    comm = res[0]["comm"]
    assert ("all_reduce", "torch.float32") in comm  # DeepSpeed's gradient all-reduce
    assert any(n.startswith("all_gather") and d == "torch.float32" for n, d in comm)  # the loss's gather
    assert not any(d in ("torch.bfloat16", "torch.float16") for _, d in comm), comm
    best = torch.load(run / "best_model.pt", weights_only=False)["state_dict"]
    assert {v.dtype for v in best.values() if v.is_floating_point()} == {torch.float32}
    tag = json.loads((run / "checkpoints" / "latest.json").read_text())["tag"]
    module = torch.load(run / "checkpoints" / tag / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    scales = {k: v for k, v in module.items() if "log_logit_scales" in k}
    assert scales and all(v.dtype == torch.float32 for v in scales.values())
    assert res[0]["autocast_bf16_ops"] > 0


def test_bf16_autocast_keeps_the_light_curve_embedding_and_temperatures_fp32():
    from astrom3_hpc.core.config import load_config
    from astrom3_hpc.model import build_clip

    cfg = load_config(ROOT / "configs" / "test.yaml")
    model = build_clip(cfg.model).eval()
    seen = {}
    enc = model.encoders["photo"]
    enc.embedding.register_forward_hook(lambda m, i, o: seen.__setitem__("embedding", o.dtype))
    linear = next(m for m in enc.layers[0].modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda m, i, o: seen.__setitem__("layer0", o.dtype))
    lc = torch.rand(2, enc.seq_len, enc.embedding.token_conv.in_channels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.encode("photo", {"lc": lc, "lc_mask": torch.ones(2, enc.seq_len)})
        scales = model.logit_scales()
    assert seen == {"embedding": torch.float32, "layer0": torch.bfloat16}
    assert all(s.dtype == torch.float32 for s in scales.values())


def _collectives_under_checker() -> dict:
    from astrom3_hpc.train.preempt import Preemption
    from astrom3_hpc.distributed.collectives import mean_over_ranks

    with StrictDevice() as chk:
        import torch.distributed as dist

        mean = mean_over_ranks(float(dist.get_rank() + 1), weight=1.0)
        p = Preemption(signals=())
        if dist.get_rank() == 1:
            p.request("test")
        agreed = p.agreed()
    return {"mean": mean, "agreed": agreed, "comm": [(n, str(d)) for n, d in chk.comm]}


@pytest.mark.timeout(300)
def test_validation_mean_and_preemption_agreement_communicate_accelerator_tensors():
    res = run_distributed(_collectives_under_checker, 2, timeout=200)
    for r in res:
        assert r["mean"] == 1.5 and r["agreed"] is True
        assert [n for n, _ in r["comm"]] == ["all_reduce", "all_reduce"]


# -------------------------------------------------------------------------------- env -> device index

ONE_GPU_PER_TASK = {"SLURM_PROCID": "1", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "1",
                    "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_NODEID": "0", "SLURM_STEP_NODELIST": "gpu01",
                    "SLURM_JOB_ID": "77", "CUDA_VISIBLE_DEVICES": "1"}


def _deepspeed_device(args, environ) -> int:
    """DeepSpeed 0.19's rule (engine._set_distributed_vars): args.device_rank if given, else LOCAL_RANK."""
    return args.device_rank if args is not None and hasattr(args, "device_rank") else int(environ["LOCAL_RANK"])


@pytest.mark.parametrize("environ,count,expected", [
    (ONE_GPU_PER_TASK, 1, 0),
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4"}, 4, 3),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}, 1, 0),  # 2 ranks, 1 GPU
    ({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}, 4, 1),
    ({}, 0, None),
])
def test_device_index_and_deepspeed_agree(environ, count, expected):
    from astrom3_hpc.distributed.env import device_index_from_env
    from astrom3_hpc.distributed.env import detect
    from astrom3_hpc.train.engine import deepspeed_args

    assert device_index_from_env(environ, count) == expected
    exported = detect(environ, use_scontrol=False, use_mpi4py=False).as_env()
    if expected is not None:
        assert _deepspeed_device(deepspeed_args(expected), exported) == expected


def test_hand_set_rank_without_local_rank_is_not_taken_as_the_local_rank():
    from astrom3_hpc.distributed.env import detect

    # One host (loopback master): the global rank is the local rank.
    assert detect({"RANK": "1", "WORLD_SIZE": "2"}, use_scontrol=False).local_rank == 1
    # Several hosts: from the launcher's own local id, or from LOCAL_WORLD_SIZE, else a clear error.
    multi = {"RANK": "3", "WORLD_SIZE": "4", "MASTER_ADDR": "node1", "MASTER_PORT": "1234"}
    assert detect({**multi, "LOCAL_WORLD_SIZE": "2"}, use_scontrol=False).local_rank == 1
    assert detect({**multi, "OMPI_COMM_WORLD_LOCAL_RANK": "0"}, use_scontrol=False).local_rank == 0
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        detect(multi, use_scontrol=False)


# ------------------------------------------------------------------------------------------------- RNG

class _FakeCudaRng:
    """torch.cuda's RNG API over `count` visible devices, with its invalid-ordinal failure."""

    def __init__(self, count: int, current: int = 0):
        self.count, self.current = count, current
        self.states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(count)}

    def _check(self, i):
        i = self.current if i in (None, "cuda") else (i.index if isinstance(i, torch.device) else int(i))
        if not 0 <= i < self.count:
            raise RuntimeError(f"CUDA error: invalid device ordinal {i}")
        return i

    def install(self, monkeypatch):
        c = torch.cuda
        monkeypatch.setattr(c, "is_available", lambda: True)
        monkeypatch.setattr(c, "device_count", lambda: self.count)
        monkeypatch.setattr(c, "current_device", lambda: self.current)
        monkeypatch.setattr(c, "get_rng_state", lambda device="cuda": self.states[self._check(device)].clone())
        monkeypatch.setattr(c, "get_rng_state_all", lambda: [self.states[i].clone() for i in range(self.count)])
        monkeypatch.setattr(c, "set_rng_state",
                            lambda s, device="cuda": self.states.__setitem__(self._check(device), s.clone()))

        def set_all(states):
            for i, s in enumerate(states):
                self.states[self._check(i)] = s.clone()
        monkeypatch.setattr(c, "set_rng_state_all", set_all)


def test_rng_state_of_four_visible_gpus_resumes_with_one(monkeypatch):
    from astrom3_hpc.train import checkpoint

    saver = _FakeCudaRng(4, current=2)  # rank with local rank 2 on a 4-GPU node
    saver.install(monkeypatch)
    state = checkpoint.rng_state()
    loader = _FakeCudaRng(1)  # resumed with one GPU per task
    loader.install(monkeypatch)
    checkpoint.set_rng_state(state)
    assert torch.equal(loader.states[0], torch.full((16,), 2, dtype=torch.uint8))  # the device it ran on


def test_the_engine_puts_the_interpreters_ninja_first_on_path():
    """Catches the JIT op cache rebuilt twice per CI run: `.venv/bin/python -m pytest` without the venv activated
    found the system ninja, so DeepSpeed rebuilt its comm op (42 s) and the next venv job rebuilt it back. (Set as
    the engine is built: importing the module changes nothing, tests/test_library_use.py.)"""
    code = "import os; from astrom3_hpc.train.engine import deepspeed_environment as d; d(); print(os.environ['PATH'])"
    r = subprocess.run([sys.executable, "-c", code],
                       env={**os.environ, "PATH": "/usr/local/bin:/usr/bin:/bin"}, capture_output=True, text=True,
                       check=True, cwd=Path(__file__).resolve().parents[1])
    path = r.stdout.strip().split(os.pathsep)
    assert path[0] == str(Path(sys.executable).parent) and path[1:] == ["/usr/local/bin", "/usr/bin", "/bin"]
