"""Who am I in the job? One place decides, whichever launcher started the process.

`detect()` reads the environment and returns a `DistEnv`; `init()` exports the standard torch variables
(RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and initialises
`torch.distributed`. Everything else in the package asks this module (or `torch.distributed`, once `init()` made
the group) for ranks, except ingestion under mpiexec (`astrom3_hpc.data.ingest`), which has no torch process group
and asks its own mpi4py communicator.

Launcher precedence (first match wins):

1. ``env`` / ``torchrun``: ``RANK`` and ``WORLD_SIZE`` are set. Explicit variables always win: torchrun and the
   DeepSpeed launcher set them, Submitit's ``TorchDistributedEnvironment().export()`` sets them, and
   ``init()`` itself exports them (so a second ``detect()`` after ``init()`` agrees with the first; init also
   exports ASTROM3_DIST_LAUNCHER so the launcher name survives). torchrun
   inside an ``srun`` step also carries SLURM variables that describe the srun task, not the torchrun worker:
   RANK must win over them. The launcher reads ``torchrun`` when ``TORCHELASTIC_RUN_ID`` is present.
   If MASTER_ADDR/PORT are missing (hand-set RANK/WORLD_SIZE) they are taken from the SLURM step when there
   is one, else 127.0.0.1 and 29500; missing LOCAL_RANK/LOCAL_WORLD_SIZE from the MPI launcher or the step.
2. ``slurm`` (srun direct launch): ``SLURM_PROCID`` plus a step id (``SLURM_STEP_ID``/``SLURM_STEPID``).
   The step id is required because an ``sbatch`` batch script also carries ``SLURM_PROCID=0`` and the job's
   ``SLURM_NTASKS``: a plain ``python train.py`` in a batch script is a single process, not rank 0 of N.
   If MPI variables (``PMI_RANK``/``OMPI_COMM_WORLD_RANK``) are present too, agree with the SLURM ones and
   come without node-local MPI values (which only mpirun/mpiexec set), srun launched us directly with a PMI
   plugin: it stays ``slurm``. World size from ``SLURM_STEP_NUM_TASKS``
   (then ``SLURM_NTASKS``), local rank ``SLURM_LOCALID``, local world size from
   ``SLURM_STEP_TASKS_PER_NODE`` (``2(x3),1`` form) at ``SLURM_NODEID``. Master = first host of
   ``SLURM_STEP_NODELIST`` (then ``SLURM_JOB_NODELIST``/``SLURM_NODELIST``), expanded with
   ``scontrol show hostnames`` when that works, else the pure-Python ``expand_nodelist``. Port:
   ``MASTER_PORT`` if set, else derived from ``SLURM_JOB_ID`` and the step id (``slurm_port``); `init` gives a
   one-rank step a free port instead (no peer has to agree on it).
3. ``mpi`` (mpiexec/mpirun): Open MPI ``OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}`` or MPICH/Hydra
   ``PMI_RANK``/``PMI_SIZE``/``MPI_LOCALRANKID``/``MPI_LOCALNRANKS``. mpiexec inside an allocation lands here
   even though SLURM variables (of the batch step) are present, because they disagree with the MPI ones.
   MASTER_ADDR: the environment's if set; else 127.0.0.1 when all ranks share one host (local world size ==
   world size), else rank 0's address broadcast with mpi4py. MASTER_PORT: the environment's if set, else a
   free port chosen by rank 0 and broadcast with mpi4py. **So for the mpi launcher with world size > 1 and
   MASTER_PORT unset, the first `detect()` is collective**: every rank must call it (the result is cached,
   later calls are local). The torch wheel has no MPI backend: MPI only launches ranks; tensors go through
   gloo/nccl.
4. ``single``: one process, rank 0 of 1.

SLURM host/task lists live in `slurm_hosts`, ports and interfaces in `network`; their public names are
importable from here too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping

import astrom3_hpc.distributed.network as network  # a module object: tests patch network.own_address
from .network import (SINGLE_HOST_ADDR, find_free_port, gloo_socket_ifname, interface_addresses,  # noqa: F401
                      port_is_free, rendezvous_address, route_source_address)
from .slurm_hosts import expand_nodelist, expand_tasks_per_node, first_host, slurm_port  # noqa: F401

DEFAULT_MASTER_PORT = 29500
LAUNCHER_VAR = "ASTROM3_DIST_LAUNCHER"  # exported by init() so later detect() calls report the same launcher


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun" | "env" | "slurm" | "mpi" | "single"

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def as_env(self) -> dict[str, str]:
        """The standard torch variables for this process."""
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


# --------------------------------------------------------------------------------------------------- detect

_MPI_CACHE: dict[tuple, tuple[str, int, int, int]] = {}


def _int(env: Mapping[str, str], *names: str) -> int | None:
    for n in names:
        v = env.get(n)
        if v not in (None, ""):
            return int(v)
    return None


def _slurm_step(env: Mapping[str, str]) -> dict[str, Any] | None:
    """Rank info of an srun step, or None (no step: not SLURM, or an sbatch batch script)."""
    if env.get("SLURM_PROCID") in (None, ""):
        return None
    step_id = env.get("SLURM_STEP_ID", env.get("SLURM_STEPID"))
    if step_id in (None, ""):
        return None
    rank = int(env["SLURM_PROCID"])
    world = _int(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS") or 1
    local_rank = _int(env, "SLURM_LOCALID") or 0
    local_world = slurm_tasks_on_node(env)
    if local_world is None:
        nnodes = _int(env, "SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES") or 1
        local_world = world if nnodes == 1 else max(1, world // nnodes)
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    return dict(rank=rank, world=world, local_rank=local_rank, local_world=local_world, nodelist=nodelist,
                job_id=env.get("SLURM_JOB_ID", env.get("SLURM_JOBID", "0")), step_id=step_id)


def slurm_tasks_on_node(environ: Mapping[str, str] | None = None) -> int | None:
    """Tasks of the SLURM step on this node (the job's, in the batch script): ``SLURM_STEP_TASKS_PER_NODE``, else
    ``SLURM_TASKS_PER_NODE``, at ``SLURM_NODEID``; None outside SLURM or when unreadable."""
    env = os.environ if environ is None else environ
    tpn = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if not tpn:
        return None
    node_id = _int(env, "SLURM_NODEID") or 0
    try:
        counts = expand_tasks_per_node(tpn)
    except ValueError:
        return None
    return counts[node_id] if node_id < len(counts) else None


def rank_share(n: int, block: int, rank: int, size: int) -> tuple[int, int]:
    """Rank `rank`'s share [lo, hi) of `n` items split among `size` ranks in whole blocks of `block` (a store's
    chunk: no two ranks write one chunk file), as even as whole blocks allow."""
    n_blocks = -(-n // block)
    b0, b1 = n_blocks * rank // size, n_blocks * (rank + 1) // size
    return min(b0 * block, n), min(b1 * block, n)


def _mpi_vars(env: Mapping[str, str]) -> dict[str, Any] | None:
    if env.get("OMPI_COMM_WORLD_RANK") not in (None, "") and env.get("OMPI_COMM_WORLD_SIZE") not in (None, ""):
        return dict(rank=int(env["OMPI_COMM_WORLD_RANK"]), world=int(env["OMPI_COMM_WORLD_SIZE"]),
                    local_rank=_int(env, "OMPI_COMM_WORLD_LOCAL_RANK"),
                    local_world=_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE"), flavour="openmpi")
    if env.get("PMI_RANK") not in (None, "") and env.get("PMI_SIZE") not in (None, ""):
        return dict(rank=int(env["PMI_RANK"]), world=int(env["PMI_SIZE"]),
                    local_rank=_int(env, "MPI_LOCALRANKID"), local_world=_int(env, "MPI_LOCALNRANKS"),
                    flavour="mpich")
    return None


def _slurm_master(step: dict[str, Any], env: Mapping[str, str], use_scontrol: bool) -> tuple[str, int]:
    addr = env.get("MASTER_ADDR")
    if not addr:
        addr = first_host(step["nodelist"], use_scontrol) if step["nodelist"] else SINGLE_HOST_ADDR
        if use_scontrol and addr != SINGLE_HOST_ADDR:
            addr = rendezvous_address(addr)
    port = _int(env, "MASTER_PORT") or slurm_port(step["job_id"], step["step_id"])
    return addr, port


def detect(environ: Mapping[str, str] | None = None, *, use_scontrol: bool = True,
           use_mpi4py: bool = True) -> DistEnv:
    """Decide rank/world/master from the launcher's environment (see the module docstring for precedence).

    `environ` defaults to os.environ (tests pass a dict). With the mpi launcher and world size > 1, the first
    call may be collective (mpi4py broadcast of rank 0's port/address; see module docstring); pass
    ``use_mpi4py=False`` to forbid that (then 127.0.0.1 and MASTER_PORT or 29500 are used).
    """
    env = os.environ if environ is None else environ

    # 1. Explicit torch variables.
    if env.get("RANK") not in (None, "") and env.get("WORLD_SIZE") not in (None, ""):
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = _int(env, "LOCAL_RANK")
        local_world = _int(env, "LOCAL_WORLD_SIZE", "LOCAL_SIZE")
        launcher = ("torchrun" if env.get("TORCHELASTIC_RUN_ID")
                    else env.get(LAUNCHER_VAR) or "env")  # init() records the launcher it detected
        step = _slurm_step(env)
        if env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
            addr, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
        elif step is not None and step["nodelist"]:
            addr, port = _slurm_master(step, env, use_scontrol)
        else:
            addr = env.get("MASTER_ADDR") or SINGLE_HOST_ADDR
            port = _int(env, "MASTER_PORT") or DEFAULT_MASTER_PORT
        if local_rank is None:
            local_rank = _hand_set_local_rank(env, rank, world, local_world, addr, step)
        if local_world is None:
            local_world = _hand_set_local_world(env, world, step)
        return _checked(DistEnv(rank, world, local_rank, local_world, addr, port, launcher))

    step = _slurm_step(env)
    mpi = _mpi_vars(env)

    # 2. srun direct launch (possibly with a PMI plugin, in which case the MPI variables agree).
    if step is not None and (mpi is None or _from_srun_pmi(mpi, step)):
        addr, port = _slurm_master(step, env, use_scontrol)
        return _checked(DistEnv(step["rank"], step["world"], step["local_rank"], step["local_world"], addr, port,
                                "slurm"))

    # 3. mpiexec.
    if mpi is not None:
        return _checked(_detect_mpi(mpi, env, use_mpi4py))

    # 4. Single process.
    return DistEnv(0, 1, 0, 1, env.get("MASTER_ADDR") or SINGLE_HOST_ADDR,
                   _int(env, "MASTER_PORT") or DEFAULT_MASTER_PORT, "single")


def _is_loopback(addr: str) -> bool:
    return addr in ("localhost", "::1") or addr.startswith("127.")


def _from_srun_pmi(mpi: dict[str, Any], step: dict[str, Any]) -> bool:
    """The MPI variables are srun's own PMI plugin's (the step's ranks), not those of mpirun/mpiexec started in a
    step. The choice must be the same on every rank of a launch: mpirun's per-node daemons are an srun step of
    their own, whose SLURM_PROCID/SLURM_STEP_NUM_TASKS can match one rank's MPI rank/size by chance (rank 0 went
    `slurm`, rank 1 `mpi` and waited for it in an mpi4py broadcast). Node-local MPI values (OMPI_COMM_WORLD_LOCAL_*,
    MPI_LOCALRANKID/NRANKS) are set before the program starts only by such a launcher's daemons, on all its
    ranks alike, never by srun's plugins: with them the launcher is `mpi`, whatever the ranks say."""
    if mpi["local_rank"] is not None or mpi["local_world"] is not None:
        return False
    return mpi["rank"] == step["rank"] and mpi["world"] == step["world"]


def _hand_set_local_world(env: Mapping[str, str], world: int, step: dict[str, Any] | None) -> int:
    """RANK/WORLD_SIZE without LOCAL_WORLD_SIZE: the MPI launcher's node-local size, else the SLURM step's tasks on
    this node (as for the local rank), where that launcher's world is the hand-set one; else every rank is taken
    to be on this host. Taking the world under a multi-node srun made init() see one host (gloo on loopback at
    the master) and halved the thread counts."""
    mpi = _mpi_vars(env)
    if mpi is not None and mpi["local_world"] is not None and mpi["world"] == world:
        return mpi["local_world"]
    if step is not None and step["world"] == world:
        return step["local_world"]
    return world


def _hand_set_local_rank(env: Mapping[str, str], rank: int, world: int, local_world: int | None, addr: str,
                         step: dict[str, Any] | None) -> int:
    """RANK without LOCAL_RANK: the launcher's own node-local id, else rank mod LOCAL_WORLD_SIZE, else the rank
    itself only when every rank is on this host (loopback master); a multi-host job must say."""
    own = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID")
    if own is None and step is not None:
        own = step["local_rank"]
    if own is not None:
        return own
    if local_world is not None:
        return rank % local_world
    if world == 1 or _is_loopback(addr):
        return rank
    raise ValueError(f"RANK={rank} is set without LOCAL_RANK (or LOCAL_WORLD_SIZE) and the master {addr} is "
                     f"another host: the node-local rank (which GPU to use) is unknown; set LOCAL_RANK")


def _detect_mpi(mpi: dict[str, Any], env: Mapping[str, str], use_mpi4py: bool) -> DistEnv:
    rank, world = mpi["rank"], mpi["world"]
    local_rank, local_world = mpi["local_rank"], mpi["local_world"]
    addr, port = env.get("MASTER_ADDR") or None, _int(env, "MASTER_PORT")
    need_comm = world > 1 and (local_rank is None or local_world is None or port is None
                               or (addr is None and local_world != world))
    if need_comm and use_mpi4py:
        key = (rank, world, addr, port)
        if key not in _MPI_CACHE:
            _MPI_CACHE[key] = _mpi_exchange(addr, port, local_rank, local_world)
        addr, port, local_rank, local_world = _MPI_CACHE[key]
    if local_rank is None:
        local_rank = rank
    if local_world is None:
        local_world = world
    if addr is None:
        addr = SINGLE_HOST_ADDR if local_world == world else network.own_address()
    if port is None:
        port = DEFAULT_MASTER_PORT
    return DistEnv(rank, world, local_rank, local_world, addr, port, "mpi")


def _mpi_exchange(addr: str | None, port: int | None, local_rank: int | None,
                  local_world: int | None) -> tuple[str, int, int, int]:
    """Collective over MPI.COMM_WORLD: node-local rank/size, rank 0's address (multi-host) and a free port."""
    from mpi4py import MPI  # imported only here: initialises MPI

    comm = MPI.COMM_WORLD
    if local_rank is None or local_world is None:
        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
        local_rank, local_world = node.Get_rank(), node.Get_size()
        node.Free()
    single_host = comm.allreduce(local_world, op=MPI.MIN) == comm.Get_size()
    if comm.Get_rank() == 0:
        mine_addr = addr or (SINGLE_HOST_ADDR if single_host else network.own_address())
        mine_port = port or find_free_port(SINGLE_HOST_ADDR if single_host else "")
    else:
        mine_addr = mine_port = None
    addr, port = comm.bcast((mine_addr, mine_port), root=0)
    return addr, int(port), int(local_rank), int(local_world)


def _checked(e: DistEnv) -> DistEnv:
    if not (0 <= e.rank < e.world_size):
        raise ValueError(f"rank {e.rank} outside world size {e.world_size} (launcher {e.launcher})")
    if not (0 <= e.local_rank < max(e.local_world_size, 1)):
        raise ValueError(f"local rank {e.local_rank} outside local world size {e.local_world_size}")
    return e


def device_index_from_env(environ: Mapping[str, str], device_count: int) -> int | None:
    """`device.device_index` for the rank the launcher environment `environ` describes (no communication)."""
    from .device import device_index

    e = detect(environ, use_scontrol=False, use_mpi4py=False)
    return device_index(e.local_rank, e.local_world_size, device_count)

# ------------------------------------------------------------------------------------------------ init etc.

def init(backend: str | None = None, timeout: float | _dt.timedelta = 1800.0, *, force_group: bool = False,
         set_gloo_ifname: bool = True, environ: Mapping[str, str] | None = None) -> DistEnv:
    """Detect, export RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE/MASTER_ADDR/MASTER_PORT and initialise
    torch.distributed (``env://``) when world size > 1 (or with ``force_group=True``, a 1-process group).

    backend: None -> "nccl" when CUDA is available, else "gloo". With CUDA, the current device is set first
    (`astrom3_hpc.distributed.device.device_index`: cuda:0 with one visible GPU per task, else the local rank).
    GLOO_SOCKET_IFNAME, and NCCL_SOCKET_IFNAME for an nccl backend, are set (if unset) to the interface that
    reaches MASTER_ADDR (never loopback when the job spans hosts, see `gloo_socket_ifname`). Idempotent: if
    torch.distributed is already initialised, only checks it matches. DeepSpeed: call this first; then
    ``deepspeed.init_distributed(dist_backend=...)`` reuses the group.
    """
    import torch
    import torch.distributed as tdist

    given = os.environ if environ is None else environ
    env = detect(environ)
    if not given.get("MASTER_PORT"):
        if env.world_size == 1:
            # Nobody has to agree on a one-rank group's port: a free one cannot collide with a service or with
            # another one-rank job on the node (a SLURM array's tasks would otherwise derive fixed ports).
            env = dataclasses.replace(env, master_port=find_free_port(""))
        elif env.rank == 0 and not port_is_free(env.master_port):
            how = ("derived from SLURM_JOB_ID and the step id, see distributed.slurm_hosts.slurm_port"
                   if env.launcher == "slurm"
                   else "MASTER_PORT was not set")
            raise RuntimeError(
                f"rendezvous port {env.master_port} ({how}) is already in use on this host by "
                f"{network.port_user(env.master_port)}; set MASTER_PORT to a free port for every rank")
    os.environ.update(env.as_env())
    os.environ[LAUNCHER_VAR] = env.launcher
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        from .device import device_index

        # The same index DeepSpeed is given (train.engine.deepspeed_args): cuda:0 with one GPU per task.
        torch.cuda.set_device(device_index(env.local_rank, env.local_world_size, torch.cuda.device_count()))
    if tdist.is_available() and tdist.is_initialized():
        if tdist.get_world_size() != env.world_size or tdist.get_rank() != env.rank:
            raise RuntimeError(f"torch.distributed already initialised as rank {tdist.get_rank()}/"
                               f"{tdist.get_world_size()}, environment says {env.rank}/{env.world_size}")
        return env
    if env.world_size > 1 or force_group:
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if set_gloo_ifname:
            # NCCL's bootstrap and socket transport pick an interface of their own otherwise (possibly one
            # the other hosts cannot reach): both backends get the interface that routes to the master.
            names = ["GLOO_SOCKET_IFNAME"] + (["NCCL_SOCKET_IFNAME"] if "nccl" in backend else [])
            if any(not os.environ.get(n) for n in names):
                ifname = gloo_socket_ifname(env.master_addr, multi_host=env.local_world_size < env.world_size)
                for n in names:
                    if ifname and not os.environ.get(n):
                        os.environ[n] = ifname
        if not isinstance(timeout, _dt.timedelta):
            timeout = _dt.timedelta(seconds=float(timeout))
        global _HOOK_BEFORE_GROUP
        _HOOK_BEFORE_GROUP = sys.excepthook
        tdist.init_process_group(backend=backend, init_method="env://", rank=env.rank,
                                 world_size=env.world_size, timeout=timeout)
    return env


# torch wraps sys.excepthook at every group's creation (a "[rank0]: " prefix per line) and never unwraps it: ten jobs
# in one process printed "[rank0]: " ten times on each line of a traceback. cleanup() puts the hook back.
_HOOK_BEFORE_GROUP = None


# The rendezvous init() exports into this process's environment (the socket interfaces it chooses stay: they
# describe the host, not the job, and a job's rank report reads them afterwards).
EXPORTED_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", LAUNCHER_VAR)


@contextlib.contextmanager
def exports_restored():
    """Put the variables init() exports back as they were when the block ends. A job run inside a longer-lived
    process (a test session, a local sweep, a notebook) must not hand its rendezvous to what that process
    starts next: an `sbatch` from it would give both ranks of a new job the finished job's MASTER_PORT, still
    held by this process's store (EADDRINUSE on rank 0, rank 1 waiting for the timeout)."""
    before = {k: os.environ.get(k) for k in EXPORTED_VARS}
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def is_initialized() -> bool:
    import torch.distributed as tdist
    return tdist.is_available() and tdist.is_initialized()


def get_rank() -> int:
    import torch.distributed as tdist
    return tdist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    import torch.distributed as tdist
    return tdist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Rank 0 of the initialised group; without a group, rank 0 per the environment (single -> True)."""
    if is_initialized():
        return get_rank() == 0
    return detect(use_mpi4py=False).rank == 0


def barrier() -> None:
    if is_initialized() and get_world_size() > 1:
        import torch.distributed as tdist
        tdist.barrier()


def all_reduce_mean(tensor):
    """Mean of `tensor` over ranks, returned as a new tensor (the input is not modified). No group -> a copy."""
    import torch.distributed as tdist
    out = tensor.detach().clone()
    if is_initialized() and get_world_size() > 1:
        tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
        if out.is_floating_point() or out.is_complex():
            out /= get_world_size()
        else:
            out = out.double() / get_world_size()
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` from rank `src` on every rank (any picklable object). No group -> `obj`."""
    if not (is_initialized() and get_world_size() > 1):
        return obj
    import torch.distributed as tdist

    from .device import comm_device

    buf = [obj if get_rank() == src else None]
    tdist.broadcast_object_list(buf, src=src, device=comm_device())  # NCCL moves the pickles through the GPU
    return buf[0]


def cleanup() -> None:
    """Destroy the process group if one exists (safe to call always)."""
    global _HOOK_BEFORE_GROUP
    if is_initialized():
        import torch.distributed as tdist
        tdist.destroy_process_group()
    if _HOOK_BEFORE_GROUP is not None:
        sys.excepthook, _HOOK_BEFORE_GROUP = _HOOK_BEFORE_GROUP, None
    # DeepSpeed keeps a clone of the world group, made once per process: a second job in this process (the debug
    # executor's sweep, a notebook) built its engine on the destroyed one ("Group ... is not registered").
    groups = sys.modules.get("deepspeed.utils.groups")
    if groups is not None and getattr(groups, "_WORLD_GROUP", None) is not None:
        groups._WORLD_GROUP = None


__all__ = [
    "DistEnv", "detect", "init", "cleanup", "is_initialized", "get_rank", "get_world_size", "is_main",
    "barrier", "all_reduce_mean", "broadcast_object", "device_index_from_env", "expand_nodelist", "first_host",
    "expand_tasks_per_node", "slurm_tasks_on_node",
    "slurm_port", "find_free_port", "port_is_free", "gloo_socket_ifname", "interface_addresses",
    "route_source_address",
]
