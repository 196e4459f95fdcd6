"""`astrom3 outliers`: misclassification candidates and anomaly scores from the embeddings (spec section 5).

Supervised (needs labels): per view (each modality and the averaged embedding), the cosine distance of every
labelled object to the centroid of its labelled class (`dist_*`), the centroid being the L2-normalised mean of
the train embeddings of that class, and that distance as a robust z-score within its class (`z_*`: minus the
class's median train distance, over 1.4826 x its MAD). Objects are ranked per modality (1 = farthest) by
`rank_by`: "class_z" (default; broad classes such as SR no longer crowd the top ranks: on the 4000-object
synthetic run of docs/science.md this doubles precision@50) or "distance" (the paper's plain rule). Those in
the top k of at least `min_modalities` modalities at once are the candidates. `combined` = mean over
modalities of the ranked score's percentile rank (0..1), the score used to order candidates.

Unsupervised: `knn` = mean cosine distance to the k nearest train embeddings (the object itself excluded), per
view; or `iforest` (scikit-learn IsolationForest fitted on the train embeddings of the averaged view).
Also `nearest_centroid`: distance to the closest class centroid of any class.

With ground truth (a store from the synthetic generator: planted mislabels, classes unseen in training) the
command measures how well each score recovers them: ROC AUC and precision@k (k = 10, 50, 100 and the number
of positives). Outputs: SCIENCE_DIR/outliers.csv (one row per object) and SCIENCE_DIR/outliers.json.
"""

from __future__ import annotations

import csv
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import finishing, write_json, write_text
from . import require
from .common import AVERAGE, Embeddings, check_counts, detection_metrics, normalise, science_dir
from .embed import embeddings_for
from .search import VectorIndex

log = logging.getLogger("astrom3")

UNSUPERVISED = ("knn", "iforest")
RANK_BY = ("class_z", "distance")


def class_centroids(x: np.ndarray, labels: np.ndarray, use: np.ndarray, n_classes: int) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    """(n_classes, D) unit centroids from the rows `use` (bool) with label >= 0, and which classes have one."""
    x = normalise(x)
    cents = np.zeros((n_classes, x.shape[1]), np.float32)
    have = np.zeros(n_classes, bool)
    for c in range(n_classes):
        m = use & (labels == c)
        if m.any():
            cents[c] = normalise(x[m].mean(0, keepdims=True))[0]
            have[c] = True
    return cents, have


def centroid_distance(x: np.ndarray, labels: np.ndarray, cents: np.ndarray, have: np.ndarray) -> np.ndarray:
    """1 - cos(x_i, centroid of label_i); NaN for unlabelled objects and classes without a centroid."""
    out = np.full(len(x), np.nan, np.float64)
    ok = (labels >= 0) & (labels < len(cents))
    ok[ok] &= have[labels[ok]]
    out[ok] = 1.0 - np.einsum("ij,ij->i", normalise(x[ok]), cents[labels[ok]])
    return out


def knn_distance(x: np.ndarray, reference: np.ndarray, k: int = 10, query_ids: np.ndarray | None = None,
                 reference_ids: np.ndarray | None = None, index: str = "auto") -> np.ndarray:
    """Mean cosine distance of each row of `x` to its k nearest `reference` rows, skipping a reference row with
    the same id as the query (the object itself). k >= 1 (0 kept no neighbour and made every score 0)."""
    check_counts(knn_k=k)
    if len(reference) == 0:
        return np.full(len(x), np.nan)
    kk = min(k + 1, len(reference))
    sims, idx = VectorIndex(reference, index).search(normalise(x), kk)
    if query_ids is not None and reference_ids is not None:
        same = reference_ids[np.clip(idx, 0, None)] == np.asarray(query_ids)[:, None]
    else:
        same = np.zeros_like(idx, dtype=bool)
    keep = ~same & (idx >= 0)
    # first k kept neighbours per row
    order = np.cumsum(keep, axis=1)
    keep &= order <= k
    dist = np.where(keep, 1.0 - sims, 0.0)
    return dist.sum(1) / np.maximum(keep.sum(1), 1)


