"""ContrastiveLoss across real processes (gloo, CPU) equals one process on the concatenated global batch.

For world sizes 1, 2 and 4 the rank-averaged loss and the rank-averaged gradient of every parameter (what
DDP/DeepSpeed apply) must equal a single process computing an independent plain-CLIP reference on the global
batch, in float64 to rtol 1e-5 -- with all modalities present and with random presence masks (a pair uses only
objects having both), with equal and unequal per-rank batches (one rank even empty), and with 4 modalities
(6 pairs). Also under ``mpiexec -n 2`` with ranks discovered from PMI variables. Per-rank results travel in
files (tests/dist_helpers.py).
"""

from __future__ import annotations

import functools
import itertools
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

try:
    from conftest import IN_CI
    from dist_helpers import run_distributed
except ImportError:  # tests/ imported as a package
    from tests.conftest import IN_CI
    from tests.dist_helpers import run_distributed

from astrom3_hpc.distributed.gather import all_gather_with_grad
from astrom3_hpc.train.loss import ContrastiveLoss

MODS3 = ("photometry", "spectra", "metadata")
MODS4 = MODS3 + ("extra",)
IN_DIMS = {"photometry": 6, "spectra": 5, "metadata": 4, "extra": 3}
EMB_DIM = 8
N_GLOBAL = 16
RTOL, ATOL = 1e-5, 1e-10


# ------------------------------------------------------------------------------------------- toy problem

class Toy(nn.Module):
    """Linear encoders + L2 norm, one learnable log temperature of shape (1,) per pair (as DeepSpeed needs)."""

    def __init__(self, mods, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.mods = tuple(mods)
        self.enc = nn.ModuleDict()
        for m in self.mods:
            lin = nn.Linear(IN_DIMS[m], EMB_DIM, dtype=torch.float64)
            with torch.no_grad():
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g, dtype=torch.float64))
                lin.bias.copy_(0.1 * torch.randn(lin.bias.shape, generator=g, dtype=torch.float64))
            self.enc[m] = lin
        self.log_scale = nn.ParameterDict()
        for i, (a, b) in enumerate(itertools.combinations(self.mods, 2)):
            self.log_scale[f"{a}__{b}"] = nn.Parameter(torch.tensor([math.log(2.0 + 3.0 * i)],
                                                                    dtype=torch.float64))

    def forward(self, inputs):
        emb = {m: F.normalize(self.enc[m](inputs[m]), dim=-1) for m in self.mods}
        scales = {(a, b): self.log_scale[f"{a}__{b}"].exp().clamp(1.0, 100.0)
                  for a, b in itertools.combinations(self.mods, 2)}
        return emb, scales


def make_batch(mods, seed: int, masked: bool, n: int = N_GLOBAL):
    g = torch.Generator().manual_seed(1000 + seed)
    inputs = {m: torch.randn(n, IN_DIMS[m], generator=g, dtype=torch.float64) for m in mods}
    present = None
    if masked:
        present = {m: torch.rand(n, generator=g) < 0.7 for m in mods}
        present[mods[0]][0] = True      # some structure on purpose: object 1 has nothing, object 2 only one
        for m in mods:
            present[m][1] = False
        present[mods[1]][2] = True
        for m in mods[2:]:
            present[m][2] = False
    return inputs, present


def reference(mods, seed: int, masked: bool):
    """Independent single-process reference: plain CLIP per pair on the objects having both modalities."""
    inputs, present = make_batch(mods, seed, masked)
    model = Toy(mods, seed)
    emb, scales = model(inputs)
    pair_losses = {}
    for a, b in itertools.combinations(mods, 2):
        keep = torch.ones(N_GLOBAL, dtype=torch.bool) if present is None else present[a] & present[b]
        if keep.sum() == 0:
            pair_losses[(a, b)] = torch.zeros((), dtype=torch.float64)
            continue
        A, B = emb[a][keep], emb[b][keep]
        logits = scales[(a, b)] * A @ B.T
        lab = torch.arange(A.shape[0])
        pair_losses[(a, b)] = F.cross_entropy(logits, lab) + F.cross_entropy(logits.T, lab)
    total = sum(pair_losses.values())
    total.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return total.detach(), {k: v.detach() for k, v in pair_losses.items()}, grads


# --------------------------------------------------------------------------------------- child functions

