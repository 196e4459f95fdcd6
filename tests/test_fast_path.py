"""The CPU fast path (`train.kernels: fast`): its dropout masks, its numbers against the plain eager path and the
reference baseline of benchmarks/reference_model.py, and the execution settings the engine applies."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
import torch

from astrom3_hpc.core.config import ConfigError, load_config
from astrom3_hpc.train.loss import ContrastiveLoss
from astrom3_hpc.model import build_clip
from astrom3_hpc.model.fast_ops import Dropout, fast_dropout, keep_threshold, set_fast_kernels, tune_malloc
from astrom3_hpc.model.galspecnet import GalSpecNet
from astrom3_hpc.model.informer import AttentionLayer
from astrom3_hpc.train.engine import apply_execution, build_optimizer, cpu_threads

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reference_model import RefCLIP, reference_loss  # noqa: E402

SMALL = ["model.preset=paper", "model.d_model=32", "model.n_layers=2", "model.d_ff=64", "model.embed_dim=64",
         "model.meta_hidden=64", "model.spec_channels=[8,8,32,32]"]


def small_batch(b: int = 8, seed: int = 42) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, 200)
    mask[:, 120:] = 0
    return {"lc": torch.randn(b, 200, 9, generator=g), "lc_mask": mask,
            "spec": torch.randn(b, 3, 2575, generator=g), "meta": torch.randn(b, 34, generator=g)}


# -- dropout masks -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.1, 0.2451, 0.5])
def test_fast_dropout_is_bernoulli_with_exact_rescaling(p):
    torch.manual_seed(0)
    n = 2_000_000
    x = torch.rand(n) + 0.5
    y = fast_dropout(x, p)
    keep = y != 0
    _, scale = keep_threshold(p)
    drop_q = round(p * 65536) / 65536
    assert abs(drop_q - p) <= 2**-17
    assert scale == pytest.approx(1 / (1 - drop_q), rel=1e-12)
    # Keep fraction within 5 binomial standard deviations of 1 - p_q.
    sd = math.sqrt(drop_q * (1 - drop_q) / n)
    assert abs(keep.double().mean().item() - (1 - drop_q)) < 5 * sd
    torch.testing.assert_close(y[keep], x[keep] * scale, rtol=1e-6, atol=0)
    # Neighbouring lanes of one 64-bit draw are independent: P(both kept) = (1 - p)^2.
    pairs = keep.view(-1, 4)
    for a, b in [(0, 1), (2, 3), (0, 3)]:
        both = (pairs[:, a] & pairs[:, b]).double().mean().item()
        assert abs(both - (1 - drop_q) ** 2) < 5 * math.sqrt((1 - drop_q) ** 2 / (n / 4))


def test_fast_dropout_gradient_is_the_mask_times_scale_and_replays_under_a_seed():
    x = torch.randn(64, 50, 33, requires_grad=True)  # numel not a multiple of 4
    torch.manual_seed(7)
    y = fast_dropout(x, 0.3)
    g = torch.randn_like(y)
    y.backward(g)
    keep = y.detach() != 0
    torch.testing.assert_close(x.grad, torch.where(keep, g, 0.0) * keep_threshold(0.3)[1])
    torch.manual_seed(7)
    assert torch.equal(fast_dropout(x.detach(), 0.3), y.detach())


def test_dropout_module_is_plain_unless_switched_and_identity_in_eval():
    d = Dropout(0.4)
    x = torch.randn(1000)
    torch.manual_seed(1)
    plain = d(x)
    torch.manual_seed(1)
    assert torch.equal(plain, torch.nn.functional.dropout(x, 0.4, True))
    d.fast = True
    torch.manual_seed(1)
    fast = d(x)
    assert not torch.equal(fast, plain)  # a different mask stream
    d.eval()
    assert torch.equal(d(x), x)


def test_set_fast_kernels_reaches_every_dropout_of_the_model():
    cfg = load_config(None, SMALL)
    model = build_clip(cfg.model)
    n_dropout = sum(isinstance(m, torch.nn.Dropout) for m in model.modules())
    assert n_dropout > 0 and all(isinstance(m, Dropout) for m in model.modules() if isinstance(m, torch.nn.Dropout))
    n_other = sum(isinstance(m, (AttentionLayer, GalSpecNet)) for m in model.modules())  # their own fast paths
    assert n_other > 1 and set_fast_kernels(model, True) == n_dropout + n_other
    assert all(m.fast for m in model.modules() if isinstance(m, Dropout))
    set_fast_kernels(model, False)
    assert not any(m.fast for m in model.modules() if isinstance(m, Dropout))


# -- numbers against the plain path and the reference baseline -------------------------------------------------
def test_galspecnet_pool_before_relu_matches_the_reference_order_exactly():
    torch.manual_seed(3)
    net = GalSpecNet(channels=[8, 8, 32, 32])
    ref_order = torch.nn.Sequential(*[m for i in range(4) for m in (
        (net.layers[3 * i], torch.nn.ReLU(), torch.nn.MaxPool1d(4)) if i < 3 else (net.layers[9], torch.nn.ReLU()))])
    x = torch.randn(4, 3, 2575, requires_grad=True)
    out = net(x)
    gx, = torch.autograd.grad(out.square().sum(), x)
    ref = ref_order(x).flatten(1)
    gref, = torch.autograd.grad(ref.square().sum(), x)
    assert torch.equal(out, ref) and torch.equal(gx, gref)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test, the caller's count after it (left at 1, every later in-process test in
    the session ran on one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_project_model_matches_the_reference_baseline_loss_and_gradients(one_thread):
    """Same weights, same RNG draws (seed before the forward), eval mode: the baseline the benchmark times
    computes what the project computes."""
    cfg = load_config(None, SMALL)
    torch.manual_seed(0)
    model = build_clip(cfg.model).eval()
    ref = RefCLIP(cfg.model).eval()
    ref.load_state_dict(model.state_dict())
    batch = small_batch()
    torch.manual_seed(1234)
    loss, _ = ContrastiveLoss(cfg.model.modalities, gather=False)(model(batch), model.logit_scales())
    loss.backward()
    torch.manual_seed(1234)
    rloss = reference_loss(ref(batch))
    rloss.backward()
    torch.testing.assert_close(loss, rloss, rtol=1e-5, atol=1e-4)
    grads = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-5, msg=name)


def _train(kernels: str, steps: int = 3) -> tuple[list[float], dict[str, torch.Tensor]]:
    cfg = load_config(None, [*SMALL, f"train.kernels={kernels}", "train.threads=1", "optim.lr=0.001"])
    torch.manual_seed(0)
    model = build_clip(cfg.model)
    fused = apply_execution(model, cfg)
    for m in model.modules():  # same (no) masks on both paths: what is compared is the arithmetic
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    opt = build_optimizer(model, cfg, fused)
    assert opt.defaults["fused"] == (True if kernels == "fast" else None)
    loss_fn = ContrastiveLoss(cfg.model.modalities, gather=False)
    losses = []
    for i in range(steps):
        torch.manual_seed(100 + i)
        loss, _ = loss_fn(model(small_batch(seed=i)), model.logit_scales())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        if i == 0:
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, {**{f"grad:{n}": g for n, g in grads.items()},
                    **{n: p.detach().clone() for n, p in model.named_parameters()}}


def test_fast_path_training_steps_match_the_plain_path():
    """Losses of three Adam steps (fused CPU Adam vs torch's default), first-step gradients, final weights.

    The fast attention sums in another order, so results agree to fp32 rounding, not bit for bit. Adam divides
    each gradient by its own running magnitude: an entry whose gradient is rounding noise (the key bias, which
    the softmax cancels) or near zero can take a different-signed step of up to lr. Weights are therefore
    compared in bulk (mean difference) and bounded per entry by the steps' total lr.
    """
    steps, lr = 3, 0.001
    fast_losses, fast = _train("fast", steps)
    plain_losses, plain = _train("plain", steps)
    torch.testing.assert_close(torch.tensor(fast_losses), torch.tensor(plain_losses), rtol=1e-4, atol=1e-4)
    assert fast_losses[0] == pytest.approx(plain_losses[0], rel=1e-6)  # the same first forward
    for k in plain:
        if k.startswith("grad:"):
            torch.testing.assert_close(fast[k], plain[k], rtol=1e-4, atol=1e-5, msg=k)
        else:
            diff = (fast[k] - plain[k]).abs()
            assert float(diff.max()) <= 2 * steps * lr + 1e-6, k
            assert float(diff.mean()) < 1e-5, k


# -- execution settings ------------------------------------------------------------------------------------------
# Where pytest itself runs inside a SLURM allocation, its tasks on the node would divide the CPUs too.
_SLURM_TASKS = ("SLURM_TASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_NODEID")


def test_thread_count_splits_the_usable_cores_over_the_node_ranks(monkeypatch):
    for k in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE", *_SLURM_TASKS):
        monkeypatch.delenv(k, raising=False)
    cores = len(os.sched_getaffinity(0))
    assert cpu_threads(3, 2) == 3
    assert cpu_threads(0, 1) == cores
    assert cpu_threads(0, cores) == 1
    assert cpu_threads(0, 4 * cores) == 1


def test_thread_count_follows_what_slurm_allotted_within_the_affinity(monkeypatch):
    """A cluster without task binding gives each task the node's whole affinity (here 8 cores): the allotment
    decides. Where SLURM binds tasks, the affinity is already the task's own and is not split again."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    for k in ("SLURM_CPUS_PER_TASK", *_SLURM_TASKS):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "4")
    assert cpu_threads(0, 1) == 4 and cpu_threads(0, 2) == 2  # the job's 4 CPUs over its tasks on the node
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert cpu_threads(0, 1) == 1 and cpu_threads(0, 2) == 1 and cpu_threads(2, 1) == 2
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")  # never more than the process may run on
    assert cpu_threads(0, 2) == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})  # bound: this task's 4 cores
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert cpu_threads(0, 2) == 4


def test_apply_execution_sets_threads_and_kernels():
    before = torch.get_num_threads()
    try:
        cfg = load_config(None, [*SMALL, "train.threads=1"])
        assert cfg.train.kernels == "fast"  # the default
        model = build_clip(cfg.model)
        assert apply_execution(model, cfg) is True
        assert torch.get_num_threads() == 1
        assert all(m.fast for m in model.modules() if isinstance(m, Dropout))
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("override, key", [("train.kernels=turbo", "train.kernels"),
                                           ("train.threads=-1", "train.threads")])
def test_bad_execution_keys_are_refused_by_name(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_tune_malloc_applies_on_linux_glibc():
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc mallopt is Linux-only")
    assert tune_malloc() is True