def percentile_rank(score: np.ndarray) -> np.ndarray:
    """Rank of each finite score among the finite ones, scaled to (0, 1] (1 = largest); NaN stays NaN."""
    from scipy.stats import rankdata

    out = np.full(len(score), np.nan)
    ok = np.isfinite(score)
    if ok.any():
        out[ok] = rankdata(score[ok]) / ok.sum()
    return out


def descending_rank(score: np.ndarray) -> np.ndarray:
    """1 = largest finite score; NaN scores get rank len+1 (never a candidate)."""
    s = np.where(np.isfinite(score), score, -np.inf)
    order = np.argsort(-s, kind="stable")
    rank = np.empty(len(s), np.int64)
    rank[order] = np.arange(1, len(s) + 1)
    rank[~np.isfinite(score)] = len(s) + 1
    return rank


# A spread measured on fewer reference objects than this is noise: such a class takes the median spread of the
# classes that have enough (ZTF's VSX sample, 20 types, has classes of 1-4 train objects; one of them, with a MAD
# from two distances, once scored z = 64 and filled the top ranks by itself).
MIN_SPREAD_REFS = 10


def class_robust_z(dist: np.ndarray, labels: np.ndarray, ref: np.ndarray, n_classes: int) -> np.ndarray:
    """(dist - median) / (1.4826 MAD) per labelled class, median and MAD over the `ref` objects of the class:
    a distance in units of its class's typical spread (broad classes such as SR no longer fill the top ranks).
    A class with fewer than MIN_SPREAD_REFS reference objects takes the median spread of the others (of all
    classes when none has enough)."""
    out = np.full(len(dist), np.nan)
    centre, spread, n_ref = {}, {}, {}
    for c in range(n_classes):
        r = dist[ref & (labels == c)]
        r = r[np.isfinite(r)]
        if len(r):
            centre[c] = float(np.median(r))
            spread[c] = 1.4826 * float(np.median(np.abs(r - centre[c])))
            n_ref[c] = len(r)
    big = [spread[c] for c in spread if n_ref[c] >= MIN_SPREAD_REFS] or list(spread.values())
    pooled = float(np.median(big)) if big else 0.0
    for c in centre:
        scale = spread[c] if n_ref[c] >= MIN_SPREAD_REFS else pooled
        m = labels == c
        out[m] = (dist[m] - centre[c]) / max(scale, 1e-6)
    return out


def score_outliers(emb: Embeddings, *, top_k: int = 50, min_modalities: int = 2, knn_k: int = 10,
                   unsupervised: str = "knn", rank_by: str = "class_z", index: str = "auto", seed: int = 0
                   ) -> dict[str, np.ndarray]:
    """Per-object columns (arrays of len(emb)) of every score; see the module docstring."""
    if unsupervised not in UNSUPERVISED:
        raise ValueError(f"unsupervised score must be one of {UNSUPERVISED}, got {unsupervised!r}")
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {RANK_BY}, got {rank_by!r}")
    check_counts(top_k=top_k, min_modalities=min_modalities, knn_k=knn_k)
    n_classes = len(emb.class_names)
    train = emb.splits["train"] & (emb.label >= 0)
    if not train.any():
        raise ValueError(f"{emb.path}: no labelled train-split objects to build class centroids from")
    cols: dict[str, np.ndarray] = {}
    for v in emb.views:
        x = emb.view(v)
        has = emb.has(v)  # objects lacking a modality get no score in it (NaN)
        cents, have = class_centroids(x, emb.label, train & has, n_classes)
        dist = centroid_distance(x, emb.label, cents, have)
        dist[~has] = np.nan
        cols[f"dist_{v}"] = dist
        cols[f"z_{v}"] = class_robust_z(dist, emb.label, train & has, n_classes)
        cols[f"rank_{v}"] = descending_rank(cols[f"z_{v}"] if rank_by == "class_z" else dist)
        near = 1.0 - (normalise(x) @ cents[have].T).max(1) if have.any() else np.full(len(x), np.nan)
        near[~has] = np.nan
        cols[f"nearest_centroid_{v}"] = near
        if unsupervised == "knn":
            ids = np.arange(len(emb))
            ref = train & has
            knn = knn_distance(x, x[ref], knn_k, ids, ids[ref], index)
            knn[~has] = np.nan
            cols[f"knn_{v}"] = knn
    if unsupervised == "iforest":
        ens = require("sklearn.ensemble", "the isolation-forest outlier score")
        forest = ens.IsolationForest(n_estimators=200, random_state=seed).fit(emb.view(AVERAGE)[train])
        cols["iforest_average"] = -forest.score_samples(emb.view(AVERAGE))
    mods = emb.modalities
    key = "z" if rank_by == "class_z" else "dist"
    # Only a scored object is in a top k: an unscored one (no class, a class without centroid, the modality
    # lacking) has a rank past every scored one, which a top k above the scored count reached.
    cols["n_top"] = np.sum([(cols[f"rank_{m}"] <= top_k) & np.isfinite(cols[f"{key}_{m}"]) for m in mods],
                           axis=0).astype(np.int64)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # objects with no labelled distance at all: NaN
        cols["combined"] = np.nanmean([percentile_rank(cols[f"{key}_{m}"]) for m in mods], axis=0)
    cols["candidate"] = cols["n_top"] >= min(min_modalities, len(mods))
    return cols


