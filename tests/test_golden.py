"""The project computes what the reference AstroM3 code computes, proven on the reference's own outputs.

../shared/golden (README.md there) holds outputs of the authors' code (MeriDK/AstroM3 @ 8bed51b): light-curve
and spectrum preprocessing, a small-config CLIP model's weights, fixed inputs, embeddings, intermediates,
logits and loss under a stated RNG protocol, classifier heads, and the paper-size state_dict's keys and shapes.
The files are required: without them these tests FAIL (CI always has them).

Preprocessing is checked through the path training uses: raw objects -> ingest (preprocess.py, stored in a real
Zarr store) -> the loader's evaluation window (centre crop) and per-step channels.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, SMALL_LAYOUT

from astrom3_hpc.core.config import ModelConfig
from astrom3_hpc.data.raw import RawObject
from astrom3_hpc.train.loss import ContrastiveLoss
from astrom3_hpc.model.classifier import AstroM3Classifier, load_pretrained_encoders
from astrom3_hpc.model.clip import AstroM3CLIP, count_parameters
from astrom3_hpc.model.keymap import KeyMapError, from_reference, infer_config, project_key, reference_key


def _find_golden() -> Path:
    """$ASTROM3_GOLDEN, else shared/golden beside the checkout (CI), else the developers' /work/shared/golden."""
    for c in (os.environ.get("ASTROM3_GOLDEN"), ROOT.parent / "shared" / "golden", "/work/shared/golden"):
        if c and Path(c).is_dir():
            return Path(c)
    return ROOT.parent / "shared" / "golden"


GOLDEN = _find_golden()
FILES = ("preprocess.npz", "model_small.pt", "paper_state_dict_keys.txt")
N_LC, N_SP, SEED = 16, 8, 1234
MODALITY = {"p": "photo", "s": "spectra", "m": "meta"}


def _require(name: str) -> Path:
    p = GOLDEN / name
    if not p.is_file():
        pytest.fail(f"golden file {p} is missing (set ASTROM3_GOLDEN to the directory holding {list(FILES)})")
    return p


@pytest.fixture(scope="module")
def golden_pre():
    return dict(np.load(_require("preprocess.npz")))


@pytest.fixture(scope="module")
def golden_model():
    return torch.load(_require("model_small.pt"), weights_only=True)


def test_golden_files_present():
    for name in FILES:
        _require(name)


# ---------------------------------------------------------------------------------------------------------------
# preprocessing, through ingest -> store -> loader

class _GoldenSource:
    """The golden raw light curves (and spectra, object i carries spectrum i % 8) as a RawSource."""

    def __init__(self, pre: dict):
        self.pre = pre
        self.rng = np.random.default_rng(0)
        self.meta = self.rng.normal(size=(N_LC, 34)) + np.r_[np.zeros(33), 5.0]  # parallax column > 0 below

    def __len__(self) -> int:
        return N_LC

    def get(self, i: int) -> RawObject:
        sp = self.pre[f"sp_in_{i % N_SP}"]
        aux = self.pre[f"lc_aux_{i}"].astype(np.float64).copy()
        aux[1] = abs(aux[1]) + 0.1  # the store takes raw catalogue values: a period must be positive
        meta = self.meta[i].copy()
        from astrom3_hpc.core.constants import META_COLUMNS
        meta[META_COLUMNS.index("parallax")] = 1.0 + abs(meta[0])
        return RawObject(object_id=1000 + i, label=i % 2, lc=self.pre[f"lc_in_{i}"], spec_wave=sp[:, 0],
                         spec_flux=sp[:, 1], spec_ivar=sp[:, 2], meta=meta, aux=aux, source=f"golden case {i}")

    def describe(self) -> dict:
        return {"kind": "golden"}

    def class_names(self) -> tuple[str, ...]:
        from astrom3_hpc.core.constants import CLASS_NAMES
        return tuple(CLASS_NAMES)


