"""A rendezvous check to run before a long job: every rank joins a group the way training does and all-reduces
(``astrom3 launch check-rendezvous`` under srun/mpiexec/torchrun; slurm/pretrain.sh runs it first).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from ..core.atomic import write_json


def check_rendezvous(out: str | Path | None = None, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Run on every rank (``srun python -m astrom3_hpc.cli launch check-rendezvous``): detect rank and master
    the way the Trainer does (astrom3_hpc.distributed.env.init), join a gloo group, all-reduce, and gather every rank's
    view (host, rank, local rank, master, chosen GLOO_SOCKET_IFNAME and its address). With CUDA the group is
    ``cpu:gloo,cuda:nccl`` and a second all-reduce runs on each rank's GPU over NCCL (its bootstrap on
    NCCL_SOCKET_IFNAME, then its own transport: NVLink/SHM/IB/sockets), so a pass covers the backend the training
    uses; without CUDA only gloo is checked (``nccl_all_reduce_ok`` is None). Writes ``<out>/rank<r>.json``
    when ``out`` is given; returns the gathered list (rank order)."""
    import torch
    import torch.distributed as tdist

    from . import env as denv

    cuda = torch.cuda.is_available()
    e = denv.init(backend="cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timeout, force_group=True)
    ifname = os.environ.get("GLOO_SOCKET_IFNAME")
    addrs = denv.interface_addresses()
    me = {"rank": e.rank, "world_size": e.world_size, "local_rank": e.local_rank,
          "local_world_size": e.local_world_size, "launcher": e.launcher, "master_addr": e.master_addr,
          "master_port": e.master_port, "host": socket.gethostname(), "gloo_ifname": ifname,
          "gloo_addr": addrs.get(ifname or ""),
          **{k.lower(): os.environ[k] for k in ("SLURM_JOB_ID", "SLURM_NODEID", "SLURM_PROCID", "SLURM_LOCALID",
                                                "SLURMD_NODENAME") if k in os.environ}}
    t = torch.tensor([float(e.rank + 1)])
    tdist.all_reduce(t)
    me["all_reduce_ok"] = bool(t.item() == e.world_size * (e.world_size + 1) / 2)
    me["nccl_ifname"], me["nccl_all_reduce_ok"] = os.environ.get("NCCL_SOCKET_IFNAME"), None
    if cuda:
        g = torch.tensor([float(e.rank + 1)], device=torch.device("cuda", torch.cuda.current_device()))
        tdist.all_reduce(g)
        me["nccl_all_reduce_ok"] = bool(g.item() == e.world_size * (e.world_size + 1) / 2)
        me["cuda_device"] = f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
    everyone: list[Any] = [None] * e.world_size
    tdist.all_gather_object(everyone, me)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json(Path(out) / f"rank{e.rank}.json", {**me, "all": everyone})
    denv.cleanup()
    return everyone