def unsupervised_key(cols: dict[str, np.ndarray]) -> str:
    return "knn_average" if "knn_average" in cols else "iforest_average"


def evaluate_scores(emb: Embeddings, cols: dict[str, np.ndarray], mislabeled: np.ndarray, unseen: np.ndarray,
                    ks=(10, 50, 100)) -> dict[str, Any]:
    """Detection metrics against known truth (bool arrays aligned with the embeddings' rows).

    mislabel: among labelled objects, scores = centroid distance and its class z-score per view, `combined`.
    unseen: among all objects, scores = the unsupervised score per view and the nearest-centroid distance.
    """
    labelled = emb.label >= 0
    out: dict[str, Any] = {"mislabel": {}, "unseen": {}}
    for key in [f"{p}_{v}" for p in ("dist", "z") for v in emb.views] + ["combined"]:
        out["mislabel"][key] = detection_metrics(cols[key][labelled], mislabeled[labelled], ks)
    un_keys = [k for k in cols if k.startswith(("knn_", "iforest_", "nearest_centroid_"))]
    for key in un_keys:
        out["unseen"][key] = detection_metrics(cols[key], unseen, ks)
    return out


def undefined_metrics(metrics: dict[str, dict[str, dict[str, Any]]]) -> dict[str, str]:
    """Per group of `evaluate_scores`, why ROC AUC / R-precision are missing from its scores (once per group,
    not per score): a store without planted mislabels or unseen-class objects has no positive to find."""
    what = {"mislabel": "planted mislabels", "unseen": "objects of classes unseen in training"}
    out = {}
    for grp, per_key in metrics.items():
        lacking = sorted({m for met in per_key.values() for m in ("roc_auc", "r_precision") if m not in met})
        if not lacking:
            continue
        n_pos = {met["n_positive"] for met in per_key.values()}
        why = (f"no positives: the store has no {what.get(grp, grp)}" if n_pos == {0}
               else "a score's objects are all positive or all negative")
        out[grp] = f"{', '.join(lacking)} undefined ({why}) and left out"
    return out


def _table_csv(emb: Embeddings, cols: dict[str, np.ndarray], extra: dict[str, np.ndarray]) -> str:
    buf = io.StringIO()
    names = ["row", "object_id", "label", "class", "split"] + list(cols) + list(extra)
    w = csv.writer(buf)
    w.writerow(names)
    for i in range(len(emb)):
        base = [int(emb.row[i]), emb.object_name(i), int(emb.label[i]), emb.class_name(int(emb.label[i])),
                emb.split_name(i)]
        vals = []
        for arr in list(cols.values()) + list(extra.values()):
            v = arr[i]
            if isinstance(v, (float, np.floating)):
                vals.append("" if not np.isfinite(v) else f"{float(v):.6g}")
            elif isinstance(v, (bool, np.bool_)):
                vals.append(int(v))
            else:
                vals.append(v.item() if hasattr(v, "item") else v)
        w.writerow(base + vals)
    return buf.getvalue()


