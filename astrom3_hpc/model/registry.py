"""Modality registry: name -> (encoder factory, batch keys the encoder reads).

A factory takes the resolved `ModelConfig` and returns an `nn.Module` with an `out_features` attribute; the
model calls `encoder(*(batch[k] for k in keys))`. Built-ins:

    photo    InformerEncoder(lc, lc_mask), or PeriodicEncoder(lc, lc_mask, lc_period, lc_period_search[,
             lc_features][, lc_fold]) when model.lc_encoder is "periodic"
    spectra  GalSpecNet(spec)
    meta     MetaMLP(meta)

Adding a modality: `register_modality("name", factory, ("key",))`, then list "name" in `model.modalities`.
Every pair of configured modalities gets its own temperature and loss term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from .galspecnet import build_galspecnet
from .informer import build_informer
from .meta_mlp import build_meta_mlp

EncoderFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class Modality:
    name: str
    factory: EncoderFactory
    keys: tuple[str, ...]
    config_keys: Callable[..., tuple[str, ...]] | None = None  # keys that depend on the config, if any

    def keys_for(self, cfg) -> tuple[str, ...]:
        return self.config_keys(cfg) if self.config_keys is not None else self.keys

    def build(self, cfg) -> nn.Module:
        enc = self.factory(cfg)
        if not isinstance(enc, nn.Module):
            raise TypeError(f"modality '{self.name}': factory returned {type(enc).__name__}, not an nn.Module")
        n = getattr(enc, "out_features", None)
        if not isinstance(n, int) or n < 1:
            raise TypeError(f"modality '{self.name}': encoder needs a positive int attribute 'out_features'")
        return enc


_REGISTRY: dict[str, Modality] = {}


def register_modality(name: str, factory: EncoderFactory, keys: tuple[str, ...] | list[str], *,
                      overwrite: bool = False) -> Modality:
    """Register an encoder factory for modality `name` reading `keys` from the batch."""
    if not name or "__" in name or "." in name:
        raise ValueError(f"modality name {name!r} must be non-empty without '__' or '.' (used in parameter keys)")
    if isinstance(keys, str):
        keys = (keys,)
    keys = tuple(keys)
    if not keys:
        raise ValueError(f"modality '{name}' must read at least one batch key")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"modality '{name}' is already registered (pass overwrite=True to replace it)")
    mod = Modality(name, factory, keys)
    _REGISTRY[name] = mod
    return mod


def unregister_modality(name: str) -> None:
    """Remove a registered modality (tests; built-ins may be removed too, at the caller's risk)."""
    _REGISTRY.pop(name, None)


def get_modality(name: str) -> Modality:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown modality '{name}'; registered: {sorted(_REGISTRY)}") from None


def registered_modalities() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def _build_photo(cfg) -> nn.Module:
    if getattr(cfg, "lc_encoder", None) == "periodic":
        from .periodic import build_periodic

        return build_periodic(cfg)
    return build_informer(cfg)


def _photo_keys(cfg) -> tuple[str, ...]:
    if getattr(cfg, "lc_encoder", None) == "periodic":
        from .periodic import optional_keys

        extra = optional_keys(cfg.periodic_views, bool(cfg.periodic_features))
        return ("lc", "lc_mask", "lc_period", "lc_period_search", *extra)
    return ("lc", "lc_mask")


def batch_keys(cfg) -> set[str]:
    """Every batch key the encoders of this (resolved) model config read: tells the loader what to prepare
    (the classical light-curve features cost a pass over the store the first time)."""
    return {k for m in cfg.modalities for k in get_modality(m).keys_for(cfg)}


# Batch keys the loader prepares only on request: per-object arrays computed once per store (data/store_cache.py).
CACHED_INPUTS = ("lc_features", "lc_fold")


def cached_inputs(cfg) -> dict[str, bool]:
    """LoaderSpec flags for the cached per-object inputs this (resolved) model config reads."""
    keys = batch_keys(cfg)
    return {k: k in keys for k in CACHED_INPUTS}


_REGISTRY["photo"] = Modality("photo", _build_photo, ("lc", "lc_mask"), _photo_keys)
register_modality("spectra", build_galspecnet, ("spec",))
register_modality("meta", build_meta_mlp, ("meta",))