@pytest.fixture(scope="module")
def golden_batch(golden_pre, tmp_path_factory):
    from astrom3_hpc.data.ingest import IngestOptions, ingest
    from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches
    from astrom3_hpc.data.store import Store

    path = tmp_path_factory.mktemp("golden") / "golden.zarr"
    ingest(_GoldenSource(golden_pre), path, IngestOptions(progress=False, layout_kw=SMALL_LAYOUT))
    store = Store(path)
    assert store.attrs["preprocessing"]["spectrum_error_channel"] == "ivar"  # the default is the reference's
    b = TrimodalBatches(LoaderSpec(str(path), seed=42, split="train", train=False, batch_size=N_LC))
    batch = b.make_batch(np.arange(N_LC), 0, 0)
    return {k: (v.numpy().copy() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}, b


@pytest.mark.parametrize("i", range(N_LC))
def test_light_curve_preprocessing_matches_reference(golden_pre, golden_batch, i):
    batch, loader = golden_batch
    ref, ref_mask = golden_pre[f"lc_out_{i}"], golden_pre[f"lc_mask_{i}"]
    lc, mask = batch["lc"][i], batch["lc_mask"][i]
    np.testing.assert_array_equal(mask, ref_mask)
    # Points (time, flux, error) and the two light-curve statistics (log10 MAD, span in years), padding included.
    for ch in (0, 1, 2, 7, 8):
        np.testing.assert_allclose(lc[:, ch], ref[:, ch], rtol=1e-6, atol=1e-6, err_msg=f"case {i} channel {ch}")
    # Channels 3-6: the reference writes the released (already standardised) photometric features into every
    # row, padding rows included. The project standardises the raw catalogue values with its own train-split
    # statistics; the layout (constant over all 200 rows) is the reference's.
    np.testing.assert_array_equal(lc[:, 3:7], np.broadcast_to(loader.aux_steps[i, :4], (200, 4)))


@pytest.mark.parametrize("j", range(N_SP))
def test_spectrum_preprocessing_matches_reference(golden_pre, golden_batch, j):
    batch, _ = golden_batch
    np.testing.assert_allclose(batch["spec"][j], golden_pre[f"sp_out_{j}"], rtol=1e-6, atol=1e-6,
                               err_msg=f"spectrum case {j}")


def test_training_windows_start_where_the_reference_draws_them(golden_batch):
    """Training crops start uniformly in [0, N - 200 - 1] (the reference never takes the last window)."""
    from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches
    from astrom3_hpc.data.store import Store

    _, ev = golden_batch
    tr = TrimodalBatches(LoaderSpec(ev.spec.store, seed=42, split="train", train=True, batch_size=N_LC))
    values = Store(ev.spec.store).root["lc/values"][:]
    for row, n in ((3, 201), (4, 500)):
        first = int(ev.offsets[row])
        assert int(ev.offsets[row + 1]) - first == n
        starts = set()
        for k in range(200):
            lc = tr.make_batch(np.array([row]), epoch=k % 7, batch_index=k)["lc"][0, :, :3].numpy()
            hits = [s for s in range(n - 200 + 1) if np.array_equal(lc, values[first + s:first + s + 200])]
            assert len(hits) == 1
            starts.add(hits[0])
        assert max(starts) <= n - 201 and (row == 3 and starts == {0} or len(starts) > 100)


def test_error_channel_is_recorded_and_shown(golden_pre, golden_batch, tmp_path, capsys):
    """ivar (the reference's input) is the default; the corrected sigma channel is an option; `astrom3 info`
    shows which one a store holds."""
    from astrom3_hpc.cli import main
    from astrom3_hpc.data.ingest import IngestOptions, ingest
    from astrom3_hpc.data.store import Store

    _, loader = golden_batch
    assert main(["info", loader.spec.store]) == 0
    assert '"spectrum_error_channel": "ivar"' in capsys.readouterr().out
    path = tmp_path / "sigma.zarr"
    ingest(_GoldenSource(golden_pre), path,
           IngestOptions(progress=False, error_channel="sigma", layout_kw=SMALL_LAYOUT))
    assert main(["info", str(path)]) == 0
    assert '"spectrum_error_channel": "sigma"' in capsys.readouterr().out
    spec = Store(path).root["spec"][0]
    # Case 0 has all pixels valid: its error row is the interpolated 1/sqrt(ivar) over the MAD.
    sp = golden_pre["sp_in_0"]
    from astrom3_hpc.core.constants import spectrum_grid
    want = np.interp(spectrum_grid(), sp[:, 0], 1 / np.sqrt(sp[:, 2])) / 10.0 ** spec[2, 0]
    np.testing.assert_allclose(spec[1], want, rtol=1e-4)


def test_light_curve_flat_flux_is_guarded():
    """Where the reference divides by MAD = 0 (inf/nan inputs) the project falls back to the spread."""
    from astrom3_hpc.data.preprocess import light_curve

    t = np.arange(50.0)
    f = np.r_[np.full(30, 2.0), np.linspace(1, 3, 20)]
    values, stats = light_curve(np.stack([t, f, np.full(50, 0.1)], 1), 1, "flat")
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(stats))


