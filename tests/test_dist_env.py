"""detect(): one decision for every launcher (torchrun, DeepSpeed launcher, srun, mpiexec, single)."""

from __future__ import annotations

import os
import socket

import pytest
import torch

try:
    from dist_helpers import free_port, run_distributed
except ImportError:  # tests/ imported as a package
    from tests.dist_helpers import free_port, run_distributed

from astrom3_hpc.distributed import env as denv
from astrom3_hpc.distributed import network, slurm_hosts
from astrom3_hpc.distributed.env import (DistEnv, detect, expand_nodelist, expand_tasks_per_node, first_host,
                                  gloo_socket_ifname, slurm_port)


def d(env, **kw):
    kw.setdefault("use_scontrol", False)
    kw.setdefault("use_mpi4py", False)
    return detect(env, **kw)


SRUN_STEP = {  # srun -N 2 -n 4 inside a 2-node job of 8 tasks; this is task 3 on the second node
    "SLURM_JOB_ID": "1234", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
    "SLURM_TASKS_PER_NODE": "4(x2)", "SLURM_STEP_NODELIST": "node[07-08]", "SLURM_JOB_NODELIST": "node[07-08]",
}
SBATCH_SCRIPT = {  # the batch script itself: SLURM_PROCID and the job's task count, but no step
    "SLURM_JOB_ID": "1234", "SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
    "SLURM_JOB_NODELIST": "node[07-08]", "SLURM_TASKS_PER_NODE": "4(x2)",
}


# ------------------------------------------------------------------------------------------ launchers

def test_single_process():
    e = d({})
    assert (e.rank, e.world_size, e.local_rank, e.local_world_size, e.launcher) == (0, 1, 0, 1, "single")
    assert not e.is_distributed and e.is_main


def test_torchrun():
    e = d({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "n1",
           "MASTER_PORT": "1234", "TORCHELASTIC_RUN_ID": "abc", "GROUP_RANK": "1"})
    assert e == DistEnv(5, 8, 1, 4, "n1", 1234, "torchrun")


def test_deepspeed_launcher():
    # deepspeed --num_gpus 2: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_*, LOCAL_SIZE, CROSS_RANK/CROSS_SIZE.
    e = d({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
           "LOCAL_SIZE": "2", "CROSS_RANK": "0", "CROSS_SIZE": "1"})
    assert e == DistEnv(1, 2, 1, 2, "127.0.0.1", 29500, "env")


def test_plain_env_without_master_defaults():
    e = d({"RANK": "0", "WORLD_SIZE": "2"})
    assert (e.master_addr, e.master_port, e.local_rank, e.local_world_size) == ("127.0.0.1", 29500, 0, 2)


def test_rank_wins_over_slurm():
    # torchrun --nproc_per_node 2 inside a 2-task srun step: SLURM vars describe the srun task, RANK the worker.
    env = dict(SRUN_STEP, RANK="6", WORLD_SIZE="8", LOCAL_RANK="0", LOCAL_WORLD_SIZE="2", MASTER_ADDR="node07",
               MASTER_PORT="4444", TORCHELASTIC_RUN_ID="x")
    e = d(env)
    assert (e.rank, e.world_size, e.local_rank, e.launcher, e.master_port) == (6, 8, 0, "torchrun", 4444)


def test_rank_without_master_takes_it_from_slurm_step():
    e = d(dict(SRUN_STEP, RANK="3", WORLD_SIZE="4"))
    assert e.master_addr == "node07" and e.master_port == slurm_port("1234", "0")


def test_srun_step():
    e = d(SRUN_STEP)
    assert e == DistEnv(3, 4, 1, 2, "node07", slurm_port("1234", "0"), "slurm")


def test_srun_master_port_override_and_job_nodelist_fallback():
    env = {k: v for k, v in SRUN_STEP.items() if k != "SLURM_STEP_NODELIST"}
    env.update(MASTER_PORT="7777", SLURM_JOB_NODELIST="gpu[3-4],cpu1")
    e = d(env)
    assert (e.master_addr, e.master_port) == ("gpu3", 7777)


