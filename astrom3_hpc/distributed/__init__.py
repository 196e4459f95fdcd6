"""Everything about ranks lives here; model code never asks who it is.

- `env`: `detect()` (which launcher started us, rank/world/master), `init()`, `cleanup()`, `is_main()`,
  `barrier()`, `all_reduce_mean()`, `broadcast_object()`, GLOO_SOCKET_IFNAME selection.
- `gather`: `all_gather_with_grad()` (differentiable batch gather, unequal sizes handled).

`import astrom3_hpc.distributed` does not import torch; `gather` (which does) is loaded on first use.
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
