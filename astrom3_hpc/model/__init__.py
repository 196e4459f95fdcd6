"""AstroM3 models: encoders, modality registry, CLIP model, classifiers, presets. Knows nothing about ranks."""

from .classifier import AstroM3Classifier, PretrainedLoadError, build_classifier, load_pretrained_encoders
from .clip import AstroM3CLIP, build_clip, count_parameters, modality_pairs, pair_key, parameter_breakdown
from .galspecnet import GalSpecNet, flatten_size
from .informer import InformerEncoder
from .meta_mlp import MetaMLP
from .presets import PRESET_OPTIONS, resolve
from .registry import (Modality, get_modality, register_modality, registered_modalities,
                       unregister_modality)

__all__ = [
    "AstroM3CLIP", "AstroM3Classifier", "GalSpecNet", "InformerEncoder", "MetaMLP", "Modality",
    "PRESET_OPTIONS", "PretrainedLoadError", "build_classifier", "build_clip", "count_parameters",
    "flatten_size", "get_modality", "load_pretrained_encoders", "modality_pairs", "pair_key",
    "parameter_breakdown", "register_modality", "registered_modalities", "resolve", "unregister_modality",
]
