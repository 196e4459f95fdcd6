"""The DeepSpeed engine, built from the typed config.

A client `torch.optim.Adam` (the paper's optimizer, L2 weight decay) keeps DeepSpeed from JIT-compiling
FusedAdam on CPU (on CUDA it is torch's fused kernel); learning rates are set by `LRSchedule` on the engine's
optimizer param groups, so the schedule's state travels in our checkpoints rather than in DeepSpeed's.

``train.precision: bf16`` is autocast mixed precision (`autocast`): parameters, optimizer state and gradients
stay fp32 (so DeepSpeed's data-parallel gradient all-reduce and ZeRO's reduce-scatter run in fp32, and
``best_model.pt`` holds the fp32 weights), matmuls and convolutions run in bf16 inside the forward. What must
not lose bits stays fp32: the light-curve input embedding (time in [0, 1] over years would keep only 2^-8 of the
span), the logit-scale temperatures and the contrastive loss with its gather (forward and backward), which the
trainers compute outside the autocast region. DeepSpeed's own ``bf16`` mode is not used: it would cast the
whole module, inputs and temperatures included, and all-reduce gradients in bf16.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from ..core.config import ConfigError, RunConfig
from ..core.interpreter import interpreter_first
from ..core.processes import allotted_cores
from ..distributed.env import slurm_tasks_on_node
from ..model.members import each_member

def deepspeed_environment() -> None:
    """Before DeepSpeed is imported, in a process that builds an engine; not at import of this module, which
    inference (`embed`, `predict`, a notebook) imports too and whose later subprocesses would inherit the PATH."""
    # DeepSpeed JIT-compiles a shared-memory comm op on first init; keep its cache with the venv so it is warmed
    # once per install (see .ci/setup.sh) rather than once per home directory.
    if "TORCH_EXTENSIONS_DIR" not in os.environ:
        os.environ["TORCH_EXTENSIONS_DIR"] = str(extensions_dir())
    # That cache is tied to the ninja found on PATH: `.venv/bin/python -m pytest` (CI, venv not activated) found
    # the system ninja and rebuilt the op (42 s on 2 cores), and the next job rebuilt it back. As the job scripts
    # do:
    os.environ["PATH"] = interpreter_first(os.environ.get("PATH", ""))
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def extensions_dir() -> Path:
    """The venv's op cache where this user can use it, else a per-user one ($XDG_CACHE_HOME or ~/.cache, under
    astrom3/): a site-wide or a colleague's install failed every training job with a PermissionError on the lock
    torch creates in the op's directory, even to load an op built there. ValueError where neither is usable."""
    venv = Path(sys.prefix) / "torch_extensions"
    if _usable(venv):
        return venv
    own = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "astrom3" / "torch_extensions"
    if not _usable(own):
        raise ValueError(f"neither {venv} nor {own} is writable by this user, and DeepSpeed's op needs one (a lock "
                         f"file, a first build): set TORCH_EXTENSIONS_DIR to a directory you can write")
    logging.getLogger("astrom3").info("%s is not writable by this user: DeepSpeed's op is built once into %s and "
                                      "loaded from there (TORCH_EXTENSIONS_DIR chooses another)", venv, own)
    return own


def _usable(cache: Path) -> bool:
    """Whether torch can load its ops from `cache` and build missing ones there: a lock file in each op's
    directory, and `cache` itself writable or created (an unwritable one holding built ops serves them)."""
    try:
        if not cache.exists():
            return os.access(next(p for p in cache.parents if p.exists()), os.W_OK | os.X_OK)
        ops = [p for p in cache.iterdir() if p.is_dir()]
    except OSError:
        return False
    return (bool(ops) or os.access(cache, os.W_OK | os.X_OK)) and all(os.access(p, os.W_OK | os.X_OK) for p in ops)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(on: bool) -> None:
    # Off as well as on: a process-wide switch, and a job with train.deterministic false after one with it true
    # (a notebook, the debug executor's sweep, the test suite) ran deterministic kernels it had not asked for.
    torch.use_deterministic_algorithms(on, warn_only=False)
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False


def configure_cuda(cfg: RunConfig) -> None:
    """TF32 matmuls/convolutions and cuDNN autotuning on CUDA (train.tf32, train.cudnn_benchmark); no-op on CPU.
    Deterministic runs keep cuDNN's autotuner off (it may pick a different algorithm after a resume)."""
    if not torch.cuda.is_available():
        return
    t = cfg.train
    torch.backends.cuda.matmul.allow_tf32 = t.tf32
    torch.backends.cudnn.allow_tf32 = t.tf32
    torch.backends.cudnn.benchmark = t.cudnn_benchmark and not t.deterministic


