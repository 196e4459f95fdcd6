"""Who a process is in the job, and the collectives the package shares; model code never asks who it is.

- `env`: `detect()` (which launcher started us, rank/world/master), `init()`, `cleanup()`, `is_main()`,
  `barrier()`, `all_reduce_mean()`, `broadcast_object()`, GLOO_SOCKET_IFNAME selection.
- `collectives`: `active()`, `gather_objects()`, `mean_over_ranks()`, `any_rank()`, `barrier()` (each the
  process's own value without a group), for training and the science commands alike.
- `gather`: `all_gather_with_grad()` (differentiable batch gather, unequal sizes handled).
- `device`: which GPU a rank computes on, and where tensors to communicate must live.
- `abort`: a fatal error on one rank ends the whole job. `slurm_hosts`, `network`, `rendezvous_check`: host
  lists, ports and interfaces, and `astrom3 launch check-rendezvous`'s check.

Ranks come from here: `env.detect()`, the variables `env.init()` exports, or the group it creates. Code elsewhere
calls torch.distributed itself only for collectives particular to it (the trainer's packed log-boundary
all-reduce, the loss's column offsets). Ingestion runs under mpiexec with no torch process group: its mpi4py
communicator is `mpi_comm`, and `env.rank_share` splits work among ranks for ingestion and `embed` alike.

`import astrom3_hpc.distributed` does not import torch; `gather` (which does) is loaded on first use of its names,
`collectives` (which does too) where it is imported.
"""

from astrom3_hpc.distributed.env import (  # noqa: F401
    DistEnv, all_reduce_mean, barrier, broadcast_object, cleanup, detect, get_rank, get_world_size,
    gloo_socket_ifname, init, is_initialized, is_main,
)


def __getattr__(name):
    if name in ("all_gather_with_grad", "gather_sizes", "gather_shapes"):
        from astrom3_hpc.distributed import gather
        return getattr(gather, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DistEnv", "detect", "init", "cleanup", "is_initialized", "get_rank", "get_world_size", "is_main",
    "barrier", "all_reduce_mean", "broadcast_object", "gloo_socket_ifname", "all_gather_with_grad",
    "gather_sizes", "gather_shapes",
]