def run_case(mods, sizes, masked: bool, seed: int = 0, allow_unequal: bool = True):
    """One rank's part; torch.distributed is already initialised (or world 1)."""
    import torch.distributed as tdist

    from astrom3_hpc.distributed import env as denv

    rank = tdist.get_rank() if tdist.is_initialized() else 0
    world = tdist.get_world_size() if tdist.is_initialized() else 1
    assert len(sizes) == world and sum(sizes) == N_GLOBAL
    lo, hi = sum(sizes[:rank]), sum(sizes[:rank + 1])
    inputs, present = make_batch(mods, seed, masked)
    inputs = {m: x[lo:hi] for m, x in inputs.items()}
    if present is not None:
        present = {m: p[lo:hi] for m, p in present.items()}
    model = Toy(mods, seed)
    loss_fn = ContrastiveLoss(list(mods), gather=True, allow_unequal=allow_unequal)
    emb, scales = model(inputs)
    try:
        total, pairs = loss_fn(emb, scales, present)
    except ValueError as e:
        return {"error": str(e)}
    total.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return {
        "total": total.detach(),
        "total_mean": denv.all_reduce_mean(total.detach()),
        "pairs_mean": {k: denv.all_reduce_mean(v.detach()) for k, v in pairs.items()},
        "grads": grads,
        "grads_mean": {n: denv.all_reduce_mean(g) for n, g in grads.items()},
    }


def run_cases(cases):
    return {name: run_case(**spec) for name, spec in cases.items()}


def deepspeed_sgd_step(stage: int, masked: bool, lr: float):
    """One DeepSpeed step (ZeRO `stage`, client SGD, no clipping) on this rank's half of the global batch."""
    import deepspeed
    import torch.distributed as tdist

    deepspeed.init_distributed(dist_backend="gloo")  # reuses the group init() created
    rank = tdist.get_rank()
    model = Toy(MODS3, 0)
    cfg = {"train_micro_batch_size_per_gpu": N_GLOBAL // 2, "gradient_accumulation_steps": 1,
           "zero_optimization": {"stage": stage}, "steps_per_print": 10 ** 9,
           # DeepSpeed 0.19 clips at 1.0 unless told otherwise: that would rescale the gradient.
           "gradient_clipping": 0.0, "zero_allow_untested_optimizer": True}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                                           config=cfg)
    inputs, present = make_batch(MODS3, 0, masked)
    lo, hi = rank * N_GLOBAL // 2, (rank + 1) * N_GLOBAL // 2
    inputs = {m: x[lo:hi] for m, x in inputs.items()}
    present = None if present is None else {m: p[lo:hi] for m, p in present.items()}
    emb, scales = engine(inputs)
    total, _ = ContrastiveLoss(list(MODS3))(emb, scales, present)
    engine.backward(total)
    engine.step()
    return {n: p.detach().clone() for n, p in engine.module.named_parameters()}


def mpi_child():
    return {"full": run_case(MODS3, [8, 8], False), "masked": run_case(MODS3, [8, 8], True, seed=3)}


# ------------------------------------------------------------------------------------------------ cases

