"""Model presets: fill the `None` options of a ModelConfig.

    paper              deterministic_eval=False, attn_padding_mask=False, lc_pooling="flatten",
                       attn_head_layout="reference"   (the reference implementation, quirks included)
    det_masked_pooled  deterministic_eval=True,  attn_padding_mask=True,  lc_pooling="mean",
                       attn_head_layout="standard"
    periodic           det_masked_pooled's options and lc_encoder="periodic" (model/periodic.py: real time,
                       phase at the period and twice it, the whole curve folded; model.periodic_views picks them)
                       and the classical per-object features (model.periodic_features)

Explicitly set fields win over the preset.
"""

from __future__ import annotations

import dataclasses

from ..core.config import ConfigError, ModelConfig

PRESET_OPTIONS: dict[str, dict[str, object]] = {
    "paper": {
        "deterministic_eval": False,
        "attn_padding_mask": False,
        "lc_pooling": "flatten",
        "attn_head_layout": "reference",
    },
    "det_masked_pooled": {
        "deterministic_eval": True,
        "attn_padding_mask": True,
        "lc_pooling": "mean",
        "attn_head_layout": "standard",
    },
    "periodic": {
        "deterministic_eval": True,
        "attn_padding_mask": True,
        "lc_pooling": "mean",
        "attn_head_layout": "standard",
        "lc_encoder": "periodic",
        "periodic_features": True,
    },
}


def preset_values(cfg: ModelConfig) -> dict[str, object]:
    """The fields a preset controls, as `cfg` resolves them: config.yaml records them as null (the preset
    decides), so run.json records what the preset decided: a later version's preset may decide otherwise."""
    resolved = resolve(cfg)
    return {k: getattr(resolved, k) for k in dict.fromkeys(k for opts in PRESET_OPTIONS.values() for k in opts)}


def resolve(cfg: ModelConfig) -> ModelConfig:
    """Return a copy of `cfg` with every preset-controlled None filled from `cfg.preset`; validates it."""
    if cfg.preset not in PRESET_OPTIONS:
        raise ConfigError(f"config key 'model.preset' must be one of {sorted(PRESET_OPTIONS)}, got {cfg.preset!r}")
    fill = {k: v for k, v in PRESET_OPTIONS[cfg.preset].items() if getattr(cfg, k) is None}
    out = dataclasses.replace(cfg, modalities=list(cfg.modalities), spec_channels=list(cfg.spec_channels), **fill)
    out.validate()
    return out
