"""Typed run configuration: dataclasses loaded from YAML, validated on load, dumped resolved into run dirs.

A config file names only what differs from the defaults; unknown keys are errors (a typo must not silently
fall back to a default), and so is a key given twice in one file. Overrides from the command line use dotted
keys: `train.epochs=3`. Reading the YAML (files, `base:`, cells tables, overrides) is core/config_yaml.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The YAML side (files, `base:`, cells tables, --set), re-exported: `from astrom3_hpc.core.config import ConfigError`.
from .config_yaml import ConfigError, cell_values, load_yaml_tree, merge, parse_overrides
from .constants import MODALITIES, MODES, SPLIT_SEEDS, SUBSET_FACTORS


CUDA_DEFAULT_WORKERS = 4  # divides the default data.streams (8)
COMPILE_BACKENDS = ("inductor", "aot_eager")  # torch.compile backends train.compile_backend takes


@dataclass
class DataConfig:
    store: str = "data/synthetic.zarr"
    seed: int = 42  # split seed; pretraining and fine-tuning must agree on it
    subset: str = "full"
    in_memory: bool = False
    # Loader worker processes; None: 0 on CPU (the cores train), CUDA_DEFAULT_WORKERS on CUDA (batches are built
    # while the GPU computes). See data/loader.py.
    num_workers: int | None = None
    buffer_chunks: int = 4  # chunks held in the shuffle buffer
    streams: int = 8  # interleaved runs of batches per epoch; num_workers should divide it (data/loader.py)
    use_rfr_score: bool = True  # rfr_score is a likely label leak; False zeroes that channel
    # Encoders with a full-curve fold view (model.periodic_views fold_full): K > 0 trains on one of K folds of a
    # random `lc_fold_resample_fraction` of each object's points per batch (data/lc_folds.py); evaluation
    # always folds every point.
    lc_fold_resamples: int = 0
    lc_fold_resample_fraction: float = 0.5
    # Encoders with the classical features (model.periodic_features): true trains on the features of the same
    # random point subsets as the resampled folds (data/lc_features.py); needs lc_fold_resamples > 0.
    lc_feature_resampling: bool = False

    def validate(self) -> None:
        _check(self.seed in SPLIT_SEEDS, "data.seed", f"must be one of {SPLIT_SEEDS}, got {self.seed}")
        _check(bool(self.store.strip()), "data.store", "must name a store (an empty one read the working directory)")
        _check(self.subset in SUBSET_FACTORS, "data.subset", f"must be one of {list(SUBSET_FACTORS)}")
        _check(self.num_workers is None or self.num_workers >= 0, "data.num_workers", "must be >= 0 or null")
        _check(self.buffer_chunks >= 1, "data.buffer_chunks", "must be >= 1")
        _check(self.streams >= 1, "data.streams", "must be >= 1")
        _check(isinstance(self.lc_fold_resamples, int) and self.lc_fold_resamples >= 0, "data.lc_fold_resamples",
               "must be an integer >= 0 (0: off)")
        _check(0.0 < self.lc_fold_resample_fraction <= 1.0, "data.lc_fold_resample_fraction", "must be in (0, 1]")
        _check(not self.lc_feature_resampling or self.lc_fold_resamples > 0, "data.lc_feature_resampling",
               "needs data.lc_fold_resamples > 0 (the number of point subsets per object)")

    def workers(self, cuda: bool) -> int:
        """num_workers resolved for the device the job trains on."""
        if self.num_workers is not None:
            return self.num_workers
        return CUDA_DEFAULT_WORKERS if cuda else 0


@dataclass
class ModelConfig:
    preset: str = "paper"  # "paper", "det_masked_pooled" or "periodic"; explicit fields below override the preset
    modalities: list[str] = field(default_factory=lambda: ["photo", "spectra", "meta"])
    embed_dim: int = 512
    # Light-curve Informer
    d_model: int = 128
    n_layers: int = 8
    n_heads: int = 4
    d_ff: int = 512
    prob_factor: int = 1
    lc_dropout: float = 0.245
    deterministic_eval: bool | None = None  # None: taken from the preset
    attn_padding_mask: bool | None = None
    lc_pooling: str | None = None  # "flatten" (paper) or "mean"
    # How per-head attention outputs are merged back into (B, L, d_model). "reference": the reference's
    # (B, H, L, D) -> view(B, L, H*D) that mixes heads and positions (Informer2020 issue #100, unfixed in the
    # copy the reference uses); "standard": transpose to (B, L, H, D) first. None: taken from the preset.
    attn_head_layout: str | None = None
    # Light-curve encoder: None/"informer" (the paper's) or "periodic" (model/periodic.py, the `periodic`
    # preset) with the views it builds.
    lc_encoder: str | None = None
    # "fold_full" (every point folded, cached per store) replaced the window's "fold" in the default: lower
    # validation loss on all three light-curve datasets, higher mean validation macro-F1 (docs/lightcurves_results.md).
    periodic_views: list[str] = field(default_factory=lambda: ["time", "phase", "fold_full"])
    # The periodic encoder also gets the classical baseline's per-object feature vector (data/lc_features.py),
    # quantile-normalised with the seed's train split. None: taken from the preset (on for `periodic`).
    periodic_features: bool | None = None
    # Their first layer: "linear", "periodic" (learned sin/cos frequencies per feature) or "piecewise" (each
    # feature spread over its train quantile slices), model/periodic.py.
    periodic_feature_embedding: str = "linear"
    # The fold views' convolutions also get log10 of the period they were folded at, as a constant fifth channel:
    # a sinusoid folded at 0.04 d (delta Scuti) and at 0.2 d (a contact binary at half its orbit) look alike.
    periodic_fold_period: bool = False
    # The Informer over the 200-point window (the token branch; views time and phase are its channels). false:
    # the encoder is the folds, the per-object channels and the features alone.
    periodic_tokens: bool = True
    # Spectra GalSpecNet
    spec_channels: list[int] = field(default_factory=lambda: [64, 64, 32, 32])
    spec_dropout: float = 0.339
    # Metadata MLP
    meta_hidden: int = 512
    meta_dropout: float = 0.160
    logit_scale_init: float = 100.0
    logit_scale_max: float = 100.0

    def validate(self) -> None:
        _check(self.preset in ("paper", "det_masked_pooled", "periodic"), "model.preset",
               "must be 'paper', 'det_masked_pooled' or 'periodic'")
        _check(self.lc_encoder in (None, "informer", "periodic"), "model.lc_encoder", "must be informer or periodic")
        _check(set(self.periodic_views) <= {"time", "phase", "fold", "fold_full"}, "model.periodic_views",
               "must be a list drawn from time, phase, fold, fold_full")
        # A view named twice is the same model, yet another run to resume and to the sweep's records.
        _check(0 < len(self.periodic_views) == len(set(self.periodic_views)), "model.periodic_views",
               f"must name each view once, at least one, got {self.periodic_views}")
        _check(isinstance(self.periodic_fold_period, bool), "model.periodic_fold_period", "must be true or false")
        _check(isinstance(self.periodic_tokens, bool), "model.periodic_tokens", "must be true or false")
        _check(self.periodic_tokens or not {"time", "phase"} & set(self.periodic_views), "model.periodic_views",
               "time and phase are channels of the Informer's tokens: without model.periodic_tokens choose from "
               "fold, fold_full")
        _check(self.periodic_feature_embedding in ("linear", "periodic", "piecewise"),
               "model.periodic_feature_embedding", "must be linear, periodic or piecewise")
        _check(len(self.modalities) >= 2 and len(set(self.modalities)) == len(self.modalities),
               "model.modalities", "needs at least two distinct modalities")
        _check(self.n_heads >= 1, "model.n_heads", "must be >= 1")
        _check(self.d_model >= 1 and self.meta_hidden >= 1, "model.d_model", "d_model and meta_hidden must be >= 1")
        _check(self.d_model % self.n_heads == 0, "model.d_model", "must be divisible by model.n_heads")
        _check(self.lc_pooling in (None, "flatten", "mean"), "model.lc_pooling", "must be flatten or mean")
        _check(self.attn_head_layout in (None, "reference", "standard"), "model.attn_head_layout",
               "must be reference or standard")
        _check(self.embed_dim >= 1, "model.embed_dim", "must be >= 1")
        _check(self.prob_factor >= 1, "model.prob_factor", "must be >= 1")
        _check(self.n_layers >= 1 and self.d_ff >= 1, "model.n_layers", "n_layers and d_ff must be >= 1")
        _check(len(self.spec_channels) >= 1 and all(c >= 1 for c in self.spec_channels),
               "model.spec_channels", "must be a non-empty list of positive channel counts")
        _check(1.0 <= self.logit_scale_init <= self.logit_scale_max, "model.logit_scale_init",
               "must lie in [1, model.logit_scale_max]")
        _check(not (self.attn_padding_mask is True and self.attn_head_layout == "reference"),
               "model.attn_padding_mask", "needs model.attn_head_layout 'standard' (the reference layout "
               "mixes positions across heads, so padded steps would leak into real ones)")
        for k in ("lc_dropout", "spec_dropout", "meta_dropout"):
            _check(0.0 <= getattr(self, k) < 1.0, f"model.{k}", "must be in [0, 1)")


@dataclass
class OptimConfig:
    lr: float = 0.00392
    betas: list[float] = field(default_factory=lambda: [0.926, 0.999])
    weight_decay: float = 0.00467
    warmup_epochs: int = 10
    warmup_start_factor: float = 1e-5
    scheduler: str = "plateau"  # "plateau" (paper) or "cosine"
    plateau_factor: float = 0.1125
    plateau_patience: int = 3
    grad_clip: float = 45.0  # max global gradient norm; 0: no clipping (the reference's clip_grad False)

    def validate(self) -> None:
        _check(self.lr > 0, "optim.lr", "must be > 0")
        _check(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas",
               "must be two numbers in [0, 1)")
        _check(self.scheduler in ("plateau", "cosine"), "optim.scheduler", "must be plateau or cosine")
        _check(self.warmup_epochs >= 0, "optim.warmup_epochs", "must be >= 0")
        _check(self.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0: no clipping)")
        _check(0.0 < self.warmup_start_factor <= 1.0, "optim.warmup_start_factor", "must be in (0, 1]")
        _check(0.0 < self.plateau_factor < 1.0, "optim.plateau_factor", "must be in (0, 1)")
        _check(self.plateau_patience >= 0, "optim.plateau_patience", "must be >= 0")


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 512  # global batch: the contrastive batch spans all ranks
    early_stop_patience: int = 6  # epochs without a lower validation loss before stopping; 0: never stop early
    zero_stage: int = 0
    precision: str = "fp32"  # "fp32" or "bf16" (autocast over fp32 weights, see train/engine.py)
    device: str = "auto"  # "auto": CUDA when torch sees a GPU, else CPU; "cuda": refuse to start without one
    deterministic: bool = False
    max_steps_per_epoch: int | None = None  # cap for demos and tests
    eval_max_batches: int | None = None
    checkpoint_every_epochs: int = 1
    log_every_steps: int = 10  # also how often ranks agree on a preemption signal (one host sync)
    tf32: bool = True  # CUDA only: TF32 tensor cores for fp32 matmuls and convolutions
    cudnn_benchmark: bool = True  # CUDA only: cuDNN autotuning (off when deterministic)
    # CPU execution (benchmarks/train_step.py measures the choices): "fast" = cheaper dropout masks
    # (model/fast_ops.py), torch's fused CPU Adam, heap-kept activation buffers; "plain" = stock torch ops.
    kernels: str = "fast"
    threads: int = 0  # intra-op threads per rank; 0 = the cores this process may use / ranks on the node
    # torch.compile (inductor) of every encoder's forward, in place (state_dict keys unchanged). Off by default:
    # on the CPU class the hand-fused fast kernels are faster and start at once; for CUDA runs
    # (benchmarks/gpu_check.sh measures both).
    compile: bool = False
    # inductor generates kernels (Triton on CUDA, C++ on CPU: about a minute of gcc per process on 2 cores);
    # aot_eager traces the same graphs forward and backward and runs them with torch's own ops, so it checks
    # that a model compiles, in seconds and without a compiler (the CPU dry run of gpu_check.sh).
    compile_backend: str = "inductor"
    # Seed of the initial weights and of dropout; None: data.seed. Members of a seed ensemble (`astrom3
    # ensemble`) differ only in it: same split, same batch order.
    model_seed: int | None = None
    # > 0: validation, the best weights and the test use an exponential moving average of the weights with this
    # horizon in epochs (train/weight_average.py); 0: the trained weights themselves.
    ema_epochs: float = 0.0

    def validate(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _check(self.early_stop_patience >= 0, "train.early_stop_patience", "must be >= 0 (0 = off)")
        _check(self.checkpoint_every_epochs >= 1, "train.checkpoint_every_epochs", "must be >= 1")
        for k in ("max_steps_per_epoch", "eval_max_batches"):
            _check(getattr(self, k) is None or getattr(self, k) >= 1, f"train.{k}", "must be >= 1 or null (no cap)")
        _check(self.ema_epochs >= 0, "train.ema_epochs", "must be >= 0 (0 = off)")
        _check(self.kernels in ("fast", "plain"), "train.kernels", "must be fast or plain")
        # torch crashed (SIGSEGV, no message) asked for 5,000 threads.
        _check(0 <= self.threads <= MAX_THREADS, "train.threads", f"must be in 0..{MAX_THREADS} (0 = automatic)")
        # Seeds derived from it (members: + 15 at most; dropout: x 1000 + rank) must fit torch's 64 bits; past them
        # the error was "Overflow when unpacking long long", naming no key.
        _check(self.model_seed is None or 0 <= self.model_seed < 2**32 - 16, "train.model_seed",
               "must be in 0..4294967279 or null")
        _check(isinstance(self.compile, bool), "train.compile", "must be true or false")
        _check(self.compile_backend in COMPILE_BACKENDS, "train.compile_backend",
               f"must be one of {', '.join(COMPILE_BACKENDS)}")
        _check(self.batch_size >= 2, "train.batch_size", "must be >= 2")
        _check(self.zero_stage in (0, 1, 2), "train.zero_stage", "must be 0, 1 or 2")
        _check(self.precision in ("fp32", "bf16"), "train.precision", "must be fp32 or bf16")
        _check(self.log_every_steps >= 1, "train.log_every_steps", "must be >= 1")
        _check(self.device in ("auto", "cuda"), "train.device", "must be auto or cuda")


MAX_THREADS = 1024


@dataclass
class FinetuneConfig:
    mode: str = "photo"  # photo | spectra | meta | all
    init: str = "scratch"  # "scratch" or a pretraining run directory
    fusion: str = "avg"  # for mode "all": avg | concat
    freeze_encoders: bool = False
    # "balanced": each class's loss weighted by n_train / (n_classes * n_class), the classical baseline's
    # weighting (macro-F1 counts a rare class as much as a common one); "none": the reference's plain loss.
    class_weights: str = "none"
    # "baseline": a second target, the classical baseline's class probabilities for each training object, each
    # from a baseline fitted without that object (5-fold cross-fitting on the train split); the loss is
    # (1 - distill_weight) x cross-entropy with the label + distill_weight x cross-entropy with those
    # probabilities. Light-curve stores with finetune.mode photo only. Inference is the network alone.
    distill: str = "none"
    distill_weight: float = 0.5
    # The label's cross-entropy against (1 - e) x one-hot + e / n_classes (Szegedy et al. 2016): the network is
    # not pushed to certainty on a training set it can learn by heart. 0: the reference's plain loss. The
    # validation loss that picks the kept epoch stays the plain one.
    label_smoothing: float = 0.0
    # True: validation and test predictions are the mean of the network's class probabilities and the classical
    # baseline's (`astrom3 baseline`, fitted on the same train split at the end of the run); metrics.json keeps
    # each alone under "network" and "baseline". Training and the kept epoch are the network's alone. Light-curve
    # stores with finetune.mode photo only (docs/lightcurves.md, "Which model to run").
    average_baseline: bool = False
    # > 1: that many classifiers trained side by side in the run, initial weights from train.model_seed (or
    # data.seed) + 0, 1, ...; predictions, validation and the kept epoch use their mean class probabilities
    # (model/members.py). The cost is that many trainings. Each member's gradient is clipped alone, which ZeRO
    # cannot do (DeepSpeed clips all parameters by one norm): with a clip, members need train.zero_stage 0.
    members: int = 1
    # A pretraining run that does not know its split seed (imported weights): fine-tuning needs either the
    # seed it was pretrained on (checked against data.seed like any run's) or the explicit acknowledgement.
    pretrain_seed: int | None = None
    allow_unknown_seed: bool = False

    def validate(self) -> None:
        _check(self.mode in MODES, "finetune.mode", f"must be one of {', '.join(MODES)}")
        _check(self.fusion in ("avg", "concat"), "finetune.fusion", "must be avg or concat")
        _check(self.class_weights in ("none", "balanced"), "finetune.class_weights", "must be none or balanced")
        _check(self.distill in ("none", "baseline"), "finetune.distill", "must be none or baseline")
        _check(0.0 <= self.distill_weight <= 1.0, "finetune.distill_weight", "must be in [0, 1]")
        _check(0.0 <= self.label_smoothing < 1.0, "finetune.label_smoothing", "must be in [0, 1)")
        _check(1 <= self.members <= 16, "finetune.members", "must be in 1..16")
        _check(not self.average_baseline or self.mode == "photo", "finetune.average_baseline",
               "needs finetune.mode photo (the baseline reads light curves only)")
        _check(self.distill == "none" or self.mode == "photo", "finetune.distill",
               "baseline distillation needs finetune.mode photo (the baseline reads light curves only)")
        _check(self.pretrain_seed is None or self.pretrain_seed in SPLIT_SEEDS, "finetune.pretrain_seed",
               f"must be one of {SPLIT_SEEDS} or unset")


@dataclass
class RunConfig:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    # Per-cell fine-tuning values (e.g. configs/finetune_cells.yaml): the entry of (finetune.mode, data.subset),
    # from its CLIP table when finetune.init is a run directory, is applied over the config file and under
    # command-line overrides. Stored resolved (absolute path).
    cells: str | None = None

    def validate(self) -> "RunConfig":
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if hasattr(v, "validate"):
                v.validate()
        # Here, not in ModelConfig.validate: a library user may build a model of a registered extra modality
        # (model/registry.py), but a run reads a store, whose modalities are these.
        unknown = [m for m in self.model.modalities if m not in MODALITIES]
        _check(not unknown, "model.modalities",
               f"must be drawn from {', '.join(MODALITIES)}, got {', '.join(map(repr, unknown))}")
        _check(self.finetune.members == 1 or self.train.zero_stage == 0 or self.optim.grad_clip == 0,
               "finetune.members", "above 1 needs train.zero_stage 0 or optim.grad_clip 0: each member's gradient "
               "is clipped by its own norm, and under ZeRO DeepSpeed clips all members' gradients by one")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' {msg}")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if values is None and where:  # a section whose keys are all commented out
        raise ConfigError(f"{where}: the section is empty; give it keys or remove it")
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'top level'}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names, key=str)  # a YAML key may be a number
    if unknown:
        raise ConfigError(f"{where + ': ' if where else ''}unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for name, raw in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, raw, f"{where}.{name}" if where else name)
        else:
            kwargs[name] = _coerce(raw, hint, f"{where}.{name}" if where else name)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_coerce(v, args[0], key) for v in value] if args else list(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if hint is float:
        number = value
        if isinstance(value, str):
            # YAML 1.1 reads 1e-3 (no dot before the e) as a string: the way learning rates are written.
            try:
                number = float(value)
            except ValueError:
                pass
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        if not math.isfinite(number):  # .inf passed every `> 0` check (lr, ema_epochs), NaN every comparison
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        return float(number)
    if hint is str:
        if not isinstance(value, str):
            kind = {bool: "true/false", int: "number", float: "number", dict: "mapping", list: "list"}.get(
                type(value), type(value).__name__)
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}: YAML read the value as a {kind}; "
                              f"quote it ({key}='...')")
        return value
    return value


def path_override(key: str, path: str | Path) -> str:
    """The override `KEY=PATH` for any path: override values are YAML, which reads `2024` as a number and
    `a: b.zarr` as a mapping, so the path goes in as a quoted string (JSON's quoting is YAML's)."""
    return f"{key}={json.dumps(str(path))}"


def store_overrides(store: str | Path | None) -> list[str]:
    """The override naming `store` as data.store, or none when no store is given (the config's then)."""
    return [path_override("data.store", store)] if store else []


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (optionally with `base: other.yaml` inheritance), apply overrides, validate."""
    values: dict = {}
    if path is not None:
        values = load_yaml_tree(Path(path))
    over = parse_overrides(overrides)
    where = str(path) if path is not None else "<overrides>"
    if "cells" in over and isinstance(over["cells"], str):
        over["cells"] = str(Path(over["cells"]).resolve())  # relative to the working directory
    merged = merge(values, over)
    cells = merged.get("cells")
    if cells is not None and not isinstance(cells, str):  # else Path(cells) below: a TypeError traceback, exit 1
        got = "a mapping (a cells table goes in its own file, which `cells:` names)" if isinstance(cells, dict) \
            else repr(cells)
        raise ConfigError(f"{where}: cells: expected the path of a cells file (e.g. finetune_cells.yaml), got {got}")
    if cells:
        # Precedence: defaults < config file < the cell's values < command-line overrides.
        picked = []  # the cell's mode and subset
        for section, key, default in (("finetune", "mode", FinetuneConfig.mode), ("data", "subset", DataConfig.subset)):
            part = merged.get(section, {})
            if not isinstance(part, dict):
                raise ConfigError(f"{where}: {section}: expected a mapping, got {part!r}")
            picked.append(part.get(key, default))
            if not isinstance(picked[-1], str):
                raise ConfigError(f"{where}: config key '{section}.{key}' must be a string, got {picked[-1]!r}")
        init = merged.get("finetune", {}).get("init", FinetuneConfig.init)
        pretrained = init is not None and init != "scratch"  # a wrong type is validation's to name
        cell = cell_values(merged["cells"], *picked, pretrained=pretrained)
        try:  # the cell's own keys and types, named in its file: merged, an error named the config
            _build(RunConfig, cell, "")
        except ConfigError as e:
            raise ConfigError(f"{cells}: cell {picked[0]}/{picked[1]}: {e}") from None
        merged = merge(merge(values, cell), over)
    values = merged
    try:
        cfg = _build(RunConfig, values, "")
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return cfg


def check_pretraining(cfg: RunConfig) -> RunConfig:
    """`cfg` as a pretraining may run it. Only fine-tuning labels shrink (spec, section 1): a sub-X pretraining
    trained on a fraction of the objects, validated on a fraction of the validation split, and fine-tunes took it
    as the seed's encoder. Checked where a pretraining config is resolved, so a submission is refused at once."""
    if cfg.data.subset != "full":
        raise ConfigError(f"data.subset={cfg.data.subset}: pretraining always uses the full train split of its "
                          f"seed (only fine-tuning takes a label-fraction subset); leave data.subset out")
    return cfg


def model_config(values: Any, source: str | Path) -> ModelConfig:
    """A `model` section read from a file (a pretraining run's config.yaml), typed and validated like a config
    file's: a key another version wrote, or a mistyped value, is one line naming `source`, not a TypeError."""
    return _recorded(ModelConfig, values, "model", source)


def config_from_dict(values: dict, source: str | Path) -> RunConfig:
    """A run's recorded config (`source`: its config.yaml), typed and validated; an error names the file."""
    return _recorded(RunConfig, values, "", source)


def _recorded(cls: type, values: Any, where: str, source: str | Path) -> Any:
    try:
        built = _build(cls, values, where)
        built.validate()
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return built


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the fully resolved config (every field, defaults included) atomically: loaded again, from any
    directory, it is the same config. So the store is absolute (a relative one was read against the reader's
    working directory: `evaluate-embeddings` there scored another store's objects) and `cells` is null (its
    values are in the fields already; kept, a reload applied the cell again over the run's own overrides)."""
    from .atomic import write_text

    d = cfg.to_dict()
    if d["data"].get("store"):
        d["data"]["store"] = str(Path(d["data"]["store"]).resolve())
    d["cells"] = None
    write_text(path, yaml.safe_dump(d, sort_keys=False))