def _even(w):
    return [N_GLOBAL // w] * w


CASES = {
    1: {"full": dict(mods=MODS3, sizes=_even(1), masked=False),
        "masked": dict(mods=MODS3, sizes=_even(1), masked=True, seed=1)},
    2: {"full": dict(mods=MODS3, sizes=_even(2), masked=False),
        "masked": dict(mods=MODS3, sizes=_even(2), masked=True, seed=1),
        "unequal_full": dict(mods=MODS3, sizes=[5, 11], masked=False, seed=2),
        "unequal_masked": dict(mods=MODS3, sizes=[11, 5], masked=True, seed=1),
        "four_mod": dict(mods=MODS4, sizes=_even(2), masked=False, seed=4),
        "four_mod_masked": dict(mods=MODS4, sizes=_even(2), masked=True, seed=5),
        "unequal_rejected": dict(mods=MODS3, sizes=[5, 11], masked=False, allow_unequal=False)},
    4: {"full": dict(mods=MODS3, sizes=_even(4), masked=False),
        "masked": dict(mods=MODS3, sizes=_even(4), masked=True, seed=1),
        "unequal_masked_empty_rank": dict(mods=MODS3, sizes=[3, 5, 0, 8], masked=True, seed=6)},
}


@functools.lru_cache(maxsize=None)
def distributed_results(world: int):
    # forkserver: ranks are forks of a server that imported torch once (real processes, real gloo; startup
    # of ~1 s instead of a fresh torch import per rank). The env-var subprocess launcher is covered in
    # test_dist_env.py, mpiexec below.
    return run_distributed(run_cases, world, args=(CASES[world],), timeout=120, launcher="forkserver")


def _have_mpiexec() -> bool:
    return (Path(sys.executable).parent / "mpiexec").exists() or shutil.which("mpiexec") is not None


MATCH_PARAMS = [(w, name) for w, cases in CASES.items() for name in cases if name != "unequal_rejected"]


def _assert_matches_reference(per_rank, spec):
    ref_total, ref_pairs, ref_grads = reference(spec["mods"], spec.get("seed", 0), spec["masked"])
    world = len(per_rank)
    # The loss averaged over ranks is the full-batch loss (and all ranks agree on the average).
    own_mean = torch.stack([r["total"] for r in per_rank]).mean()
    torch.testing.assert_close(own_mean, ref_total, rtol=RTOL, atol=ATOL)
    for r in per_rank:
        torch.testing.assert_close(r["total_mean"], ref_total, rtol=RTOL, atol=ATOL)
        assert set(r["pairs_mean"]) == set(ref_pairs)
        for k in ref_pairs:
            torch.testing.assert_close(r["pairs_mean"][k], ref_pairs[k], rtol=RTOL, atol=ATOL)
    # Gradients after the data-parallel mean equal single-process full-batch gradients.
    for name, g_ref in ref_grads.items():
        manual = torch.stack([r["grads"][name] for r in per_rank]).mean(0)
        torch.testing.assert_close(manual, g_ref, rtol=RTOL, atol=ATOL, msg=lambda m: f"{name}: {m}")
        for r in per_rank:
            torch.testing.assert_close(r["grads_mean"][name], g_ref, rtol=RTOL, atol=ATOL,
                                       msg=lambda m: f"{name} (all_reduce_mean): {m}")
    if world > 1 and not spec["masked"] and len(set(spec["sizes"])) == 1:
        # With equal batches each rank's own loss differs (different rows): proves rows were local.
        assert len({round(float(r["total"]), 12) for r in per_rank}) > 1


@pytest.mark.timeout(180)
@pytest.mark.parametrize("world,case", MATCH_PARAMS, ids=[f"w{w}-{c}" for w, c in MATCH_PARAMS])
def test_distributed_loss_and_grads_match_single_process(world, case):
    results = distributed_results(world)
    per_rank = [r[case] for r in results]
    assert all("error" not in r for r in per_rank), per_rank
    _assert_matches_reference(per_rank, CASES[world][case])


@pytest.mark.timeout(180)
def test_four_modalities_give_six_pairs():
    per_rank = [r["four_mod"] for r in distributed_results(2)]
    assert len(per_rank[0]["pairs_mean"]) == 6
    assert set(per_rank[0]["pairs_mean"]) == set(itertools.combinations(MODS4, 2))


@pytest.mark.timeout(180)
def test_unequal_batches_rejected_when_disallowed():
    per_rank = [r["unequal_rejected"] for r in distributed_results(2)]
    for r in per_rank:
        assert "error" in r
        assert "rank 0: 5" in r["error"] and "rank 1: 11" in r["error"], r["error"]


@pytest.mark.mpi
@pytest.mark.timeout(180)
@pytest.mark.skipif(not _have_mpiexec() and not IN_CI, reason="mpiexec not installed (under CI: a failure)")
def test_mpiexec_two_ranks_detects_pmi_and_matches():
    # The children get no RANK/MASTER_* variables: init() -> detect() must find PMI_RANK/PMI_SIZE.
    records = run_distributed(mpi_child, 2, launcher="mpiexec", timeout=120, return_records=True)
    envs = [rec["env"] for rec in records]
    assert [e["rank"] for e in envs] == [0, 1]
    assert all(e["world_size"] == 2 and e["launcher"] == "mpi" for e in envs), envs
    assert [e["local_rank"] for e in envs] == [0, 1]
    assert all(e["master_addr"] == "127.0.0.1" for e in envs)
    assert len({e["master_port"] for e in envs}) == 1  # rank 0's free port, broadcast over MPI
    results = [rec["result"] for rec in records]
    _assert_matches_reference([r["full"] for r in results], dict(mods=MODS3, sizes=[8, 8], masked=False))
    _assert_matches_reference([r["masked"] for r in results], dict(mods=MODS3, sizes=[8, 8], masked=True,
                                                                    seed=3))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_deepspeed_zero2_step_equals_single_process_sgd_step():
    """End to end through DeepSpeed's own gradient averaging (ZeRO-2 partitions and reduce-scatters the
    gradients): one SGD step on 2 ranks lands where one full-batch SGD step of the reference lands."""
    lr = 0.1
    results = run_distributed(deepspeed_sgd_step, 2, args=(2, True, lr), timeout=240, launcher="forkserver")
    _, _, ref_grads = reference(MODS3, 0, True)
    start = dict(Toy(MODS3, 0).named_parameters())
    for name, g in ref_grads.items():
        expect = start[name].detach() - lr * g
        for r in results:
            torch.testing.assert_close(r[name], expect, rtol=RTOL, atol=ATOL, msg=lambda m: f"{name}: {m}")


# ------------------------------------------------------------------------------ in-process (no group)

def test_single_process_equals_reference_without_group():
    for masked in (False, True):
        inputs, present = make_batch(MODS3, 7, masked)
        model = Toy(MODS3, 7)
        emb, scales = model(inputs)
        total, pairs = ContrastiveLoss(MODS3)(emb, scales, present)
        ref_total, ref_pairs, _ = reference(MODS3, 7, masked)
        torch.testing.assert_close(total.detach(), ref_total, rtol=1e-12, atol=1e-12)
        for k, v in ref_pairs.items():
            torch.testing.assert_close(pairs[k].detach(), v, rtol=1e-12, atol=1e-12)


def test_gather_is_identity_without_group():
    x = torch.randn(3, 4, requires_grad=True)
    assert all_gather_with_grad(x) is x


def test_absent_embeddings_cannot_leak_nan():
    inputs, present = make_batch(MODS3, 8, True)
    model = Toy(MODS3, 8)
    emb, scales = model(inputs)
    poisoned = {m: torch.where(present[m][:, None], e, torch.full_like(e, float("nan"))) for m, e in emb.items()}
    total, _ = ContrastiveLoss(MODS3)(poisoned, scales, present)
    total.backward()
    ref_total, _, ref_grads = reference(MODS3, 8, True)
    torch.testing.assert_close(total.detach(), ref_total)
    for n, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), n
        torch.testing.assert_close(p.grad, ref_grads[n])


