"""`astrom3 subtypes`: do the embeddings separate the hidden sub-types of one class?

The paper's UMAP shows two Mira groups (most likely carbon- and oxygen-rich) and two groups of rotational
variables. The synthetic generator plants exactly such sub-types (M: carbon / oxygen; ROT: young_active /
old_quiet) without telling the labels. This tool clusters the objects of one class into k = 2 groups (k-means,
or agglomerative with Ward linkage) and measures the adjusted Rand index (ARI) against the hidden sub-type:
for each embedding view and for baselines of raw features:

    raw_meta         the 34 z-scored metadata features
    raw_spectra_pca  the first `pca_components` principal components of the normalised spectra (flux channel;
                     PCA fitted on up to 4000 train-split spectra)
    raw_all          z-scored metadata + z-scored photometric features (amplitude, log period, lksl, rfr_score)
                     + the spectra PCA, every column standardised over the class's objects

Only objects whose stored label is the class and whose true class is the class (planted mislabels excluded)
are clustered; ground truth comes from the generator (store provenance), so this works on synthetic stores.
Output: SCIENCE_DIR/subtypes_<class>.json.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import write_json
from . import require
from .common import normalise, science_dir
from .embed import embeddings_for

log = logging.getLogger("astrom3")

METHODS = ("kmeans", "agglomerative")


def cluster(x: np.ndarray, k: int = 2, method: str = "kmeans", seed: int = 0) -> np.ndarray:
    cl = require("sklearn.cluster", "astrom3 subtypes (clustering)")
    if method == "kmeans":
        return cl.KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    if method == "agglomerative":
        return cl.AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def adjusted_rand(truth, pred) -> float:
    metrics = require("sklearn.metrics", "astrom3 subtypes (adjusted Rand index)")
    return float(metrics.adjusted_rand_score(truth, pred))


def _standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std(0)
    sd[sd == 0] = 1.0
    return (x - x.mean(0)) / sd


def raw_features(store, seed: int, rows: np.ndarray, pca_components: int = 16, pca_fit_max: int = 4000,
                 rng_seed: int = 0) -> dict[str, np.ndarray]:
    """Baseline feature sets (see module docstring) of the given store rows."""
    from ..core.constants import ALL_OBJECTS, AUX_COLUMNS
    from ..data.loader import LoaderSpec, TrimodalBatches

    decomposition = require("sklearn.decomposition", "the spectra-PCA baseline of astrom3 subtypes")
    root = store.root
    # The loader's own z-scored tables, so the baselines see what the model saw: metadata missing at ingestion
    # (--meta-nan impute keeps NaN in `meta`) filled with the seed's train median, a missing aux value (NaN
    # rfr_score) at the train mean. Read raw, one NaN made k-means fail and no ARI was written.
    tables = TrimodalBatches(LoaderSpec(store=str(store.path), seed=seed, split=ALL_OBJECTS, train=False))
    meta = tables.meta[rows]
    aux = tables.aux_steps[rows, :len(AUX_COLUMNS)]
    train = store.split(seed, "full", "train")
    rng = np.random.default_rng(rng_seed)
    fit_rows = np.sort(rng.choice(train, min(pca_fit_max, len(train)), replace=False))
    spec_fit = root["spec"].oindex[fit_rows][:, 0, :]
    n_comp = int(min(pca_components, len(fit_rows), spec_fit.shape[1]))
    pca = decomposition.PCA(n_components=n_comp, random_state=rng_seed).fit(spec_fit)
    spec_pca = pca.transform(root["spec"].oindex[rows][:, 0, :])
    return {"raw_meta": meta.astype(np.float64), "raw_spectra_pca": spec_pca,
            "raw_all": _standardise(np.concatenate([meta, aux, spec_pca], axis=1))}


def subtypes_run(run_dir: str | Path, cls: str = "M", *, method: str = "kmeans", k: int = 2,
                 pca_components: int = 16, seed: int = 0, out_dir: str | Path | None = None,
                 embeddings: str | Path | None = None, store: str | Path | None = None) -> dict[str, Any]:
    from ..data.store import Store
    from .truth import synthetic_truth

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    emb = embeddings_for(run_dir, out_dir, embeddings)
    if cls not in emb.class_names:
        raise ValueError(f"unknown class {cls!r}; classes: {emb.class_names}")
    truth = synthetic_truth({"provenance": emb.attrs.get("store_provenance")}, emb.label, emb.row)
    if truth is None:
        raise ValueError("hidden sub-types are known only for stores built from the synthetic generator "
                         "(store provenance); this store has no ground truth")
    c = emb.class_names.index(cls)
    labelled = emb.label == c
    sel = np.flatnonzero(labelled & (truth.true_class[emb.row] == cls))
    rows = emb.row[sel]
    sub = truth.subtypes(rows)
    kinds, counts = np.unique(sub, return_counts=True)
    out: dict[str, Any] = {"class": cls, "method": method, "k": k, "seed": seed, "n_objects": int(len(sel)),
                           "n_excluded_mislabeled": int(labelled.sum() - len(sel)),
                           "subtype_counts": {str(a): int(b) for a, b in zip(kinds, counts)}, "ari": {},
                           "clusters": {}}
    if len(kinds) < 2 or (kinds == "").any():
        raise ValueError(f"class {cls}: the generator planted no sub-types for it (sub-types found: "
                         f"{out['subtype_counts']}); sub-typed classes are M and ROT")
    if len(sel) < max(k, 4):
        raise ValueError(f"class {cls}: only {len(sel)} objects, too few to cluster into {k} groups")
    # An object lacking a view's modality has the embedding of an empty input: each view clusters only the
    # objects that have it (the raw baselines: every object; the store fills what is missing).
    has = {v: emb.has(v)[sel] for v in emb.views}
    feats: dict[str, np.ndarray] = {v: normalise(emb.view(v)[sel[has[v]]]) for v in emb.views}
    out["n_per_view"] = {v: int(has[v].sum()) for v in emb.views}
    for v in emb.views:
        if not has[v].all():
            log.warning("subtypes %s, view %s: %d of %d objects lack %s (store `present` False) and are left out",
                        cls, v, int((~has[v]).sum()), len(sel), v)
    st = Store(store or emb.attrs["store"])
    raw = raw_features(st, int(emb.attrs["split_seed"]), rows, pca_components, rng_seed=seed)
    feats.update(raw)
    has.update({name: np.ones(len(sel), bool) for name in raw})
    for name, x in feats.items():
        sub_v = sub[has[name]]
        if len(sub_v) < max(k, 4):
            log.warning("subtypes %s, view %s: only %d objects have it, too few to cluster: no ARI", cls, name,
                        len(sub_v))
            continue
        pred = cluster(np.asarray(x, np.float64), k, method, seed)
        out["ari"][name] = adjusted_rand(sub_v, pred)
        out["clusters"][name] = {f"cluster{j}": {str(a): int(((pred == j) & (sub_v == a)).sum()) for a in kinds}
                                 for j in range(k)}
    best_emb = max([v for v in emb.views if v in out["ari"]], key=lambda v: out["ari"][v], default=None)
    best_raw = max([n for n in out["ari"] if n.startswith("raw_")], key=lambda v: out["ari"][v])
    out["best_embedding"] = {"view": best_emb, "ari": out["ari"][best_emb]} if best_emb else None
    out["best_baseline"] = {"features": best_raw, "ari": out["ari"][best_raw]}
    write_json(science_dir(run_dir, out_dir) / f"subtypes_{cls}.json", out)
    return out