# ---------------------------------------------------------------------------------------------------------------
# model, through the key map

def _batch(g) -> dict:
    x = g["inputs"]
    return {"lc": x["photometry"], "lc_mask": x["photometry_mask"], "spec": x["spectra"], "meta": x["metadata"]}


def _close(actual, expected, atol, rtol=1e-5, what=""):
    torch.testing.assert_close(actual, expected.to(actual.dtype), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


@pytest.fixture(scope="module")
def clip_model(golden_model):
    cfg = infer_config(golden_model["state_dict"])
    model = AstroM3CLIP(cfg).eval()
    model.load_state_dict(from_reference(golden_model["state_dict"], model.state_dict()), strict=True)
    return model


def test_inferred_config_is_the_golden_config(golden_model):
    c = golden_model["config"]
    cfg = infer_config(golden_model["state_dict"])
    assert (cfg.preset, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff, cfg.meta_hidden, cfg.embed_dim) == \
        ("paper", c["p_d_model"], c["p_e_layers"], c["p_n_heads"], c["p_d_ff"], c["m_hidden_dim"], c["hidden_dim"])
    assert cfg.spec_channels == c["s_conv_channels"][1:]


def test_pe_buffer_matches_the_reference_rows(golden_model, clip_model):
    pe = clip_model.encoders["photo"].embedding.pe
    _close(pe[:200], golden_model["pe_first_seq_len_rows"][0], atol=1e-6, what="pe")


def test_clip_embeddings_intermediates_logits_loss(golden_model, clip_model):
    g = golden_model
    inter = g["clip"]["intermediates"]
    enc = clip_model.encoders
    seen: dict[str, torch.Tensor] = {}
    tops: list[torch.Tensor] = []

    def keep(name):
        return lambda mod, inp, out: seen.__setitem__(name, out.detach().clone())

    def top_queries(mod, inp, out):
        # The selected queries are the rows whose context is not mean(V).
        v = inp[2]
        differs = (out - v.mean(2, keepdim=True)).abs().amax(-1) > 0  # (B, H, L)
        tops.append(torch.stack([torch.nonzero(row).flatten() for row in differs.flatten(0, 1)])
                    .view(out.shape[0], out.shape[1], -1))

    hooks = [enc["photo"].embedding.register_forward_hook(keep("p_embedding")),
             enc["photo"].layers[0].attention.register_forward_hook(keep("p_attn_out_layer0")),
             enc["photo"].layers[0].register_forward_hook(keep("p_layer0")),
             enc["photo"].norm.register_forward_hook(keep("p_encoder_final_norm")),
             enc["spectra"].register_forward_hook(keep("s_encoder_out")),
             enc["meta"].register_forward_hook(keep("m_encoder_out"))]
    hooks += [clip_model.projections[m].register_forward_hook(keep(f"{k}_proj_unnormalised"))
              for k, m in MODALITY.items()]
    hooks += [layer.attention.inner_attention.register_forward_hook(top_queries) for layer in enc["photo"].layers]
    try:
        torch.manual_seed(SEED)  # the README's protocol: 2 torch.randint(200, (200, 6)) draws, in layer order
        with torch.no_grad():
            emb = clip_model(_batch(g))
    finally:
        for h in hooks:
            h.remove()

    for k, m in MODALITY.items():
        _close(emb[m], g["clip"]["embeddings"][k], atol=1e-5, what=f"embedding {k}")
    for name, want in inter.items():
        atol = 1e-4 if name.startswith("p_") else 1e-5
        _close(seen[name], want, atol=atol, what=name)
    assert len(tops) == 2
    for layer, (got, want) in enumerate(zip(tops, g["clip"]["top_query_index"])):
        assert torch.equal(got, torch.as_tensor(want)), f"top_query_index layer {layer}"

    # Logits (rows: first-named modality) and the project's loss code on the same embeddings.
    scales = clip_model.logit_scales()
    assert all(float(s.detach()) == 100.0 for s in scales.values())
    e = {k: emb[m] for k, m in MODALITY.items()}
    logits = {"ps": scales[("photo", "spectra")] * e["p"] @ e["s"].T,
              "sm": scales[("spectra", "meta")] * e["s"] @ e["m"].T,
              "mp": scales[("photo", "meta")] * e["m"] @ e["p"].T}
    for k, want in g["clip"]["logits"].items():
        _close(logits[k], want, atol=1e-3, what=f"logits {k}")
    total, pairs = ContrastiveLoss(["photo", "spectra", "meta"], gather=False)(emb, scales)
    ref = g["clip"]["loss"]
    _close(pairs[("photo", "spectra")], ref["ps"], atol=1e-4, what="loss ps")
    _close(pairs[("spectra", "meta")], ref["sm"], atol=1e-4, what="loss sm")
    _close(pairs[("photo", "meta")], ref["mp"], atol=1e-4, what="loss mp")
    _close(total, ref["total"], atol=1e-4, what="loss total")


def test_fast_kernels_reproduce_the_golden_embeddings_and_loss(golden_model):
    """The CPU fast path (train.kernels: fast; attention through its projections, model/sparse_attention.py)
    meets the reference's outputs at the same tolerances as the eager path, same RNG protocol."""
    from astrom3_hpc.model.fast_ops import set_fast_kernels

    g = golden_model
    model = AstroM3CLIP(infer_config(g["state_dict"])).eval()
    model.load_state_dict(from_reference(g["state_dict"], model.state_dict()), strict=True)
    assert set_fast_kernels(model, True) > 0
    torch.manual_seed(SEED)
    with torch.no_grad():
        emb = model(_batch(g))
    for k, m in MODALITY.items():
        _close(emb[m], g["clip"]["embeddings"][k], atol=1e-5, what=f"fast embedding {k}")
    total, _ = ContrastiveLoss(["photo", "spectra", "meta"], gather=False)(emb, model.logit_scales())
    _close(total, g["clip"]["loss"]["total"], atol=1e-4, what="fast loss total")


def test_other_seed_changes_the_embeddings(golden_model, clip_model):
    """The protocol matters: seed 1235 moves the photometry embeddings far beyond the tolerance."""
    torch.manual_seed(SEED + 1)
    with torch.no_grad():
        p = clip_model(_batch(golden_model))["photo"]
    assert float((p - golden_model["clip"]["embeddings"]["p"]).abs().max()) > 1e-3


def test_probsparse_draws_on_the_cpu_generator_on_any_device():
    """The protocol holds off the CPU too: the reference draws its sample table from the CPU generator, so
    must the `paper` preset when the model lives elsewhere (the `meta` device stands in for a GPU here)."""
    from astrom3_hpc.model.informer import InformerEncoder

    enc = InformerEncoder(d_model=32, n_layers=2, n_heads=4, d_ff=64).eval().to("meta")
    torch.manual_seed(SEED)
    with torch.no_grad():
        enc(torch.zeros(2, 200, 9, device="meta"), torch.ones(2, 200, device="meta"))
    after = torch.get_rng_state()
    torch.manual_seed(SEED)
    for _ in range(2):  # exactly one (L, u) table per layer
        torch.randint(200, (200, 6))
    assert torch.equal(after, torch.get_rng_state())


@pytest.mark.parametrize("fusion", ["avg", "concat"])
def test_classification_mode_logits(golden_model, fusion):
    g = golden_model
    cfg = infer_config(g["state_dict"])
    clf = AstroM3Classifier(cfg, "all", n_classes=10, fusion=fusion).eval()
    sd = from_reference(g["state_dict"])
    load_pretrained_encoders(clf, sd, include_projections=True)
    clf.head.load_state_dict(
        {k[5:]: v for k, v in from_reference(g["classification"][f"fusion_{fusion}"]["fc"]).items()})
    torch.manual_seed(SEED)
    with torch.no_grad():
        logits = clf(_batch(g))
    _close(logits, g["classification"][f"fusion_{fusion}"]["logits"], atol=1e-5, what=f"fusion {fusion}")


@pytest.mark.parametrize("entry,mode", [("photo", "photo"), ("spectra", "spectra"), ("meta", "meta")])
def test_single_modality_classifier_logits(golden_model, entry, mode):
    g = golden_model
    single = g["single_modality"][entry]
    cfg = infer_config(g["state_dict"])
    clf = AstroM3Classifier(cfg, mode, n_classes=10).eval()
    # The reference's stand-alone model: encoder keys without their prefix, plus its own fc.
    prefix = single["weights_from_prefix"] + "."
    encoder_sd = {k[len(prefix):]: v for k, v in g["state_dict"].items() if k.startswith(prefix)}
    mapped = from_reference({**encoder_sd, **single["fc"]}, clf.state_dict(), modality=mode)
    clf.load_state_dict(mapped, strict=True)
    torch.manual_seed(SEED)
    with torch.no_grad():
        logits = clf(_batch(g))
    _close(logits, single["logits"], atol=1e-5, what=f"single-modality {entry}")


# ---------------------------------------------------------------------------------------------------------------
# paper-size key list

def _paper_keys() -> dict[str, tuple[int, ...]]:
    out = {}
    for line in _require("paper_state_dict_keys.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")
            out[key] = tuple(ast.literal_eval(shape))
    return out


def test_every_paper_key_maps_onto_a_project_parameter():
    keys = _paper_keys()
    assert len(keys) == 153
    model = AstroM3CLIP(ModelConfig())  # the default config is the paper's
    own = model.state_dict()
    mapped = set()
    for key, shape in keys.items():
        p = project_key(key)
        if p is None:  # the sinusoidal table: a non-persistent buffer in the project, same shape
            assert shape == (1, 5000, 128) and tuple(model.encoders["photo"].embedding.pe.shape[1:]) == shape[2:]
            continue
        want = (1,) if shape == () else shape  # 0-dim logit scales are (1,) in the project
        assert p in own, f"{key} -> {p} is not a project parameter"
        assert reference_key(p) == key  # the map is one-to-one both ways
        assert tuple(own[p].shape) == want, f"{key}: reference {shape}, project {tuple(own[p].shape)}"
        mapped.add(p)
    assert mapped == set(own), f"project parameters without a reference key: {sorted(set(own) - mapped)}"
    assert count_parameters(model, trainable_only=True) == 15_869_827
    # And a paper-size reference state_dict with these shapes loads through the key map and gives the config.
    fake = {k: torch.zeros(s) for k, s in keys.items()}
    fake["photometry_encoder.enc_embedding.position_embedding.pe"] = \
        model.encoders["photo"].embedding.pe[None].expand(1, 200, 128).clone()
    cfg = infer_config(fake)
    assert (cfg.d_model, cfg.n_layers, cfg.d_ff, cfg.spec_channels, cfg.meta_hidden, cfg.embed_dim) == \
        (128, 8, 512, [64, 64, 32, 32], 512, 512)
    from_reference(fake, own)


def test_key_map_rejects_unknown_and_misshapen_keys(golden_model):
    sd = dict(golden_model["state_dict"])
    model = AstroM3CLIP(infer_config(sd))
    with pytest.raises(KeyMapError, match="spectra_encoder.layers.4.weight"):
        from_reference({**sd, "spectra_encoder.layers.4.weight": torch.zeros(1)}, model.state_dict())
    bad = {**sd, "metadata_proj.weight": torch.zeros(64, 65)}
    with pytest.raises(KeyMapError, match=r"metadata_proj.weight.*\(64, 65\)"):
        from_reference(bad, model.state_dict())
    with pytest.raises(KeyMapError, match="missing key.*'spectra_proj.bias'"):
        from_reference({k: v for k, v in sd.items() if k != "spectra_proj.bias"}, model.state_dict())
    with pytest.raises(KeyMapError, match="sinusoidal"):
        from_reference({**sd, "photometry_encoder.enc_embedding.position_embedding.pe": torch.ones(1, 200, 32)})