def test_pair_without_valid_objects_is_zero_and_finite():
    inputs, _ = make_batch(MODS3, 9, False)
    present = {"photometry": torch.ones(N_GLOBAL, dtype=torch.bool),
               "spectra": torch.arange(N_GLOBAL) < 8, "metadata": torch.arange(N_GLOBAL) >= 8}
    model = Toy(MODS3, 9)
    emb, scales = model(inputs)
    total, pairs = ContrastiveLoss(MODS3)(emb, scales, present)
    assert float(pairs[("spectra", "metadata")].detach()) == 0.0
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_low_precision_embeddings_are_upcast():
    inputs, _ = make_batch(MODS3, 10, False)
    emb, scales = Toy(MODS3, 10)(inputs)
    total, _ = ContrastiveLoss(MODS3)({m: e.bfloat16() for m, e in emb.items()},
                                      {k: v.float() for k, v in scales.items()})
    assert total.dtype == torch.float32
    ref_total, _, _ = reference(MODS3, 10, False)
    assert abs(float(total.detach()) - float(ref_total)) < 0.05 * float(ref_total)


def test_input_validation():
    loss = ContrastiveLoss(["a", "b"])
    e = F.normalize(torch.randn(4, 3), dim=-1)
    with pytest.raises(KeyError, match="missing modalities"):
        loss({"a": e}, {("a", "b"): 1.0})
    with pytest.raises(KeyError, match="no logit scale"):
        loss({"a": e, "b": e}, {})
    with pytest.raises(ValueError, match="expected"):
        loss({"a": e, "b": e[:3]}, {("a", "b"): 1.0})
    with pytest.raises(ValueError):
        ContrastiveLoss(["a"])
    # (b, a) is accepted for (a, b).
    t1, _ = loss({"a": e, "b": e}, {("b", "a"): torch.tensor([3.0])})
    t2, _ = loss({"a": e, "b": e}, {("a", "b"): 3.0})
    torch.testing.assert_close(t1, t2)