def test_srun_old_style_stepid_and_ntasks():
    env = {"SLURM_JOB_ID": "99", "SLURM_STEPID": "2", "SLURM_PROCID": "1", "SLURM_NTASKS": "2",
           "SLURM_LOCALID": "1", "SLURM_NODELIST": "vm"}
    e = d(env)
    assert (e.rank, e.world_size, e.local_rank, e.local_world_size, e.master_addr) == (1, 2, 1, 2, "vm")
    assert e.master_port == slurm_port("99", "2")


def test_sbatch_batch_script_is_single_process():
    assert d(SBATCH_SCRIPT).launcher == "single"


def test_srun_with_pmi_plugin_stays_slurm():
    env = dict(SRUN_STEP, PMI_RANK="3", PMI_SIZE="4", PMI_FD="5")
    assert d(env).launcher == "slurm"


def test_mpiexec_inside_allocation_is_mpi():
    # mpiexec -n 2 run from the batch script (or from a 1-task step): SLURM vars disagree with PMI ones.
    for base in (SBATCH_SCRIPT, dict(SRUN_STEP, SLURM_PROCID="0", SLURM_STEP_NUM_TASKS="1", SLURM_NTASKS="1")):
        env = dict(base, PMI_RANK="1", PMI_SIZE="2", MPI_LOCALRANKID="1", MPI_LOCALNRANKS="2", MASTER_PORT="5000")
        e = d(env)
        assert (e.launcher, e.rank, e.world_size, e.local_rank, e.master_addr) == ("mpi", 1, 2, 1, "127.0.0.1")


def test_mpich_hydra():
    env = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2", "PMI_FD": "9",
           "MASTER_PORT": "6000"}
    assert d(env) == DistEnv(1, 2, 1, 2, "127.0.0.1", 6000, "mpi")


def test_mpi_without_port_and_without_mpi4py_uses_default():
    e = d({"PMI_RANK": "0", "PMI_SIZE": "2", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "2"})
    assert (e.master_addr, e.master_port) == ("127.0.0.1", 29500)


def test_open_mpi():
    env = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "6001"}
    assert d(env) == DistEnv(3, 4, 1, 2, "10.0.0.1", 6001, "mpi")


def test_mpi_multi_host_without_master_addr_is_not_loopback(monkeypatch):
    monkeypatch.setattr(network, "own_address", lambda: "10.1.2.3")
    env = {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "MASTER_PORT": "6001"}
    assert d(env).master_addr == "10.1.2.3"


def test_rank_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="outside world size"):
        d({"RANK": "2", "WORLD_SIZE": "2"})


def test_as_env_round_trips():
    e = d(SRUN_STEP)
    again = d(e.as_env())
    assert (again.rank, again.world_size, again.local_rank, again.local_world_size, again.master_addr,
            again.master_port) == (e.rank, e.world_size, e.local_rank, e.local_world_size, e.master_addr,
                                   e.master_port)


# ------------------------------------------------------------------------------------- SLURM parsing

@pytest.mark.parametrize("nodelist,hosts", [
    ("node01", ["node01"]),
    ("node[01-03,07],gpu5", ["node01", "node02", "node03", "node07", "gpu5"]),
    ("gpu[8-10]", ["gpu8", "gpu9", "gpu10"]),
    ("n[098-101]", ["n098", "n099", "n100", "n101"]),
    ("a[1-2]-ib[3,5]", ["a1-ib3", "a1-ib5", "a2-ib3", "a2-ib5"]),
    ("c1,c2, c3", ["c1", "c2", "c3"]),
    ("rack1-n[1,3]", ["rack1-n1", "rack1-n3"]),
])
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["node[01-03", "node01]", "n[3-1]", "n[a-b]"])
def test_expand_nodelist_rejects_malformed(bad):
    with pytest.raises(ValueError):
        expand_nodelist(bad)


