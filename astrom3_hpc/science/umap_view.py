"""`astrom3 umap`: 2-D UMAP of the embeddings (the paper's settings: n_neighbors 45, min_dist 0.7, cosine),
coloured by class, objects of classes unseen in training overlaid in black (named by their true class when
the store came from the synthetic generator).

Up to EXACT_KNN_MAX objects the cosine k-nearest-neighbour graph is computed exactly here and handed to UMAP
(`precomputed_knn`), which skips UMAP's approximate search (and its slow first-call compilation). Outputs:
SCIENCE_DIR/umap_<view>.png, umap_<view>.csv (row, object_id, label, class, x, y), umap_<view>.json.
"""

from __future__ import annotations

import csv
import io
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import finishing, write_json, write_text
from . import require
from .common import AVERAGE, normalise, science_dir
from .embed import embeddings_for
from .search import exact_topk

log = logging.getLogger("astrom3")

EXACT_KNN_MAX = 50_000


def umap_embedding(x: np.ndarray, n_neighbors: int = 45, min_dist: float = 0.7, seed: int = 0,
                   n_epochs: int | None = None) -> np.ndarray:
    """(N, 2) UMAP coordinates of unit vectors `x` under the cosine metric."""
    umap = require("umap", "astrom3 umap")
    x = normalise(x)
    n = len(x)
    if n < 3:
        raise ValueError(f"UMAP needs at least 3 objects, got {n}")
    k = max(2, min(n_neighbors, n - 1))
    kw: dict[str, Any] = {}
    if n <= EXACT_KNN_MAX:
        sims, idx = exact_topk(x, x, k)
        # UMAP's convention: each point is its own first neighbour at distance 0.
        self_first = idx[:, 0] == np.arange(n)
        if not self_first.all():
            bad = np.flatnonzero(~self_first)
            for i in bad:
                row = [i] + [j for j in idx[i] if j != i][:k - 1]
                idx[i] = row
                sims[i] = x[row] @ x[i]
        dists = np.clip(1.0 - sims, 0.0, 2.0).astype(np.float32)
        dists[:, 0] = 0.0
        kw["precomputed_knn"] = (idx.astype(np.int32), dists)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_neighbors=k, min_dist=min_dist, metric="cosine", random_state=seed,
                            n_epochs=n_epochs, **kw)
        return reducer.fit_transform(x).astype(np.float32)


def plot_umap(coords: np.ndarray, labels: np.ndarray, class_names: list[str], path: Path, title: str,
              unseen_names: np.ndarray | None = None) -> None:
    from ..core.figures import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    # Another survey's labels can be many more than AstroM3's ten: past 20 colours, classes differ by marker too.
    colours = 10 if len(class_names) <= 10 else 20
    cmap = plt.get_cmap(f"tab{colours}")
    size = max(1.0, min(12.0, 6000.0 / max(len(coords), 1)))
    for c, name in enumerate(class_names):
        m = labels == c
        if m.any():
            ax.scatter(coords[m, 0], coords[m, 1], s=size, color=cmap(c % colours), alpha=0.7, lw=0,
                       marker="osD^v"[(c // colours) % 5], label=f"{name} ({int(m.sum())})")
    un = labels < 0
    if un.any():
        groups = np.unique(unseen_names[un]) if unseen_names is not None else ["unseen"]
        markers = ["x", "+", "^", "s", "D"]
        for j, g in enumerate(groups):
            m = un & (unseen_names == g) if unseen_names is not None else un
            ax.scatter(coords[m, 0], coords[m, 1], s=max(14.0, 2 * size), color="black", marker=markers[j % 5],
                       lw=0.9, label=f"unseen: {g} ({int(m.sum())})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, markerscale=2.0, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    save(fig, path, dpi=120)


def umap_run(run_dir: str | Path, *, view: str = AVERAGE, n_neighbors: int = 45, min_dist: float = 0.7,
             seed: int = 0, max_points: int | None = None, n_epochs: int | None = None,
             out_dir: str | Path | None = None, embeddings: str | Path | None = None) -> dict[str, Any]:
    emb = embeddings_for(run_dir, out_dir, embeddings)
    sci = science_dir(run_dir, out_dir)
    x = emb.view(view)
    # An object lacking the view's modality has the embedding of an empty input: a point placed by nothing.
    sel = np.flatnonzero(emb.has(view))
    n_left_out = len(emb) - len(sel)
    if n_left_out:
        log.warning("umap --view %s: %d of %d objects lack %s (store `present` False) and are left out",
                    view, n_left_out, len(emb), view)
    if not len(sel):
        raise ValueError(f"umap --view {view}: no object of {emb.path} has {view}; nothing to project")
    if max_points and len(sel) > max_points:
        sel = np.sort(np.random.default_rng(seed).choice(sel, max_points, replace=False))
    if 3 <= len(sel) <= n_neighbors:  # what umap_embedding takes: recorded and drawn as used, not as asked
        log.info("umap: n_neighbors %d for %d objects: %d used", n_neighbors, len(sel), len(sel) - 1)
        n_neighbors = max(2, len(sel) - 1)
    t0 = time.perf_counter()
    coords = umap_embedding(x[sel], n_neighbors, min_dist, seed, n_epochs)
    seconds = time.perf_counter() - t0
    from .truth import synthetic_truth

    truth = synthetic_truth({"provenance": emb.attrs.get("store_provenance")}, emb.label, emb.row)
    unseen_names = None
    if truth is not None:
        unseen_names = np.asarray(truth.true_class[emb.row[sel]], dtype=object)
    labels = emb.label[sel]
    png = sci / f"umap_{view}.png"
    title = (f"UMAP of the {view} embeddings ({len(sel)} objects; n_neighbors {n_neighbors}, "
             f"min_dist {min_dist}, cosine)")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", "object_id", "label", "class", "x", "y"])
    for j, i in enumerate(sel):
        w.writerow([int(emb.row[i]), emb.object_name(i), int(emb.label[i]), emb.class_name(int(emb.label[i])),
                    f"{coords[j, 0]:.5f}", f"{coords[j, 1]:.5f}"])
    summary = {"png": str(png), "csv": str(sci / f"umap_{view}.csv"), "view": view, "n_points": int(len(sel)),
               "n_left_out": n_left_out, "n_unseen": int((labels < 0).sum()), "n_neighbors": n_neighbors,
               "min_dist": min_dist, "metric": "cosine", "seed": seed, "seconds": round(seconds, 2)}
    with finishing(f"the UMAP of {view} in {sci}"):  # figure, table and summary of one run, never mixed
        plot_umap(coords, labels, emb.class_names, png, title, unseen_names)
        write_text(sci / f"umap_{view}.csv", buf.getvalue())
        write_json(sci / f"umap_{view}.json", summary)
    return summary
