"""The one translation between the reference AstroM3 state_dict (github MeriDK/AstroM3) and this project's.

Reference key                                                  project key
  logit_scale_ps / _mp / _sm              ()                   log_logit_scales.photo__spectra / photo__meta /
                                                               spectra__meta  (1,)  (a 0-dim parameter crashes
                                                               deepspeed.initialize, so the project keeps (1,))
  photometry_encoder.enc_embedding.value_embedding.tokenConv.  encoders.photo.embedding.token_conv.
  photometry_encoder.enc_embedding.position_embedding.pe       none: the project's sinusoidal table is a
                                                               non-persistent buffer; the reference's is checked
                                                               against it (same formula) and then dropped
  photometry_encoder.encoder.attn_layers.{i}.                  encoders.photo.layers.{i}.
  photometry_encoder.encoder.norm.                             encoders.photo.norm.
  spectra_encoder.layers.{0,3,6,9}.                            encoders.spectra.layers.{0,3,6,9}.
  metadata_encoder.model.{0,3}.                                encoders.meta.model.{0,3}.
  {photometry,spectra,metadata}_proj.                          projections.{photo,spectra,meta}.
  fc.                                                          head.  (classification mode)

The loss is symmetric in each pair, so the reference's `mp` (rows M, columns P) is the project's (photo, meta).
Single-modality classifiers of the reference are the encoder with its prefix removed plus `fc`; they map with
`modality=` given (`project_key`, `from_reference`); `reference_key` is the inverse. Everything else is an
error that names the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..core.config import ModelConfig
from .informer import sinusoidal_positions

PE_KEY = "photometry_encoder.enc_embedding.position_embedding.pe"
LOGIT_SCALE_KEYS = {"logit_scale_ps": "photo__spectra", "logit_scale_mp": "photo__meta",
                    "logit_scale_sm": "spectra__meta"}
ENCODER_PREFIX = {"photo": "photometry_encoder.", "spectra": "spectra_encoder.", "meta": "metadata_encoder."}
_PROJ = {"photometry_proj.": "projections.photo.", "spectra_proj.": "projections.spectra.",
         "metadata_proj.": "projections.meta."}
# Inside each encoder: (reference pattern, project replacement), reference prefix already removed.
_ENCODER_RULES = {
    "photo": [
        (r"^enc_embedding\.value_embedding\.tokenConv\.weight$", "embedding.token_conv.weight"),
        (r"^encoder\.attn_layers\.(\d+)\.(attention\.(?:query|key|value|out)_projection\.(?:weight|bias))$",
         r"layers.\1.\2"),
        (r"^encoder\.attn_layers\.(\d+)\.((?:conv1|conv2|norm1|norm2)\.(?:weight|bias))$", r"layers.\1.\2"),
        (r"^encoder\.norm\.(weight|bias)$", r"norm.\1"),
    ],
    "spectra": [(r"^layers\.(\d+)\.(weight|bias)$", r"layers.\1.\2")],
    "meta": [(r"^model\.(\d+)\.(weight|bias)$", r"model.\1.\2")],
}
PE_ATOL = 1e-5  # float32 sin/cos of the same formula; a real difference is O(1)


class KeyMapError(ValueError):
    """A reference state_dict does not fit; the message names the key."""


def _encoder_key(modality: str, rest: str) -> str | None:
    for pat, rep in _ENCODER_RULES[modality]:
        if re.match(pat, rest):
            return re.sub(pat, rep, rest)
    return None


def project_key(ref_key: str, modality: str | None = None) -> str | None:
    """Project key for a reference key; None for the `pe` buffer (no project counterpart).

    modality=None: a CLIP / classification-mode AstroM3 key. modality="photo"|"spectra"|"meta": a key of the
    reference's stand-alone single-modality model (encoder keys without prefix, plus fc).
    """
    if ref_key.startswith("fc."):
        return "head." + ref_key[3:]
    if modality is not None:
        if ref_key == PE_KEY[len(ENCODER_PREFIX["photo"]):] and modality == "photo":
            return None
        k = _encoder_key(modality, ref_key)
        if k is None:
            raise KeyMapError(f"reference key {ref_key!r} is not part of the {modality} encoder")
        return f"encoders.{modality}.{k}"
    if ref_key == PE_KEY:
        return None
    if ref_key in LOGIT_SCALE_KEYS:
        return f"log_logit_scales.{LOGIT_SCALE_KEYS[ref_key]}"
    for ref, own in _PROJ.items():
        if ref_key.startswith(ref) and ref_key[len(ref):] in ("weight", "bias"):
            return own + ref_key[len(ref):]
    for mod, prefix in ENCODER_PREFIX.items():
        if ref_key.startswith(prefix):
            k = _encoder_key(mod, ref_key[len(prefix):])
            if k is not None:
                return f"encoders.{mod}.{k}"
    raise KeyMapError(f"reference key {ref_key!r} has no counterpart in the project's model")


def reference_key(own_key: str) -> str:
    """Reference key of a project CLIP / classification-mode key (the inverse of project_key)."""
    scales = {v: k for k, v in LOGIT_SCALE_KEYS.items()}
    head, _, rest = own_key.partition(".")
    if head == "log_logit_scales" and rest in scales:
        return scales[rest]
    if head == "head":
        return "fc." + rest
    if head == "projections":
        mod, _, tail = rest.partition(".")
        for ref, own in _PROJ.items():
            if own == f"projections.{mod}.":
                return ref + tail
    if head == "encoders":
        mod, _, tail = rest.partition(".")
        if mod == "photo":
            if tail == "embedding.token_conv.weight":
                return ENCODER_PREFIX[mod] + "enc_embedding.value_embedding.tokenConv.weight"
            if tail.startswith("layers."):
                return ENCODER_PREFIX[mod] + "encoder.attn_" + tail
            if tail.startswith("norm."):
                return ENCODER_PREFIX[mod] + "encoder." + tail
        elif mod in ENCODER_PREFIX:
            return ENCODER_PREFIX[mod] + tail
    raise KeyMapError(f"project key {own_key!r} has no counterpart in the reference model")


def _check_pe(pe: torch.Tensor, where: str) -> None:
    if pe.dim() != 3 or pe.shape[0] != 1:
        raise KeyMapError(f"{where}: key {PE_KEY!r} has shape {tuple(pe.shape)}, expected (1, max_len, d_model)")
    want = sinusoidal_positions(pe.shape[1], pe.shape[2])
    diff = float((pe[0].float() - want).abs().max())
    if diff > PE_ATOL:
        raise KeyMapError(f"{where}: key {PE_KEY!r} is not the sinusoidal table the project computes "
                          f"(max difference {diff:.3g})")


def from_reference(state_dict: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor] | None = None, *,
                   modality: str | None = None, where: str = "reference state_dict") -> dict[str, torch.Tensor]:
    """Translate a reference state_dict into project keys.

    The 0-dim logit scales become shape (1,); `pe` is checked against the project's formula and dropped.
    With `target` (the project model's state_dict), every key must exist there with the same shape and every
    target key must be provided: strict loading, errors name the key and `where` (e.g. the file).
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise KeyMapError(f"{where}: key {k!r} is not a tensor ({type(v).__name__})")
        try:
            own = project_key(k, modality)
        except KeyMapError as e:
            raise KeyMapError(f"{where}: {e}") from None
        if own is None:
            _check_pe(v, where)
            continue
        if k in LOGIT_SCALE_KEYS:
            if v.numel() != 1:
                raise KeyMapError(f"{where}: key {k!r} has shape {tuple(v.shape)}, expected a scalar")
            v = v.reshape(1)
        if own in out:
            raise KeyMapError(f"{where}: keys map twice onto {own!r} (at {k!r})")
        out[own] = v
    if target is not None:
        for own, v in out.items():
            if own not in target:
                ref = next(k for k in state_dict if project_key(k, modality) == own)
                raise KeyMapError(f"{where}: key {ref!r} ({own}) does not exist in the model built from this "
                                  f"config")
            if tuple(target[own].shape) != tuple(v.shape):
                ref = next(k for k in state_dict if project_key(k, modality) == own)
                raise KeyMapError(f"{where}: key {ref!r} has shape {tuple(v.shape)}, the model expects "
                                  f"{tuple(target[own].shape)} ({own})")
        missing = sorted(set(target) - set(out))
        if missing:
            names = [reference_key(k) if modality is None else k for k in missing]
            raise KeyMapError(f"{where}: missing key(s) {names}")
    return out


def infer_config(state_dict: Mapping[str, torch.Tensor], n_heads: int = 4, where: str = "reference state_dict"
                 ) -> ModelConfig:
    """A `paper`-preset ModelConfig with the shapes of a reference CLIP state_dict.

    Heads are not visible in any shape (Q/K/V are d_model x d_model): they default to the paper's 4.
    """
    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise KeyMapError(f"{where}: required key {key!r} is missing (is this an AstroM3 CLIP state_dict?)")
        return tuple(state_dict[key].shape)

    tok = shape("photometry_encoder.enc_embedding.value_embedding.tokenConv.weight")
    if len(tok) != 3 or tok[2] != 3:
        raise KeyMapError(f"{where}: key 'photometry_encoder.enc_embedding.value_embedding.tokenConv.weight' has "
                          f"shape {tok}, expected (d_model, 9, 3)")
    d_model = tok[0]
    layer_ids = sorted({int(m.group(1)) for k in state_dict
                        if (m := re.match(r"^photometry_encoder\.encoder\.attn_layers\.(\d+)\.", k))})
    if not layer_ids or layer_ids != list(range(len(layer_ids))):
        raise KeyMapError(f"{where}: encoder layer indices {layer_ids} are not 0..n-1")
    d_ff = shape("photometry_encoder.encoder.attn_layers.0.conv1.weight")[0]
    conv_ids = sorted({int(m.group(1)) for k in state_dict
                       if (m := re.match(r"^spectra_encoder\.layers\.(\d+)\.weight$", k))})
    spec_channels = [shape(f"spectra_encoder.layers.{i}.weight")[0] for i in conv_ids]
    meta_hidden = shape("metadata_encoder.model.0.weight")[0]
    embed_dim = shape("metadata_proj.weight")[0]
    cfg = ModelConfig(preset="paper", embed_dim=embed_dim, d_model=d_model, n_layers=len(layer_ids),
                      n_heads=n_heads, d_ff=d_ff, spec_channels=spec_channels, meta_hidden=meta_hidden)
    try:
        cfg.validate()
    except ValueError as e:
        raise KeyMapError(f"{where}: inferred config is invalid: {e}") from None
    return cfg