def test_first_host_prefers_scontrol_then_falls_back(monkeypatch):
    monkeypatch.setattr(slurm_hosts, "scontrol_hostnames", lambda nl, timeout=5.0: ["from-scontrol"])
    assert first_host("node[01-02]") == "from-scontrol"
    assert first_host("node[01-02]", use_scontrol=False) == "node01"
    monkeypatch.setattr(slurm_hosts, "scontrol_hostnames", lambda nl, timeout=5.0: None)
    assert first_host("node[01-02]") == "node01"


def test_scontrol_missing_returns_none(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert slurm_hosts.scontrol_hostnames("node[1-2]") is None


def test_tasks_per_node():
    assert expand_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert expand_tasks_per_node("4") == [4]
    with pytest.raises(ValueError):
        expand_tasks_per_node("2(3)")


def test_slurm_port_deterministic_and_distinct():
    p = slurm_port("123456", "0")
    assert p == slurm_port(123456, 0) and 15000 <= p < 32000
    assert slurm_port("123456", "1") != p and slurm_port("123457", "0") != p
    assert 15000 <= slurm_port("77_3", "batch") < 32000
    # below the ephemeral range, where outgoing connections take their local ports
    assert max(slurm_port(j, 0) for j in range(0, 40000, 7)) < 32768


# ------------------------------------------------------------------------------------- gloo interface

def test_gloo_ifname_env_wins():
    assert gloo_socket_ifname("127.0.0.1", {"GLOO_SOCKET_IFNAME": "eth7"}) == "eth7"


def test_gloo_ifname_loopback_for_localhost():
    name = gloo_socket_ifname("127.0.0.1", {})
    assert name is not None and denv.interface_addresses()[name].startswith("127.")


def test_gloo_ifname_for_own_non_loopback_address():
    addrs = {n: a for n, a in denv.interface_addresses().items() if not a.startswith("127.")}
    if not addrs:
        pytest.skip("no non-loopback IPv4 interface")
    name, addr = next(iter(addrs.items()))
    assert gloo_socket_ifname(addr, {}) == name


def test_gloo_ifname_multi_host_never_loopback(monkeypatch):
    addrs = {n: a for n, a in denv.interface_addresses().items() if not a.startswith("127.")}
    if not addrs:
        pytest.skip("no non-loopback IPv4 interface")
    name, addr = next(iter(addrs.items()))
    monkeypatch.setattr(network, "own_address", lambda: addr)
    # The master is this host, named by an address that routes over loopback (Debian's 127.0.1.1).
    assert gloo_socket_ifname("127.0.1.1", {}, multi_host=True) == name
    assert denv.interface_addresses()[gloo_socket_ifname("127.0.1.1", {})].startswith("127.")


# ------------------------------------------------------------------------------------------- init etc.

_EXPORTED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
             "GLOO_SOCKET_IFNAME", denv.LAUNCHER_VAR)


@pytest.fixture
def clean_env(monkeypatch):
    """Forget launcher variables for the test and restore whatever init() exports afterwards."""
    for k in list(os.environ):
        if k in _EXPORTED or k.startswith(("SLURM_", "PMI_", "OMPI_", "TORCHELASTIC_")):
            monkeypatch.delenv(k)
    for k in _EXPORTED:
        monkeypatch.setenv(k, "placeholder")
        monkeypatch.delenv(k)
    yield monkeypatch
    denv.cleanup()


def test_init_single_process_exports_env_without_group(clean_env):
    e = denv.init()
    assert e.launcher == "single" and not denv.is_initialized()
    assert os.environ["RANK"] == "0" and os.environ["WORLD_SIZE"] == "1"
    assert denv.is_main() and denv.get_world_size() == 1
    x = torch.tensor([1.0, 2.0])
    assert torch.equal(denv.all_reduce_mean(x), x) and denv.broadcast_object({"a": 1}) == {"a": 1}
    denv.barrier()
    denv.cleanup()