def autocast(cfg: RunConfig, device: torch.device):
    """The forward's mixed-precision region: bf16 autocast for train.precision bf16, else a no-op."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")


def deepspeed_args(device_index: int | None):
    """What deepspeed.initialize gets as `args`: the CUDA device index chosen by astrom3_hpc.distributed.device, which
    DeepSpeed then uses instead of LOCAL_RANK (an invalid ordinal with one visible GPU per task)."""
    from types import SimpleNamespace

    return None if device_index is None else SimpleNamespace(device_rank=device_index)


def ds_config(cfg: RunConfig, world_size: int, micro_batch: int | None = None) -> dict:
    t = cfg.train
    if t.batch_size % world_size:
        # A ConfigError: every rank finds it alike, so rank 0 alone prints it (distributed/abort.py).
        raise ConfigError(f"train.batch_size {t.batch_size} must be divisible by the world size {world_size}")
    micro = micro_batch or t.batch_size // world_size
    return {
        "train_batch_size": micro * world_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": 1,
        # ZeRO stage 0 clips in `clip_gradients` (sync-free); ZeRO's partitioned gradients only DeepSpeed can.
        "gradient_clipping": cfg.optim.grad_clip if t.zero_stage > 0 else 0.0,
        "zero_optimization": {"stage": t.zero_stage},
        # bf16 is autocast over fp32 parameters (module docstring): DeepSpeed's bf16 mode stays off, and
        # gradients are communicated in fp32.
        "bf16": {"enabled": False},
        "communication_data_type": "fp32",
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def clip_gradients(model: torch.nn.Module, cfg: RunConfig) -> None:
    """`optim.grad_clip` on the all-reduced gradients, between `engine.backward` and `engine.step`.

    With members (model/members.py) each member's gradients are clipped by their own norm. DeepSpeed's own
    clipping (stage 0) builds two tensors from Python numbers on the device every step, each a
    blocking host-to-device copy: the host then waits for the GPU once per step (seen on an H200 as ~70 ms of
    cudaStreamSynchronize per step at batch 2048). torch's clip_grad_norm_ computes the same coefficient,
    max_norm / (norm + 1e-6) capped at 1, on the device. Under ZeRO (stage >= 1) DeepSpeed clips (ds_config).
    """
    if cfg.optim.grad_clip > 0 and cfg.train.zero_stage == 0:
        for part in each_member(model):  # members are clipped each on its own, as if trained alone
            torch.nn.utils.clip_grad_norm_([p for p in part.parameters() if p.grad is not None], cfg.optim.grad_clip,
                                           foreach=True)


def cpu_threads(requested: int, local_world_size: int) -> int:
    """Intra-op threads per rank: `requested`, or (0) the cores allotted to each of the node's ranks."""
    if requested > 0:
        return requested
    return allotted_cores(local_world_size, slurm_tasks_on_node())


def apply_execution(model: torch.nn.Module, cfg: RunConfig, local_world_size: int = 1) -> bool:
    """Threads and kernels of `train` (kernels, threads) for this rank; returns whether Adam should be fused.

    Fused Adam is torch's own one-pass CPU kernel (same update, fp32 rounding differs in the last bits). On
    CUDA both keys are ignored: the stock kernels and thread settings apply.
    """
    from ..model.fast_ops import set_fast_kernels, tune_malloc

    t = cfg.train
    cpu = not torch.cuda.is_available()
    if cpu:
        torch.set_num_threads(cpu_threads(t.threads, local_world_size))
    fast = t.kernels == "fast" and cpu  # CUDA's own dropout and Adam are already single fused kernels
    set_fast_kernels(model, fast)
    if fast:
        tune_malloc()
    return fast


def build_optimizer(model: torch.nn.Module, cfg: RunConfig, fused: bool = False) -> torch.optim.Adam:
    return torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                            weight_decay=cfg.optim.weight_decay, fused=fused or None)


def build_engine(model: torch.nn.Module, cfg: RunConfig, world_size: int, local_world_size: int = 1):
    deepspeed_environment()
    import deepspeed

    if torch.distributed.is_initialized():
        # On CPU it loads its shared-memory op and print()s "... built successfully" on stdout, on every rank of
        # every job (the op was built once, into the venv): to the debug log.
        said = io.StringIO()
        with contextlib.redirect_stdout(said):
            deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())
        if said.getvalue().strip():
            logging.getLogger("astrom3").debug("deepspeed: %s", said.getvalue().strip())
    cuda = torch.cuda.is_available()
    # CPU: the execution keys decide fused Adam; CUDA: fused Adam always (one kernel for all parameters).
    fused = apply_execution(model, cfg, local_world_size) or cuda
    if cfg.train.compile:
        # Per encoder, in place: the parameters, their names and the checkpoints stay those of the eager model.
        for enc in getattr(model, "encoders", {}).values():
            enc.compile(backend=cfg.train.compile_backend)
    opt = build_optimizer(model, cfg, fused=fused)
    index = torch.cuda.current_device() if cuda else None  # set by dist.env.init
    engine, optimizer, _, _ = deepspeed.initialize(args=deepspeed_args(index), model=model, optimizer=opt,
                                                   config=ds_config(cfg, world_size))
    return engine, optimizer


def set_lr(optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


def to_device(batch: dict, device, float_dtype=None) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if float_dtype is not None and v.is_floating_point():
                v = v.to(float_dtype)
        out[k] = v
    return out
