"""Subcommands of the science tools: `add_parsers(sub)` registers embed, search, outliers, umap, subtypes on the
`astrom3` command line; `main(argv)` runs them alone (`python -m astrom3_hpc.cli.science ...`)."""

from __future__ import annotations

import argparse
import functools
import sys

from ..science import MissingExtraError
from ..core.argtypes import non_negative_int, positive_int
from .runner import print_json

_OUT_HELP = "directory for the outputs (default: RUN_DIR/science)"
_EMB_HELP = "embeddings store to read (default: OUT_DIR/embeddings.zarr, created by `astrom3 embed` if missing)"
_INDEX_HELP = ("nearest-neighbour index: exact (numpy), flat (faiss, exact), hnsw / ivf (faiss, approximate), "
               "auto (exact up to 50,000 vectors, else ivf); faiss comes with the science extra")


def _friendly(fn):
    """Run a command; a missing optional dependency becomes a one-line error naming the extra (exit 2)."""
    @functools.wraps(fn)
    def wrapper(args):
        try:
            return fn(args)
        except MissingExtraError as e:
            print(f"astrom3 {getattr(args, 'command', '')}: error: {e}", file=sys.stderr)
            return 2
    return wrapper


def _two_or_more(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2 (UMAP's neighbourhood includes the point), "
                                         f"got {value}")
    return value


def _print(obj) -> None:
    print_json(obj)


# ----------------------------------------------------------------------------------------------------------- embed

def _add_embed(sub) -> None:
    p = sub.add_parser(
        "embed", help="embed every object of a store with a trained model (Zarr v3, distributed)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compute the L2-normalised embedding of every valid object (each modality and their "
                    "normalised average) under the best weights of a pretraining run, keyed by object id and "
                    "store row, with labels and split membership, into OUT_DIR/embeddings.zarr (built under a "
                    "temporary name and renamed into place). A fine-tune run gives one view, named by its mode: "
                    "the unit vector its classifier's head reads (e.g. a periodic network trained on a "
                    "photometry-only survey, for search, outliers and UMAP there).\n\nRuns as one process or "
                    "distributed: under "
                    "torchrun / srun / mpiexec every rank embeds a chunk-aligned share and writes it directly.",
        epilog="example: astrom3 embed runs/pretrain-s42\n"
               "         astrom3 embed runs/periodic-s42             # a fine-tune run on a light-curve store\n"
               "         torchrun --nproc_per_node 4 -m astrom3_hpc.cli.science embed runs/pretrain-s42")
    p.add_argument("run_dir", help="a finished pretraining or fine-tune run directory (config.yaml, best_model.pt)")
    p.add_argument("--store", help="data store to embed (default: the run's data.store)")
    p.add_argument("--train-store", help="a fine-tune run's training store, where it moved: its train split "
                                         "scales the network's inputs, as `astrom3 predict` does")
    p.add_argument("--splits", nargs="+", action="extend", choices=["train", "val", "test"],
                   help="embed only these splits of the run's seed (default: every valid object, including "
                        "objects of classes unseen in training, which are in no split)")
    p.add_argument("--out-dir", help=_OUT_HELP)
    p.add_argument("--batch-size", type=positive_int, default=256, help="objects per forward pass (default 256)")
    p.add_argument("--sample-seed", type=int, default=0,
                   help="seed of the attention-key sampler (paper preset), fixed per batch so that an "
                        "object's embedding does not depend on its batch (default 0)")
    p.add_argument("--chunk-rows", type=positive_int, default=4096,
                   help="rows per chunk of the embedding arrays; ranks write whole chunks (default 4096)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_embed)


@_friendly
def cmd_embed(args) -> int:
    from ..science.common import EMBEDDINGS, science_dir
    from ..science.embed import embed_run

    out = science_dir(args.run_dir, args.out_dir) / EMBEDDINGS
    summary = embed_run(args.run_dir, store=args.store, splits=args.splits, out=out, batch_size=args.batch_size,
                        sample_seed=args.sample_seed, chunk_rows=args.chunk_rows, progress=not args.no_progress,
                        train_store=args.train_store)
    from ..distributed import env as denv

    if denv.get_rank() == 0:
        _print(summary)
    denv.cleanup()
    return 0


# ---------------------------------------------------------------------------------------------------------- search

def _add_search(sub) -> None:
    p = sub.add_parser(
        "search", help="top-k cosine neighbours within / across modalities; retrieval recall@k",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Nearest neighbours by cosine similarity of a query object (by id or store row) or of a raw "
                    "file (ASAS-SN light curve .dat / .csv, LAMOST spectrum .fits[.gz], run through the real "
                    "preprocessing, the store's z-score statistics and the model's encoder), within the query's "
                    "modality and across modalities (query a spectrum, retrieve light curves). Results go to "
                    "OUT_DIR/search/<query>_<modality>.json. With --recall, or without a query, writes the "
                    "cross-modal retrieval recall@1/5/10 of every modality pair to OUT_DIR/retrieval.json.",
        epilog="examples:\n"
               "  astrom3 search RUN --query 2939710878511005696 --modality spectra --target photo -k 10\n"
               "  astrom3 search RUN --query-file star.dat --aux 0.45 0.37 0.2 0.9 --target photo spectra\n"
               "  astrom3 search RUN --recall --recall-split test")
    p.add_argument("run_dir", help="a pretraining or fine-tune run directory")
    p.add_argument("--query", nargs="+", action="extend", default=[], metavar="OBJECT_ID",
                   help="query object id(s), as the store's objects table and predictions.csv write them")
    p.add_argument("--query-row", nargs="+", action="extend", type=int, default=[], metavar="ROW",
                   help="query store row(s)")
    p.add_argument("--query-file", help="raw light curve (.dat, .csv) or spectrum (.fits, .fits.gz) to embed")
    p.add_argument("--aux", nargs=4, type=float, metavar=("AMPLITUDE", "PERIOD", "LKSL", "RFR_SCORE"),
                   help="photometric features of a light-curve query file (raw: mag, days); default: the "
                        "train-split mean")
    p.add_argument("--modality",
                   help="embedding view of the query object to search with: photo, spectra, meta or average for a "
                        "pretraining run, a fine-tune run's mode (e.g. all) or average (default: the embeddings' "
                        "first view, photo for a pretraining run; a file sets its own)")
    p.add_argument("--target", nargs="+", action="extend",
                   help="embedding views to search (default: every view of the embeddings)")
    p.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    p.add_argument("--index", default="auto", choices=["auto", "exact", "flat", "hnsw", "ivf"], help=_INDEX_HELP)
    p.add_argument("--recall", action="store_true", help="also write the retrieval recall@k report")
    p.add_argument("--recall-split", default="test", choices=["train", "val", "test", "all"],
                   help="objects the recall report uses (default test)")
    p.add_argument("--store", help="data store whose statistics preprocess a query file (default: the embedded one)")
    p.add_argument("--embeddings", help=_EMB_HELP)
    p.add_argument("--out-dir", help=_OUT_HELP)
    p.set_defaults(func=cmd_search)


@_friendly
def cmd_search(args) -> int:
    from ..science.search import search_run

    for flag, value in (("--aux", args.aux), ("--store", args.store)):
        if value is not None and args.query_file is None:  # else ignored without a word
            print(f"astrom3 search: error: {flag} preprocesses a --query-file; none was given", file=sys.stderr)
            return 2
    rep = search_run(args.run_dir, object_ids=args.query, rows=args.query_row, query_file=args.query_file,
                     aux=args.aux, modality=args.modality, targets=args.target, k=args.k, index=args.index,
                     recall=args.recall, recall_split=args.recall_split, out_dir=args.out_dir,
                     embeddings=args.embeddings, store=args.store)
    brief = {"queries": [{"query": q["query"], "modality": q["modality"],
                          "neighbours": {t: [(n["object_id"], n["class"], round(n["similarity"], 4)) for n in v]
                                         for t, v in q["neighbours"].items()}} for q in rep["queries"]]}
    if "retrieval" in rep:
        brief["retrieval"] = {pair: {k: None if v is None else round(v, 4) for k, v in r.items()
                                     if k.startswith("recall")} | {"n": r["n"]}
                              for pair, r in rep["retrieval"]["pairs"].items()}
    _print(brief)
    return 0


# -------------------------------------------------------------------------------------------------------- outliers

def _add_outliers(sub) -> None:
    p = sub.add_parser(
        "outliers", help="mislabel candidates (class-centroid distance) and anomaly scores (k-NN)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Per modality, the cosine distance of every labelled object to its labelled class's "
                    "centroid (normalised mean of the train embeddings of that class); objects in the top k of "
                    "several modalities at once are the candidates. Unsupervised: mean distance to the k "
                    "nearest train embeddings (or an isolation forest), and the distance to the nearest class "
                    "centroid. On a synthetic store, ROC AUC and precision@k for recovering the planted "
                    "mislabels and the unseen-class objects are measured. Writes OUT_DIR/outliers.csv (every "
                    "object, every score) and OUT_DIR/outliers.json (candidates, anomalies, metrics).")
    p.add_argument("run_dir", help="a pretraining or fine-tune run directory")
    p.add_argument("--top-k", type=int, default=50, help="per-modality rank cut for candidates (default 50)")
    p.add_argument("--min-modalities", type=int, default=2,
                   help="a candidate ranks in the top k of at least this many modalities (default 2; at most "
                        "the embeddings' modalities: a fine-tune run's single view needs one)")
    p.add_argument("--knn-k", type=int, default=10, help="neighbours of the k-NN anomaly score (default 10)")
    p.add_argument("--unsupervised", default="knn", choices=["knn", "iforest"],
                   help="unsupervised score: knn (default) or iforest (scikit-learn)")
    p.add_argument("--rank-by", default="class_z", choices=["class_z", "distance"],
                   help="per-modality ranking: class_z (distance as a robust z-score within its class; default) "
                        "or distance (the raw cosine distance, the paper's rule)")
    p.add_argument("--list", type=non_negative_int, default=50, dest="n_list",
                   help="candidates / anomalies listed in the JSON")
    p.add_argument("--index", default="auto", choices=["auto", "exact", "flat", "hnsw", "ivf"], help=_INDEX_HELP)
    p.add_argument("--embeddings", help=_EMB_HELP)
    p.add_argument("--out-dir", help=_OUT_HELP)
    p.set_defaults(func=cmd_outliers)


@_friendly
def cmd_outliers(args) -> int:
    from ..science.outliers import outliers_run

    s = outliers_run(args.run_dir, top_k=args.top_k, min_modalities=args.min_modalities, knn_k=args.knn_k,
                     unsupervised=args.unsupervised, rank_by=args.rank_by, n_list=args.n_list, index=args.index,
                     out_dir=args.out_dir, embeddings=args.embeddings)
    brief = {k: s[k] for k in ("n_objects", "n_labelled", "n_candidates", "candidates_mislabeled_fraction")
             if k in s}
    brief["top_candidates"] = [(c["object_id"], c["class"], c["n_top"]) for c in s["candidates"][:10]]
    if "metrics" in s:
        brief["truth"] = s["truth"]
        brief["metrics"] = {grp: {key: {m: round(v, 4) for m, v in met.items()
                                        if m in ("roc_auc", "precision_at_10", "precision_at_50", "r_precision")}
                                  for key, met in d.items()} for grp, d in s["metrics"].items()}
    _print(brief)
    return 0


# ------------------------------------------------------------------------------------------------------------ umap

def _add_umap(sub) -> None:
    p = sub.add_parser(
        "umap", help="2-D UMAP of the averaged embeddings, coloured by class (PNG)",
        description="UMAP (umap-learn; the paper's n_neighbors 45, min_dist 0.7, cosine) of one embedding view, "
                    "coloured by class, objects of classes unseen in training overlaid in black. Writes "
                    "OUT_DIR/umap_<view>.png, .csv (coordinates) and .json.")
    p.add_argument("run_dir", help="a pretraining or fine-tune run directory")
    p.add_argument("--view", default="average",
                   help="embedding view to project: a modality, a fine-tune run's mode or average (default average)")
    p.add_argument("--n-neighbors", type=_two_or_more, default=45,
                   help="default 45 (the paper's); at most the objects projected less one")
    p.add_argument("--min-dist", type=float, default=0.7, help="default 0.7 (the paper's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-points", type=non_negative_int,
                   help="random subsample for very large stores (0: every object)")
    p.add_argument("--n-epochs", type=int, help="UMAP optimisation epochs (default: UMAP's choice)")
    p.add_argument("--embeddings", help=_EMB_HELP)
    p.add_argument("--out-dir", help=_OUT_HELP)
    p.set_defaults(func=cmd_umap)


@_friendly
def cmd_umap(args) -> int:
    from ..science.umap_view import umap_run

    _print(umap_run(args.run_dir, view=args.view, n_neighbors=args.n_neighbors, min_dist=args.min_dist,
                    seed=args.seed, max_points=args.max_points, n_epochs=args.n_epochs, out_dir=args.out_dir,
                    embeddings=args.embeddings))
    return 0


# -------------------------------------------------------------------------------------------------------- subtypes

def _add_subtypes(sub) -> None:
    p = sub.add_parser(
        "subtypes", help="cluster one class into 2 groups; adjusted Rand index vs its hidden sub-types",
        description="Clusters the objects of one class (k-means or agglomerative, k = 2) in each embedding view "
                    "and in raw-feature baselines (z-scored metadata, a PCA of the spectra, both with the "
                    "photometric features), and measures the adjusted Rand index against the hidden sub-type "
                    "the synthetic generator planted (M: carbon / oxygen-rich; ROT: young active / old quiet). "
                    "Writes OUT_DIR/subtypes_<class>.json.")
    p.add_argument("run_dir", help="a pretraining run directory (its store must come from the generator)")
    p.add_argument("--class", dest="cls", default="M", help="class to split (M or ROT; default M)")
    p.add_argument("--method", default="kmeans", choices=["kmeans", "agglomerative"])
    p.add_argument("--k", type=int, default=2, help="clusters (default 2)")
    p.add_argument("--pca-components", type=int, default=16, help="spectra PCA components of the baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--store", help="data store for the raw-feature baselines (default: the embedded one)")
    p.add_argument("--embeddings", help=_EMB_HELP)
    p.add_argument("--out-dir", help=_OUT_HELP)
    p.set_defaults(func=cmd_subtypes)


@_friendly
def cmd_subtypes(args) -> int:
    from ..science.subtypes import subtypes_run

    r = subtypes_run(args.run_dir, args.cls, method=args.method, k=args.k, pca_components=args.pca_components,
                     seed=args.seed, out_dir=args.out_dir, embeddings=args.embeddings, store=args.store)
    _print({k: r[k] for k in ("class", "n_objects", "subtype_counts", "ari", "best_embedding", "best_baseline")})
    return 0


# ------------------------------------------------------------------------------------------------------------------

COMMANDS = ("embed", "search", "outliers", "umap", "subtypes")


def add_parsers(sub) -> None:
    """Register the science subcommands on an argparse subparsers object (the `astrom3` command line)."""
    _add_embed(sub)
    _add_search(sub)
    _add_outliers(sub)
    _add_umap(sub)
    _add_subtypes(sub)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="astrom3", description="AstroM3 science tools on the embeddings")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """The science subcommands alone, with the error handling of `astrom3`."""
    from .runner import dispatch

    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