def test_init_forced_one_process_group(clean_env):
    clean_env.setenv("MASTER_PORT", str(free_port()))
    e = denv.init(force_group=True, timeout=60)
    assert denv.is_initialized() and torch.distributed.get_backend() == "gloo"
    assert os.environ["GLOO_SOCKET_IFNAME"] == gloo_socket_ifname("127.0.0.1", {})
    assert denv.init() == e  # idempotent
    assert denv.broadcast_object([1, 2]) == [1, 2]
    torch.testing.assert_close(denv.all_reduce_mean(torch.tensor([3.0])), torch.tensor([3.0]))
    denv.barrier()
    denv.cleanup()
    assert not denv.is_initialized()


def _one_node_step(clean_env, job_id: str, rank: int, tasks: int) -> None:
    for k, v in {"SLURM_JOB_ID": job_id, "SLURM_STEP_ID": "0", "SLURM_PROCID": str(rank),
                 "SLURM_STEP_NUM_TASKS": str(tasks), "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0",
                 "SLURM_STEP_TASKS_PER_NODE": str(tasks), "SLURM_STEP_NODELIST": "localhost"}.items():
        clean_env.setenv(k, v)


def _listen(port: int):
    s = socket.socket()
    s.bind(("", port))
    s.listen()
    return s


def test_one_rank_step_takes_a_free_port_not_the_derived_one(clean_env):
    """A SLURM array's one-rank tasks each derive a fixed port from their job id; one landed on the test
    cluster's MariaDB port and failed. Nobody has to agree on a one-rank group's port, so it is a free one."""
    _one_node_step(clean_env, "260", rank=0, tasks=1)
    derived = slurm_port("260", "0")
    with _listen(derived):
        e = denv.init()
        assert e.launcher == "slurm" and e.world_size == 1 and e.master_port != derived
        assert os.environ["MASTER_PORT"] == str(e.master_port) and denv.port_is_free(e.master_port)
    denv.cleanup()


def test_rank0_names_a_derived_port_that_is_taken(clean_env):
    _one_node_step(clean_env, "261", rank=0, tasks=2)
    derived = slurm_port("261", "0")
    with _listen(derived):
        with pytest.raises(RuntimeError, match=rf"rendezvous port {derived} \(derived from SLURM_JOB_ID.*"
                                                r"already in use on this host.*set MASTER_PORT"):
            denv.init(timeout=5)
    assert not denv.is_initialized()


def helpers_child():
    import torch.distributed as tdist
    init_env = denv.init()  # already initialised by the runner: idempotent
    r = tdist.get_rank()
    x = torch.tensor([float(r), 10.0 * r])
    mean = denv.all_reduce_mean(x)
    ints = denv.all_reduce_mean(torch.tensor([r], dtype=torch.int64))
    obj = denv.broadcast_object({"from": r, "list": [r] * 3})
    denv.barrier()
    return {"mean": mean, "x_after": x, "ints": ints, "obj": obj, "is_main": denv.is_main(),
            "env": detect(), "first_env": init_env, "ifname": os.environ.get("GLOO_SOCKET_IFNAME")}


@pytest.mark.timeout(120)
def test_helpers_on_two_real_ranks():
    res = run_distributed(helpers_child, 2, timeout=90)
    for r, out in enumerate(res):
        torch.testing.assert_close(out["mean"], torch.tensor([0.5, 5.0]))
        torch.testing.assert_close(out["x_after"], torch.tensor([float(r), 10.0 * r]))  # input untouched
        torch.testing.assert_close(out["ints"], torch.tensor([0.5], dtype=torch.float64))
        assert out["obj"] == {"from": 0, "list": [0, 0, 0]}
        assert out["is_main"] == (r == 0)
        assert out["env"].rank == r and out["env"].world_size == 2
        assert out["env"] == out["first_env"] and out["env"].launcher == "env"
        assert out["ifname"] == "lo"