def _rows(emb: Embeddings, cols: dict[str, np.ndarray], order: np.ndarray, keys: list[str], extra) -> list[dict]:
    out = []
    for i in order:
        r = {"row": int(emb.row[i]), "object_id": emb.object_name(i), "label": int(emb.label[i]),
             "class": emb.class_name(int(emb.label[i])), "split": emb.split_name(int(i))}
        for k in keys:
            v = cols[k][i]
            # A score the object has none of (a modality it lacks) is null: bare NaN is not JSON.
            r[k] = int(v) if isinstance(v, (np.integer, np.bool_)) else float(v) if np.isfinite(v) else None
        for k, arr in extra.items():
            v = arr[i]
            r[k] = bool(v) if isinstance(v, (bool, np.bool_)) else str(v)
        out.append(r)
    return out


def outliers_run(run_dir: str | Path, *, top_k: int = 50, min_modalities: int = 2, knn_k: int = 10,
                 unsupervised: str = "knn", rank_by: str = "class_z", n_list: int = 50, index: str = "auto",
                 out_dir: str | Path | None = None, embeddings: str | Path | None = None) -> dict[str, Any]:
    check_counts(top_k=top_k, min_modalities=min_modalities, knn_k=knn_k)  # before an embedding pass
    emb = embeddings_for(run_dir, out_dir, embeddings)
    sci = science_dir(run_dir, out_dir)
    cols = score_outliers(emb, top_k=top_k, min_modalities=min_modalities, knn_k=knn_k,
                          unsupervised=unsupervised, rank_by=rank_by, index=index)
    from .truth import synthetic_truth

    truth = synthetic_truth({"provenance": emb.attrs.get("store_provenance")}, emb.label, emb.row)
    extra: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {
        "embeddings": str(emb.path), "n_objects": len(emb), "n_labelled": int((emb.label >= 0).sum()),
        # as applied: a fine-tune run's single view needs its one (the asked-for value would say otherwise)
        "params": {"top_k": top_k, "min_modalities": min(min_modalities, len(emb.modalities)), "knn_k": knn_k,
                   "unsupervised": unsupervised,
                   "rank_by": rank_by, "centroids_from": "train split", "index": index},
    }
    if truth is not None:
        extra = {"true_class": truth.true_class[emb.row], "mislabeled": truth.mislabeled[emb.row],
                 "unseen": truth.unseen[emb.row]}
        summary["truth"] = {"source": "synthetic generator (store provenance)",
                            "n_mislabeled": int(extra["mislabeled"].sum()), "n_unseen": int(extra["unseen"].sum())}
        summary["metrics"] = evaluate_scores(emb, cols, extra["mislabeled"], extra["unseen"])
        undefined = undefined_metrics(summary["metrics"])
        if undefined:
            summary["metrics_undefined"] = undefined
            for grp, why in undefined.items():
                log.warning("outliers, %s metrics: %s", grp, why)
    cand = np.flatnonzero(cols["candidate"])
    cand = cand[np.lexsort((-cols["combined"][cand], -cols["n_top"][cand]))][:n_list]
    mods = emb.modalities
    summary["candidates"] = _rows(emb, cols, cand, ["n_top", "combined"] + [f"dist_{m}" for m in mods]
                                  + [f"z_{m}" for m in mods] + [f"rank_{m}" for m in mods], extra)
    if "mislabeled" in extra and len(cand):
        summary["candidates_mislabeled_fraction"] = float(np.mean(extra["mislabeled"][cols["candidate"]]))
    summary["n_candidates"] = int(cols["candidate"].sum())
    ukey = unsupervised_key(cols)
    score = np.where(np.isfinite(cols[ukey]), cols[ukey], -np.inf)
    top_un = np.argsort(-score, kind="stable")[:n_list]
    summary["anomalies"] = _rows(emb, cols, top_un, [ukey, f"nearest_centroid_{AVERAGE}"], extra)
    table = _table_csv(emb, cols, extra)
    with finishing(f"the outliers in {sci}"):  # table and summary of one run, never mixed
        write_text(sci / "outliers.csv", table)
        write_json(sci / "outliers.json", summary)
    return summary
