"""Shared pieces of the science tools: run directories, the trained model, the embeddings store, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SCIENCE_DIR = "science"
EMBEDDINGS = "embeddings.zarr"
EMBEDDINGS_SCHEMA = "astrom3-embeddings/1"
OBJECT_NAMES = "object_names.json"  # beside the arrays, where the store keeps the source's ids
AVERAGE = "average"  # the L2-normalised mean of the normalised per-modality embeddings


def science_dir(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Where the science tools write: `out_dir` if given, else RUN_DIR/science."""
    return Path(out_dir) if out_dir is not None else Path(run_dir) / SCIENCE_DIR


def run_config(run_dir: str | Path):
    from ..core.config import config_from_dict
    from ..train.rundir import read_run_config

    return config_from_dict(read_run_config(run_dir), Path(run_dir) / "config.yaml")


def load_model(run_dir: str | Path, device=None):
    """The trained model of a finished pretraining run (CLIP: one embedding per modality) or fine-tune run (one
    view, named by its mode: model.members.ClassifierEmbedding), best weights, in eval mode.

    Returns (model, cfg, meta) where meta is what the run saved with the weights (kind, epoch, val metrics, seed).
    """
    import torch

    from ..model import build_clip
    from ..model.members import ClassifierEmbedding, finetune_classifier
    from ..train.checkpoint import BEST_MODEL, load_weights

    cfg = run_config(run_dir)
    blob = load_weights(Path(run_dir) / BEST_MODEL)
    meta, state = blob.get("meta", {}), blob["state_dict"]
    kind = meta.get("kind", "pretrain")
    if kind == "finetune":
        heads = [v for k, v in state.items() if k.endswith("head.weight")]
        if not heads:
            raise ValueError(f"{run_dir}/{BEST_MODEL} holds no classifier head (not a fine-tune run's weights?)")
        net = finetune_classifier(cfg, int(heads[0].shape[0]))
    elif kind == "pretrain":
        net = build_clip(cfg.model)
    else:
        raise ValueError(f"{run_dir} is a {kind} run; the science tools need a pretraining or fine-tune run")
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise ValueError(f"{run_dir}/{BEST_MODEL} lacks parameters {missing[:5]} (not a {kind} run of this config?)")
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items() if k in own})
    model = ClassifierEmbedding(net, cfg.finetune.mode) if kind == "finetune" else net
    model.to(device or torch.device("cpu")).eval()
    return model, cfg, meta


def check_counts(**counts: int) -> None:
    """Refuse a count below 1, naming the option and the argument (`top_k` is --top-k): 0 or a negative k made
    scores silently 0, or failed in numpy after a full embedding pass."""
    for name, value in counts.items():
        if value is None or isinstance(value, bool) or int(value) != value or value < 1:
            flag = f"-{name}" if len(name) == 1 else f"--{name.replace('_', '-')}"
            raise ValueError(f"{flag} ({name}) must be a whole number of at least 1, got {value!r}")


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def average_embedding(parts: list[np.ndarray], present: np.ndarray | None = None) -> np.ndarray:
    """L2-normalised mean of the L2-normalised per-modality embeddings (the paper's 'avg' fusion).

    present: optional (N, len(parts)) bool; the mean then runs over each object's present modalities only
    (an object with none present falls back to all)."""
    stack = np.stack([normalise(p) for p in parts])  # (M, N, D)
    if present is None:
        return normalise(stack.mean(0))
    w = np.asarray(present, dtype=np.float32).T  # (M, N)
    w[:, w.sum(0) == 0] = 1.0
    return normalise((stack * w[:, :, None]).sum(0) / w.sum(0)[:, None])


# ---------------------------------------------------------------------------------------------------- reading

@dataclass
class Embeddings:
    """An embeddings store read into memory (rows in store-row order)."""

    path: Path
    vectors: dict[str, np.ndarray]  # view name (modality or "average") -> (N, D) float32, unit norm
    object_id: np.ndarray  # (N,) int64
    row: np.ndarray  # (N,) int64, row index in the data store
    label: np.ndarray  # (N,) int64, -1 for objects of classes unseen in training
    present: np.ndarray  # (N, n_store_modalities) bool
    splits: dict[str, np.ndarray]  # "train"/"val"/"test" -> (N,) bool, membership in the full subset
    attrs: dict[str, Any] = field(default_factory=dict)
    names: np.ndarray | None = None  # (N,) str, the source's ids where the store keeps them (else object_id)

    @property
    def modalities(self) -> list[str]:
        return list(self.attrs["modalities"])

    @property
    def views(self) -> list[str]:
        return self.modalities + [AVERAGE]

    @property
    def class_names(self) -> list[str]:
        return list(self.attrs["class_names"])

    def __len__(self) -> int:
        return len(self.row)

    def class_name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else "unseen"

    def object_name(self, i: int) -> str | int:
        """Object i's id as the user's tables (and predictions.csv) name it."""
        return str(self.names[i]) if self.names is not None else int(self.object_id[i])

    def position_of_object(self, object_id: str | int) -> int:
        """Where the object of id `object_id` is, matched as ingestion matches ids (`00123` = `123` = `123.0`; `1_5`
        is a name, not 15): as the tables write it, or as any of those spellings."""
        from ..data.sources.points_table import is_integer_id, norm_id

        key = norm_id(str(object_id))
        if self.names is not None:
            hit = np.flatnonzero(self.names == str(object_id).strip())
            if len(hit) == 0:
                hit = [i for i, n in enumerate(self.names.tolist()) if norm_id(str(n)) == key]
        else:
            hit = np.flatnonzero(self.object_id == int(key)) if is_integer_id(key) else []
        if len(hit) == 0:
            raise ValueError(f"object id {object_id!r} is not in {self.path} ({len(self)} objects)")
        return int(hit[0])

    def position_of_row(self, row: int) -> int:
        hit = np.flatnonzero(self.row == int(row))
        if len(hit) == 0:
            raise ValueError(f"store row {row} is not in {self.path}")
        return int(hit[0])

    def view(self, name: str) -> np.ndarray:
        if name not in self.vectors:
            raise ValueError(f"no embedding '{name}' in {self.path}; have {sorted(self.vectors)}")
        return self.vectors[name]

    def has(self, name: str) -> np.ndarray:
        """(N,) bool: objects that have view `name` (a modality the store marks absent has no embedding worth
        using; the average needs at least one present modality)."""
        cols = list(self.attrs.get("store_modalities", []))
        if name == AVERAGE:
            idx = [cols.index(m) for m in self.modalities if m in cols]
            return self.present[:, idx].any(1) if idx else np.ones(len(self), bool)
        if name in cols:
            return self.present[:, cols.index(name)].copy()
        return np.ones(len(self), bool)

    def split_name(self, i: int) -> str:
        for s, m in self.splits.items():
            if m[i]:
                return s
        return "-"


