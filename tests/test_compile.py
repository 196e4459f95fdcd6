"""`train.compile`: encoders compiled in place compute what the eager ones compute.

Compiled with aot_eager: the graphs are traced forward and backward as inductor traces them, without inductor's
CPU C++ build (about 30 s of CI on 2 cores), which the GPU runs that use train.compile do not go through (Triton);
benchmarks/gpu_check.sh compiles with inductor on the GPU."""

from __future__ import annotations

import pytest
import torch

from astrom3_hpc.core.config import ConfigError, load_config
from astrom3_hpc.model.informer import InformerEncoder


def test_compiled_encoder_matches_eager_and_keeps_its_state_dict_keys(backend="aot_eager"):
    """Deterministic settings (eval, every key scored, no dropout): outputs and gradients within fp32 tolerance."""
    torch.manual_seed(0)
    enc = InformerEncoder(d_model=16, n_layers=1, n_heads=2, d_ff=32, deterministic_eval=True,
                          padding_mask=True, pooling="mean", head_layout="standard", dropout=0.0).eval()
    keys = list(enc.state_dict())
    lc, mask = torch.randn(4, 200, 9), torch.ones(4, 200)
    mask[:, 150:] = 0
    eager = enc(lc, mask)
    g_eager = torch.autograd.grad(eager.square().sum(), list(enc.parameters()))
    enc.compile(backend=backend)
    compiled = enc(lc, mask)
    g_comp = torch.autograd.grad(compiled.square().sum(), list(enc.parameters()))
    assert list(enc.state_dict()) == keys
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_compile_key_is_validated():
    assert load_config(None, []).train.compile is False
    assert load_config(None, ["train.compile=true"]).train.compile is True
    with pytest.raises(ConfigError, match="train.compile"):
        load_config(None, ["train.compile=3"])
    assert load_config(None, []).train.compile_backend == "inductor"
    assert load_config(None, ["train.compile_backend=aot_eager"]).train.compile_backend == "aot_eager"
    with pytest.raises(ConfigError, match="train.compile_backend.*inductor, aot_eager"):
        load_config(None, ["train.compile_backend=triton"])
