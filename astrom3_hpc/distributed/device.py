"""Which device this rank computes on, and where collective tensors must live.

One GPU per task (``srun --gpus-per-task=1``, SLURM binds it through CUDA_VISIBLE_DEVICES) leaves one visible
device whatever the local rank: every rank uses ``cuda:0``. Several visible GPUs shared by the node's ranks
(torchrun, ``--gpus-per-node``): local rank r uses ``cuda:r``; more ranks than GPUs (2 ranks on one GPU in the
GPU check) share them round-robin. `device_index` is that rule, pure so it is tested without a GPU
(`astrom3_hpc.distributed.env.device_index_from_env` applies it to a launcher environment).
DeepSpeed is told the same index (`astrom3_hpc.train.engine` passes it as ``device_rank``); it would otherwise
call ``set_device(LOCAL_RANK)``, an invalid ordinal for local rank >= 1 with one visible GPU.

Collectives take tensors on the backend's device: NCCL only accepts CUDA tensors, gloo only CPU ones
(`comm_device`). Code that builds a tensor only to communicate it asks `comm_device()` for its place.
"""

from __future__ import annotations

import torch


def device_index(local_rank: int, local_world_size: int, device_count: int) -> int | None:
    """The CUDA device index of a rank, or None without visible devices (see the module docstring)."""
    if device_count <= 0:
        return None
    return local_rank % device_count


def compute_device() -> torch.device:
    """This rank's compute device: the current CUDA device when CUDA is usable, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def comm_device(group=None) -> torch.device:
    """Where a tensor must live to be communicated over `group`'s backend (nccl: CUDA; gloo, none: CPU)."""
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized() and tdist.get_backend(group) == "nccl":
        return compute_device()
    return torch.device("cpu")


__all__ = ["device_index", "compute_device", "comm_device"]
