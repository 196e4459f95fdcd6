"""Model package: parameter counts, shapes, presets, ProbSparse semantics, classifiers, extra modalities."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from astrom3_hpc.core.config import ConfigError, ModelConfig
from astrom3_hpc.model import (
    AstroM3CLIP, PretrainedLoadError, build_classifier, build_clip, count_parameters, flatten_size,
    load_pretrained_encoders, parameter_breakdown, register_modality, resolve, unregister_modality,
)
from astrom3_hpc.model.galspecnet import GalSpecNet
from astrom3_hpc.model.informer import ProbSparseAttention

PAPER_TOTAL = 15_869_827
PAPER_LC_PROJ = 25_600 * 512 + 512  # 13,107,712


def make_batch(B: int = 4, n_real: tuple[int, ...] | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lc = torch.randn(B, 200, 9, generator=g)
    mask = torch.ones(B, 200)
    for i, n in enumerate(n_real or ()):
        mask[i, n:] = 0
    lc = lc * mask.unsqueeze(-1)  # the loader zero-pads
    return {
        "lc": lc, "lc_mask": mask,
        "spec": torch.randn(B, 3, 2575, generator=g),
        "meta": torch.randn(B, 34, generator=g),
        "label": torch.randint(0, 10, (B,), generator=g),
        "object_id": torch.arange(B, dtype=torch.int64),
    }


def reference_loss(model: AstroM3CLIP, emb: dict[str, torch.Tensor]) -> torch.Tensor:
    """Single-process CLIP loss: per pair CE(logits, arange) + CE(logits.T, arange), not halved, summed."""
    total = 0.0
    for (a, b), scale in model.logit_scales().items():
        logits = scale * emb[a] @ emb[b].T
        target = torch.arange(logits.shape[0])
        total = total + F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)
    return total


def small_cfg(preset: str = "paper", **kw) -> ModelConfig:
    """Same code paths and sequence length as the presets, a fraction of the compute."""
    base = dict(preset=preset, d_model=32, n_layers=2, n_heads=4, d_ff=64, spec_channels=[8, 8, 8, 8],
                meta_hidden=32, embed_dim=64)
    base.update(kw)
    return ModelConfig(**base)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The test machines are small and shared: one intra-op thread avoids oversubscription stalls."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def small_paper() -> AstroM3CLIP:
    torch.manual_seed(0)
    return build_clip(small_cfg("paper"))


@pytest.fixture(scope="module")
def small_pooled() -> AstroM3CLIP:
    torch.manual_seed(0)
    return build_clip(small_cfg("det_masked_pooled"))


@pytest.fixture(scope="module")
def paper() -> AstroM3CLIP:
    torch.manual_seed(0)
    return build_clip(ModelConfig(preset="paper"))


@pytest.fixture(scope="module")
def pooled() -> AstroM3CLIP:
    torch.manual_seed(0)
    return build_clip(ModelConfig(preset="det_masked_pooled"))


# ---------------------------------------------------------------- parameter counts and shapes

def test_paper_parameter_count_exact(paper):
    bd = parameter_breakdown(paper)
    assert count_parameters(paper) == PAPER_TOTAL == bd["total"]
    assert bd["projection.photo"] == PAPER_LC_PROJ == 13_107_712
    assert bd["logit_scales"] == 3
    assert bd["encoder.photo"] == 1_589_888
    assert bd["encoder.spectra"] == 22_272
    assert bd["encoder.meta"] == 280_576


def test_pooled_preset_shrinks_only_the_lc_projection(pooled):
    bd = parameter_breakdown(pooled)
    assert bd["projection.photo"] == 128 * 512 + 512
    assert bd["total"] == PAPER_TOTAL - PAPER_LC_PROJ + 128 * 512 + 512


def test_galspecnet_flatten_derived_from_grid_length():
    assert flatten_size(2575, [64, 64, 32, 32]) == 1184 == 32 * 37
    net = GalSpecNet(length=2575)
    assert net.out_features == 1184
    short = GalSpecNet(length=2000)
    assert short.out_features == flatten_size(2000, [64, 64, 32, 32]) != 1184
    assert short(torch.zeros(2, 3, 2000)).shape == (2, short.out_features)
    with pytest.raises(ValueError):
        flatten_size(40, [64, 64, 32, 32])


def test_output_shapes_and_unit_norm(paper, pooled):
    batch = make_batch(3, n_real=(200, 150, 30))
    for model in (paper, pooled):
        model.eval()
        with torch.no_grad():
            out = model(batch)
        assert set(out) == {"photo", "spectra", "meta"}
        for e in out.values():
            assert e.shape == (3, 512)
            assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_attribute_and_state_dict_names(paper):
    sd = paper.state_dict()
    assert {"log_logit_scales.photo__spectra", "log_logit_scales.photo__meta",
            "log_logit_scales.spectra__meta"} <= set(sd)
    assert set(paper.encoders) == set(paper.projections) == {"photo", "spectra", "meta"}
    assert paper.pairs() == [("photo", "spectra"), ("photo", "meta"), ("spectra", "meta")]
    assert all(p.dim() >= 1 for p in paper.parameters()), "0-dim parameters crash deepspeed.initialize"
    assert not any(k.endswith(".pe") for k in sd), "the positional table is not checkpointed"


# ---------------------------------------------------------------- temperatures

def test_temperatures_init_and_clamp():
    model = build_clip(dataclasses.replace(ModelConfig(preset="det_masked_pooled"), d_model=16, n_layers=1,
                                           d_ff=16, n_heads=2))
    scales = model.logit_scales()
    assert list(scales) == model.pairs()
    for s in scales.values():
        assert s.shape == (1,)
        assert s.item() == pytest.approx(100.0, rel=1e-5)
    with torch.no_grad():
        model.log_logit_scales["photo__spectra"].fill_(10.0)  # exp = 22026 -> 100
        model.log_logit_scales["photo__meta"].fill_(-3.0)  # exp = 0.05 -> 1
        model.log_logit_scales["spectra__meta"].fill_(math.log(7.0))
    s = model.logit_scales()
    assert s[("photo", "spectra")].item() == pytest.approx(100.0)
    assert s[("photo", "meta")].item() == pytest.approx(1.0)
    assert s[("spectra", "meta")].item() == pytest.approx(7.0, rel=1e-5)


# ---------------------------------------------------------------- presets

def test_resolve_fills_preset_and_keeps_explicit_fields():
    p = resolve(ModelConfig())
    assert (p.deterministic_eval, p.attn_padding_mask, p.lc_pooling, p.attn_head_layout) == \
        (False, False, "flatten", "reference")
    d = resolve(ModelConfig(preset="det_masked_pooled"))
    assert (d.deterministic_eval, d.attn_padding_mask, d.lc_pooling, d.attn_head_layout) == \
        (True, True, "mean", "standard")
    mixed = resolve(ModelConfig(preset="paper", deterministic_eval=True))
    assert mixed.deterministic_eval is True and mixed.lc_pooling == "flatten"
    with pytest.raises(ConfigError, match="attn_head_layout"):
        resolve(ModelConfig(preset="paper", attn_padding_mask=True))


def test_paper_eval_is_random_det_preset_is_deterministic(small_paper, small_pooled):
    paper, pooled = small_paper, small_pooled
    batch = make_batch(4, n_real=(200, 120))
    paper.eval()
    pooled.eval()
    with torch.no_grad():
        a, b = paper(batch)["photo"], paper(batch)["photo"]
        assert not torch.allclose(a, b), "paper preset samples keys at eval time (reference behaviour)"
        c, d = pooled(batch)["photo"], pooled(batch)["photo"]
        assert torch.equal(c, d)
        rng = torch.get_rng_state()
        pooled(batch)
        assert torch.equal(rng, torch.get_rng_state()), "deterministic eval draws no random numbers"


def test_padding_mask_makes_padded_values_irrelevant(small_pooled):
    pooled = small_pooled
    batch = make_batch(4, n_real=(200, 150, 7, 0))  # last row: no real step at all (missing modality)
    noisy = dict(batch)
    pad = batch["lc_mask"] == 0
    noisy["lc"] = batch["lc"].clone()
    noisy["lc"][pad] = 50.0 * torch.randn(int(pad.sum()), 9)
    pooled.eval()
    with torch.no_grad():
        a = pooled(batch)["photo"]
        b = pooled(noisy)["photo"]
    assert torch.isfinite(a).all()
    assert torch.allclose(a, b, atol=1e-6)
    # Training mode (random key sampling among real keys): same RNG stream -> same output too.
    pooled.train()
    torch.manual_seed(3)
    c = pooled(batch)["photo"]
    torch.manual_seed(3)
    d = pooled(noisy)["photo"]
    pooled.eval()
    assert torch.allclose(c, d, atol=1e-6)


def test_paper_preset_lets_padding_leak(small_paper):
    """Documents the reference quirk the mask option fixes: padded steps are attended to."""
    batch = make_batch(2, n_real=(120, 120))
    noisy = dict(batch)
    noisy["lc"] = batch["lc"].clone()
    noisy["lc"][:, 120:] = 5.0
    small_paper.eval()
    with torch.no_grad():
        torch.manual_seed(1)
        a = small_paper(batch)["photo"]
        torch.manual_seed(1)
        b = small_paper(noisy)["photo"]
    assert not torch.allclose(a, b)


# ---------------------------------------------------------------- ProbSparse semantics

def test_probsparse_with_all_queries_selected_equals_full_attention():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 8, 4) for _ in range(3))
    att = ProbSparseAttention(factor=3, deterministic_eval=True).eval()  # u = 3 * ceil(ln 8) = 9 -> all 8
    expected = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1) @ v
    assert torch.allclose(att(q, k, v), expected, atol=1e-6)
    masked = ProbSparseAttention(factor=3, deterministic_eval=True, padding_mask=True).eval()
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    s = (q @ k.transpose(-1, -2) / 2.0).masked_fill(~mask[:, None, None, :], float("-inf"))
    expected = torch.softmax(s, dim=-1) @ v
    out = masked(q, k, v, mask)
    assert torch.allclose(out[0], expected[0], atol=1e-6)
    assert torch.allclose(out[1, :, :5], expected[1, :, :5], atol=1e-6)


def test_probsparse_lazy_queries_output_mean_v():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 200, 8) for _ in range(3))
    out = ProbSparseAttention(factor=1).train()(q, k, v)
    lazy = torch.isclose(out, v.mean(2, keepdim=True).expand_as(out), atol=1e-6).all(-1)  # (1, 2, 200)
    assert (lazy.sum(-1) == 200 - 6).all()  # u = ceil(ln 200) = 6 active queries per head


# ---------------------------------------------------------------- classifiers

def test_single_modality_classifiers_load_clip_encoders(paper):
    sd = paper.state_dict()
    for mode, feats in (("photo", 25_600), ("spectra", 1184), ("meta", 512)):
        clf = build_classifier(ModelConfig(), mode)
        assert clf.head.in_features == feats and clf.head.out_features == 10
        loaded = load_pretrained_encoders(clf, sd, include_projections=False)
        assert loaded and all(k.startswith(f"encoders.{mode}.") for k in loaded)
        csd = clf.state_dict()
        for k in loaded:
            assert torch.equal(csd[k], sd[k])
        with pytest.raises(PretrainedLoadError, match="no projections"):
            load_pretrained_encoders(clf, sd, include_projections=True)
    clf = build_classifier(ModelConfig(), "meta")
    batch = make_batch(4)
    assert clf(batch).shape == (4, 10)
    # DeepSpeed / DDP style "module." prefixes are accepted.
    prefixed = {f"module.{k}": v for k, v in sd.items()}
    assert load_pretrained_encoders(clf, prefixed, include_projections=False)


def test_multimodal_classifier_load_and_fusion(paper, small_paper):
    # Full size: shapes of the paper heads and the error for paper projections in a pooled classifier.
    assert build_classifier(ModelConfig(), "all", fusion="avg").head.in_features == 512
    assert build_classifier(ModelConfig(), "all", fusion="concat").head.in_features == 1536
    with pytest.raises(PretrainedLoadError, match=r"projections\.photo\.weight.*\(512, 25600\)"):
        load_pretrained_encoders(build_classifier(ModelConfig(preset="det_masked_pooled"), "all"),
                                 paper.state_dict(), True)
    # ...but its encoders do fit (pooling changes no encoder weight).
    assert load_pretrained_encoders(build_classifier(ModelConfig(preset="det_masked_pooled"), "photo"),
                                    paper.state_dict(), False)

    # Small model: loading and the fusion arithmetic.
    cfg = small_cfg("paper")
    sd = small_paper.state_dict()
    clf = build_classifier(cfg, "all", fusion="avg")
    loaded = load_pretrained_encoders(clf, sd, include_projections=True)
    assert any(k.startswith("projections.photo.") for k in loaded)
    assert not any(k.startswith("log_logit_scales") for k in loaded)
    csd = clf.state_dict()
    assert all(torch.equal(csd[k], sd[k]) for k in loaded)
    clf.eval()
    small_paper.eval()
    batch = make_batch(4)
    # Same weights and RNG stream -> the classifier's averaged embedding is the mean of the CLIP embeddings.
    with torch.no_grad():
        torch.manual_seed(0)
        feats = clf.features(batch)
        torch.manual_seed(0)
        emb = small_paper(batch)
        assert torch.allclose(feats, (emb["photo"] + emb["spectra"] + emb["meta"]) / 3, atol=1e-5)
        batch["present"] = torch.tensor([[True, True, True]] * 3 + [[False, True, True]])
        torch.manual_seed(0)
        feats = clf.features(batch)
        assert torch.allclose(feats[3], (emb["spectra"][3] + emb["meta"][3]) / 2, atol=1e-5)
        concat = build_classifier(cfg, "all", fusion="concat").eval()
        assert concat(make_batch(2)).shape == (2, 10)


def test_load_errors_name_missing_and_mismatched_keys(paper):
    sd = dict(paper.state_dict())
    clf = build_classifier(ModelConfig(), "photo")
    broken = dict(sd)
    del broken["encoders.photo.norm.weight"]
    with pytest.raises(PretrainedLoadError, match=r"missing in checkpoint: \['encoders\.photo\.norm\.weight'\]"):
        load_pretrained_encoders(clf, broken, include_projections=False)
    small = build_clip(dataclasses.replace(ModelConfig(), d_ff=64, n_layers=1)).state_dict()
    with pytest.raises(PretrainedLoadError) as err:
        load_pretrained_encoders(clf, small, include_projections=False)
    assert "shape mismatch" in str(err.value) and "conv1.weight" in str(err.value)
    assert "missing in checkpoint" in str(err.value) and "encoders.photo.layers.7." in str(err.value)
    with pytest.raises(ValueError, match="classifier mode"):
        build_classifier(ModelConfig(), "radio")


# ---------------------------------------------------------------- extra modalities

class ToyEncoder(nn.Module):
    def __init__(self, n_in: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.out_features = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture
def toy_modality():
    register_modality("toy", lambda cfg: ToyEncoder(6, 16), ("toy",))
    yield "toy"
    unregister_modality("toy")


def test_unknown_modality_and_missing_key_errors(toy_modality):
    with pytest.raises(KeyError, match="unknown modality 'radio'"):
        build_clip(ModelConfig(modalities=["photo", "radio"]))
    with pytest.raises(ValueError, match="already registered"):
        register_modality("toy", lambda cfg: ToyEncoder(6, 16), ("toy",))
    model = build_clip(ModelConfig(modalities=["meta", "toy"]))
    with pytest.raises(KeyError, match="needs batch key"):
        model(make_batch(2))


def test_four_modality_model_trains_with_all_six_pairs(toy_modality):
    torch.manual_seed(0)
    cfg = ModelConfig(preset="det_masked_pooled", modalities=["photo", "spectra", "meta", "toy"],
                      embed_dim=32, d_model=16, n_layers=1, n_heads=2, d_ff=32, spec_channels=[4, 4, 4, 4],
                      meta_hidden=32, lc_dropout=0.0, spec_dropout=0.0, meta_dropout=0.0)
    model = build_clip(cfg)
    assert len(model.pairs()) == 6 and len(model.log_logit_scales) == 6
    assert "log_logit_scales.meta__toy" in model.state_dict()
    batch = make_batch(8, n_real=(200, 100, 50))
    batch["toy"] = torch.randn(8, 6)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(5):
        emb = model(batch)
        assert set(emb) == {"photo", "spectra", "meta", "toy"}
        loss = reference_loss(model, emb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    clf = build_classifier(cfg, "toy")
    assert load_pretrained_encoders(clf, model.state_dict(), False) == \
        sorted(k for k in model.state_dict() if k.startswith("encoders.toy."))