# ------------------------------------------------------------------ the real AstroM3 model (paper preset)

PAPER_SMALL = ["model.preset=paper", "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.d_ff=64",
               "model.embed_dim=32", "model.spec_channels=[4,4,4,4]", "model.meta_hidden=32"]
PAPER_GLOBAL = 16
FORWARD_SEED = 1234


def _paper_model_and_batch(store: str):
    """The paper-preset CLIP model in float64 (same init everywhere) and one global batch of 16 real objects."""
    from astrom3_hpc.core.config import load_config
    from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches
    from astrom3_hpc.model import build_clip

    cfg = load_config(None, PAPER_SMALL)
    torch.manual_seed(0)
    model = build_clip(cfg.model).double()
    # Eval mode: dropout off, so the computation per object does not depend on how rows are split over
    # ranks. ProbSparse still samples keys (the paper preset samples at evaluation time too): its one
    # (L_Q, n_sample) index table per layer is shared by the whole batch, so re-seeding before every forward
    # draws the same tables for one rank's half as for the full batch.
    model.eval()
    batches = TrimodalBatches(LoaderSpec(store=store, batch_size=PAPER_GLOBAL, train=False))
    batch = next(iter(batches.iter_epoch(0)))
    batch = {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}
    return model, batch


def _paper_loss(model, batch, gather: bool):
    from astrom3_hpc.train.pretrain import presence

    torch.manual_seed(FORWARD_SEED)
    emb = model(batch)
    total, _ = ContrastiveLoss(list(model.modalities), gather=gather)(emb, model.logit_scales(),
                                                                      presence(batch, model.modalities))
    return total


def paper_model_rank(store: str):
    """One rank: its half of the global batch through the real model and the gathering loss."""
    import torch.distributed as tdist

    from astrom3_hpc.distributed import env as denv

    rank, world = tdist.get_rank(), tdist.get_world_size()
    model, batch = _paper_model_and_batch(store)
    n = PAPER_GLOBAL // world
    local = {k: v[rank * n:(rank + 1) * n] for k, v in batch.items()}
    total = _paper_loss(model, local, gather=True)
    total.backward()
    return {"loss_mean": denv.all_reduce_mean(total.detach()),
            "grads_mean": {k: denv.all_reduce_mean(p.grad.detach().clone())
                           for k, p in model.named_parameters() if p.grad is not None},
            "present": batch["present"]}


@pytest.mark.timeout(300)
def test_paper_model_two_ranks_match_the_full_batch(tiny_store):
    """The real paper-preset model (Informer with ProbSparse attention, GalSpecNet, metadata MLP, three pairs
    of temperatures) on real store rows: the rank-averaged loss and gradients of 2 ranks x 8 objects equal
    one process on all 16.

    Catches what the linear toy model cannot: a gather that breaks autograd through a deep encoder, a loss
    normalised per rank instead of globally, temperatures whose gradient is counted once per rank, and
    logits of one rank's rows against only its own columns (each of these changes the loss or a gradient).
    """
    per_rank = run_distributed(paper_model_rank, 2, args=(str(tiny_store),), timeout=240, launcher="forkserver")
    model, batch = _paper_model_and_batch(str(tiny_store))
    assert batch["label"].shape[0] == PAPER_GLOBAL
    ref = _paper_loss(model, batch, gather=False)
    ref.backward()
    ref_grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert any(k.startswith("encoders.photo.layers.1.attention") for k in ref_grads)
    assert any(k.startswith("log_logit_scales") for k in ref_grads)
    for r in per_rank:
        assert torch.equal(r["present"], batch["present"])  # both sides saw the same rows
        torch.testing.assert_close(r["loss_mean"], ref.detach(), rtol=1e-9, atol=1e-12)
        assert set(r["grads_mean"]) == set(ref_grads)
        for k, g in ref_grads.items():
            torch.testing.assert_close(r["grads_mean"][k], g, rtol=1e-7, atol=1e-12, msg=lambda m: f"{k}: {m}")
