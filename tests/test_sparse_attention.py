"""The fast path's ProbSparse attention through its projections and its fused feed-forward block
(model/sparse_attention.py, fast_ops.fast_feed_forward) against the dense modules they replace."""

from __future__ import annotations

import pytest
import torch

from astrom3_hpc.model.informer import AttentionLayer, EncoderLayer, InformerEncoder, ProbSparseAttention
from astrom3_hpc.model.fast_ops import set_fast_kernels
from astrom3_hpc.model.sparse_attention import _row_patterns


def _grads(layer, x, mask, fast: bool, seed: int = 1):
    layer.fast = fast
    torch.manual_seed(seed)
    y = layer(x, mask)
    g = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    params = [x, *layer.parameters()]
    return y, torch.autograd.grad((y * g).sum(), params)


@pytest.mark.parametrize("layout", ["reference", "standard"])
@pytest.mark.parametrize("padding_mask, deterministic_eval", [(False, False), (True, True), (True, False)])
@pytest.mark.parametrize("training", [True, False])
def test_projected_attention_equals_the_dense_layer(layout, padding_mask, deterministic_eval, training):
    """Outputs and every gradient (input, Q/K/V/out weights and biases) in fp64, same key samples."""
    torch.manual_seed(0)
    layer = AttentionLayer(ProbSparseAttention(1, deterministic_eval, padding_mask), 64, 4, layout).double()
    layer.train(training)
    x = torch.randn(6, 200, 64, dtype=torch.double, requires_grad=True)
    mask = torch.ones(6, 200, dtype=torch.bool)
    mask[:, 150:] = False
    mask[2, 30:] = False
    mask = mask if padding_mask else None
    y0, g0 = _grads(layer, x, mask, fast=False)
    y1, g1 = _grads(layer, x, mask, fast=True)
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    names = ["input", *(n for n, _ in layer.named_parameters())]
    for name, a, b in zip(names, g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


def test_projected_attention_draws_what_the_dense_layer_draws():
    layer = AttentionLayer(ProbSparseAttention(1), 32, 4, "reference").train()
    x = torch.randn(2, 200, 32)
    for fast in (False, True):
        layer.fast = fast
        torch.manual_seed(5)
        layer(x)
        if fast:
            assert torch.equal(torch.get_rng_state(), after_dense)
        else:
            after_dense = torch.get_rng_state()


@pytest.mark.parametrize("L, H", [(200, 4), (7, 3), (10, 4)])
def test_row_patterns_reproduce_the_reference_head_merge(L, H):
    """Every row of the (B, H, L, D) -> (B, L, H*D) view is one of the patterns: the head that fills each block."""
    heads = torch.arange(H)[:, None, None].expand(H, L, 1).float()  # a context whose rows carry their head index
    view = heads.contiguous().view(L, H)  # D = 1: the reference's plain view
    patterns, pattern_of_row = _row_patterns(L, H, "reference")
    assert torch.equal(patterns[pattern_of_row].float(), view)
    patterns, pattern_of_row = _row_patterns(L, H, "standard")
    assert torch.equal(patterns[pattern_of_row], torch.arange(H).expand(L, H))


def test_fused_feed_forward_equals_the_unfused_fast_dropouts():
    """Same seed, same masks (drawn in the same order): the fused block is the two Dropout layers' arithmetic."""
    torch.manual_seed(0)
    layer = EncoderLayer(AttentionLayer(ProbSparseAttention(1), 32, 4, "reference"), 32, 64, 0.1).double().train()
    x = torch.randn(4, 200, 32, dtype=torch.double, requires_grad=True)
    set_fast_kernels(layer, True)
    outs = []
    for fused in (False, True):
        torch.manual_seed(5)
        if fused:
            y = layer(x)
        else:  # the layer's forward with the fast Dropout modules applied one by one
            xx = layer.norm1(x + layer.dropout(layer.attention(x)))
            w1, w2 = layer.conv1.weight.squeeze(-1), layer.conv2.weight.squeeze(-1)
            h = layer.dropout(torch.nn.functional.gelu(torch.nn.functional.linear(xx, w1, layer.conv1.bias)))
            y = layer.norm2(xx + layer.dropout(torch.nn.functional.linear(h, w2, layer.conv2.bias)))
        g = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
        outs.append((y, torch.autograd.grad((y * g).sum(), [x, *layer.parameters()])))
    (y0, g0), (y1, g1) = outs
    assert (y0 == 0).sum() < y0.numel()  # not a degenerate all-dropped block
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fast_encoder_matches_plain_in_fp32_eval():
    """The whole paper-preset encoder in fp32: fast and plain agree within fp32 tolerance."""
    torch.manual_seed(0)
    enc = InformerEncoder(d_model=64, n_layers=3, n_heads=4, d_ff=128).eval()
    lc, mask = torch.randn(8, 200, 9), torch.ones(8, 200)
    mask[:, 170:] = 0
    torch.manual_seed(3)
    plain = enc(lc, mask)
    set_fast_kernels(enc, True)
    torch.manual_seed(3)
    fast = enc(lc, mask)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


def test_fast_layer_trains_under_bf16_autocast():
    """bf16 autocast on CPU: the fp32 fast kernels step aside, the layer computes in bf16 like the plain one."""
    torch.manual_seed(0)
    layer = EncoderLayer(AttentionLayer(ProbSparseAttention(1), 32, 4, "reference"), 32, 64, 0.1).train()
    set_fast_kernels(layer, True)
    x = torch.randn(4, 200, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        assert layer.attention(x).dtype == torch.bfloat16
    y.float().square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


def test_channels_last_spectra_encoder_equals_the_1d_layers():
    from astrom3_hpc.model.galspecnet import GalSpecNet

    torch.manual_seed(0)
    net = GalSpecNet(channels=[16, 16, 8, 8]).double()
    spec = torch.randn(4, 3, 2575, dtype=torch.double)
    spec[1] = 0.0  # a missing spectrum: constant conv outputs, every pooling window a tie
    outs = []
    for fast in (False, True):
        net.fast = fast
        net.zero_grad()
        y = net(spec)
        y.pow(2).sum().backward()
        outs.append((y.detach(), [p.grad.clone() for p in net.parameters()]))
    (y0, g0), (y1, g1) = outs
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