def read_embeddings(path: str | Path) -> Embeddings:
    import zarr

    path = Path(path)
    if not (path / "zarr.json").exists():
        raise FileNotFoundError(f"{path} is not an embeddings store; create it with `astrom3 embed RUN_DIR`")
    root = zarr.open_group(str(path), mode="r")
    attrs = dict(root.attrs)
    if attrs.get("schema") != EMBEDDINGS_SCHEMA or not attrs.get("complete"):
        raise ValueError(f"{path}: not a complete {EMBEDDINGS_SCHEMA} store (schema {attrs.get('schema')!r}, "
                         f"complete {attrs.get('complete')!r}); rerun `astrom3 embed`")
    views = list(attrs["modalities"]) + [AVERAGE]
    row = root["row"][:].astype(np.int64)
    return Embeddings(
        path=path,
        vectors={v: root[f"emb/{v}"][:] for v in views},
        object_id=root["object_id"][:].astype(np.int64),
        row=row,
        label=root["label"][:].astype(np.int64),
        present=root["present"][:].astype(bool),
        splits={s: root[f"split/{s}"][:].astype(bool) for s in ("train", "val", "test")},
        attrs=attrs,
        names=_names(path, attrs, row),
    )


def _names(path: Path, attrs: dict[str, Any], row: np.ndarray) -> np.ndarray | None:
    """The source's ids of the embedded rows: the embeddings' own copy, or (a store embedded before the copy was
    written) the data store's where it is still there. None: object_id is the id."""
    import json

    own = path / OBJECT_NAMES
    if own.exists():
        names = json.loads(own.read_text(encoding="utf-8"))
        if len(names) != len(row):
            raise ValueError(f"{own}: {len(names)} ids for {len(row)} embedded objects; rerun `astrom3 embed`")
        return np.asarray(names, dtype=object)
    store = attrs.get("store")
    if store and (Path(store) / OBJECT_NAMES).exists():
        from ..data.store import Store, kept_object_names

        names = kept_object_names(Store(store))
        return None if names is None else names[row]
    return None


# ---------------------------------------------------------------------------------------------------- metrics

def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` (higher = more likely positive); ties count one half.
    NaN when one of the two groups is empty. (Mann-Whitney U with average ranks.)"""
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks for ties
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def precision_at_k(scores: np.ndarray, positive: np.ndarray, k: int) -> float:
    """Share of positives among the k highest scores (stable order: earlier rows win ties)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    k = int(min(k, len(scores)))
    if k <= 0:
        return float("nan")
    top = np.argsort(-scores, kind="stable")[:k]
    return float(positive[top].mean())


def detection_metrics(scores: np.ndarray, positive: np.ndarray, ks=(10, 50, 100)) -> dict[str, Any]:
    """ROC AUC, precision@k for fixed k and at k = number of positives (R-precision), base rate.
    Objects without a finite score (e.g. lacking the modality) are left out.

    A metric the set leaves undefined is left out, not NaN (bare NaN is not JSON; these go to reports): ROC AUC
    without positives or without negatives, R-precision without positives, the base rate of an empty set."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    ok = np.isfinite(scores)
    scores, positive = scores[ok], positive[ok]
    n_pos = int(positive.sum())
    out: dict[str, Any] = {"n": int(len(positive)), "n_positive": n_pos}
    if len(positive):
        out["base_rate"] = float(positive.mean())
    if 0 < n_pos < len(positive):
        out["roc_auc"] = roc_auc(scores, positive)
    for k in ks:
        if 0 < k <= len(positive):
            out[f"precision_at_{k}"] = precision_at_k(scores, positive, k)
    if n_pos:
        out["r_precision"] = precision_at_k(scores, positive, n_pos)
    return out
