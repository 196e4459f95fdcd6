"""Similarity-search benchmark: exact vs approximate top-10 at 1,000,000 x 512-d unit vectors.

    python benchmarks/search.py                          # N = 1,000,000, d = 512 (about 2 GB of vectors)
    python benchmarks/search.py --n 200000 --json out.json

Vectors are clustered like real embeddings (not uniform noise, where "nearest neighbour" means little): n/1000
cluster centres on the unit sphere, each point = centre + isotropic noise of a per-cluster width, normalised.
Queries are fresh draws from the same mixture. Ground truth: exact top-10 inner products by numpy blockwise
search over all queries (what `astrom3 search --index exact` runs), which is also the "exact" baseline of every
speed-up; faiss IndexFlatIP, exact as well, is timed on a subset of the queries (--flat-queries). For each
approximate index (the ones `astrom3_hpc.science.search.VectorIndex` builds: IVF-Flat at several nprobe,
HNSW-Flat at several efSearch) the table gives build time, batched query throughput, single-query latency,
recall@10 against the exact result, and the speed-up over exact search (batched and single-query). HNSW is
built on a subset by default (--hnsw-n; it builds at about 1 ms per vector on 2 cores), and compared with exact
search over the same subset. Indexes are built one at a time and freed, so peak memory stays near 2.2 x the
vector bytes (about 4.5 GB at the default size).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="database vectors (default 1,000,000)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200, help="queries (batched)")
    ap.add_argument("--single", type=int, default=20, help="queries timed one at a time (approximate indexes)")
    ap.add_argument("--exact-single", type=int, default=3, help="queries timed one at a time (exact search)")
    ap.add_argument("--flat-queries", type=int, default=20, help="queries for the faiss flat timing")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--clusters", type=int, default=100, help="clusters ('classes') in the data")
    ap.add_argument("--nlist", type=int, default=0, help="IVF lists (default: sqrt(n))")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--hnsw-n", type=int, default=50_000,
                    help="build HNSW on the first N vectors only (0: all). HNSW builds slowly on few cores "
                         "(about 1.5 ms per vector on 2 busy cores at d=512): the default keeps the run short")
    ap.add_argument("--no-hnsw", action="store_true")
    ap.add_argument("--threads", type=int, default=0,
                    help="faiss (OpenMP) and numpy BLAS threads alike (0: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", help="also write the results here")
    return ap.parse_args(argv)


def clustered_vectors(n: int, dim: int, n_clusters: int, seed: int, rank: int = 32, block: int = 65536):
    """(n, dim) float32 unit vectors shaped like class-structured embeddings, and a sampler for queries.

    n_clusters centres on the unit sphere ("classes"); inside a cluster, points spread along the cluster's own
    random `rank`-dimensional subspace (the continuous within-class variation: periods, temperatures, ...) plus
    weak isotropic noise, then are normalised. An IVF index with more lists than clusters must cut clusters
    into cells, and queries near cell borders need several probes: recall is not trivially 1.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bases = rng.standard_normal((n_clusters, rank, dim)).astype(np.float32) / np.float32(np.sqrt(dim))
    spread = rng.uniform(0.5, 1.0, n_clusters).astype(np.float32) / np.float32(np.sqrt(rank) / 2)
    noise = np.float32(0.15 / np.sqrt(dim))
    weights = rng.dirichlet(np.full(n_clusters, 5.0))

    def draw(m: int, rng) -> np.ndarray:
        out = np.empty((m, dim), np.float32)
        for a in range(0, m, block):
            b = min(a + block, m)
            c = rng.choice(n_clusters, b - a, p=weights)
            z = rng.standard_normal((b - a, rank), dtype=np.float32) * spread[c, None]
            x = centres[c]
            order = np.argsort(c, kind="stable")
            bounds = np.flatnonzero(np.diff(c[order])) + 1
            for grp in np.split(order, bounds):
                x[grp] += z[grp] @ bases[c[grp[0]]]
            x += noise * rng.standard_normal((b - a, dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[a:b] = x
        return out

    return draw(n, rng), lambda m: draw(m, np.random.default_rng(seed + 1))


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = [len(set(f[:k]) & set(t[:k])) for f, t in zip(found, truth)]
    return float(np.mean(hits) / k)


def blas_threads() -> int:
    """Threads of numpy's own BLAS (the exact search's matmul), as threadpoolctl sees them."""
    from threadpoolctl import threadpool_info

    own = [d["num_threads"] for d in threadpool_info()
           if d["internal_api"] in ("openblas", "mkl", "blis") and "numpy" in d["filepath"]]
    return own[0] if own else -1


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: kB


WARM = 8  # queries searched untimed before each timing: first touches of the index and lazily built tables


def time_index(name, index, queries, single, k, truth, exact_batch_ms, exact_single_ms, build_s, params):
    index.search(queries[:WARM], k)
    t0 = time.perf_counter()
    _, found = index.search(queries, k)
    batch_ms = (time.perf_counter() - t0) * 1e3 / len(queries)
    lat = []
    for q in queries[:single]:
        t0 = time.perf_counter()
        index.search(q[None], k)
        lat.append((time.perf_counter() - t0) * 1e3)
    single_ms = statistics.median(lat)
    row = {"index": name, **params, "build_s": round(build_s, 2), "batch_ms_per_query": round(batch_ms, 4),
           "single_ms": round(single_ms, 3), f"recall@{k}": round(recall_at(found, truth, k), 4),
           "speedup_batch": round(exact_batch_ms / batch_ms, 1),
           "speedup_single": round(exact_single_ms / single_ms, 1),
           "peak_rss_gb": round(rss_gb(), 2)}
    print(f"{name:<10} {json.dumps(params):<34} build {row['build_s']:>7.1f} s  batch {batch_ms:>8.3f} ms/q  "
          f"single {single_ms:>8.3f} ms  recall@{k} {row[f'recall@{k}']:.4f}  speed-up x{row['speedup_batch']:>6} "
          f"(single x{row['speedup_single']})", flush=True)
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import faiss
    except ImportError:
        print("benchmarks/search.py needs faiss-cpu (pip install 'astrom3-hpc[science]')", file=sys.stderr)
        return 2
    from astrom3_hpc.science.search import exact_topk

    limiter = None
    if args.threads:
        from threadpoolctl import threadpool_limits

        faiss.omp_set_num_threads(args.threads)
        # faiss.omp_set_num_threads leaves numpy's own OpenBLAS (the exact baseline's matmul) at every core: limit
        # every BLAS and OpenMP pool of the process, or the speed-ups compare N faiss threads against all cores.
        limiter = threadpool_limits(limits=args.threads)
    k = args.k
    n_clusters = args.clusters
    t0 = time.perf_counter()
    base, sampler = clustered_vectors(args.n, args.dim, n_clusters, args.seed)
    queries = sampler(args.queries)
    print(f"{args.n:,} x {args.dim} vectors ({base.nbytes / 1e9:.2f} GB) in {n_clusters} clusters, "
          f"{args.queries} queries, k={k}, faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, "
          f"numpy BLAS {blas_threads()} threads; generated in {time.perf_counter() - t0:.1f} s", flush=True)
    results: dict = {"n": args.n, "dim": args.dim, "queries": args.queries, "k": k, "n_clusters": n_clusters,
                     "threads": faiss.omp_get_max_threads(), "blas_threads": blas_threads(),
                     "cpu_count": os.cpu_count(), "rows": []}

    # Exact: numpy blockwise (what `--index exact` runs): the ground truth and the baseline of the speed-ups.
    exact_topk(base, queries[:WARM], k)  # untimed: first pass over the vectors, BLAS threads started
    t0 = time.perf_counter()
    _, truth = exact_topk(base, queries, k)
    exact_batch_ms = (time.perf_counter() - t0) * 1e3 / len(queries)
    lat = []
    for q in queries[:args.exact_single]:
        t1 = time.perf_counter()
        exact_topk(base, q[None], k)
        lat.append((time.perf_counter() - t1) * 1e3)
    exact_single_ms = statistics.median(lat)
    results["rows"].append({"index": "exact", "batch_ms_per_query": round(exact_batch_ms, 3),
                            "single_ms": round(exact_single_ms, 3), f"recall@{k}": 1.0, "speedup_batch": 1.0,
                            "speedup_single": 1.0})
    print(f"{'exact':<10} {'numpy, blockwise':<34} batch {exact_batch_ms:>8.3f} ms/q  single {exact_single_ms:>8.3f} ms"
          f"  (ground truth)", flush=True)
    # faiss IndexFlatIP: also exact (recall 1 up to ties), timed on a subset of the queries.
    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(base)
    build = time.perf_counter() - t0
    nq = min(args.flat_queries, len(queries))
    results["rows"].append(time_index("flat", flat, queries[:nq], min(args.exact_single, nq), k, truth[:nq],
                                      exact_batch_ms, exact_single_ms, build, {"queries": nq}))
    del flat
    gc.collect()

    # IVF-Flat: one build, several nprobe.
    nlist = args.nlist or int(round(np.sqrt(args.n)))
    t0 = time.perf_counter()
    quant = faiss.IndexFlatIP(args.dim)
    ivf = faiss.IndexIVFFlat(quant, args.dim, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(args.seed)
    train = base[np.sort(rng.choice(args.n, min(args.n, max(50_000, 39 * nlist)), replace=False))]
    ivf.train(train)
    del train
    ivf.add(base)
    build = time.perf_counter() - t0
    for nprobe in args.nprobe:
        ivf.nprobe = nprobe
        results["rows"].append(time_index("ivf", ivf, queries, args.single, k, truth, exact_batch_ms,
                                          exact_single_ms, build, {"nlist": nlist, "nprobe": nprobe}))
    del ivf, quant
    gc.collect()

    if not args.no_hnsw:
        m = args.hnsw_n or args.n
        t0 = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(args.dim, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = args.ef_construction
        hnsw.add(base[:m])
        build = time.perf_counter() - t0
        truth_h, ex_b, ex_s = truth, exact_batch_ms, exact_single_ms
        if m < args.n:  # ground truth and exact timings over the same subset
            exact_topk(base[:m], queries[:WARM], k)
            t1 = time.perf_counter()
            _, truth_h = exact_topk(base[:m], queries, k)
            ex_b = (time.perf_counter() - t1) * 1e3 / len(queries)
            lat = []
            for q in queries[:args.exact_single]:
                t1 = time.perf_counter()
                exact_topk(base[:m], q[None], k)
                lat.append((time.perf_counter() - t1) * 1e3)
            ex_s = statistics.median(lat)
            print(f"{'exact':<10} {json.dumps({'n': m}):<34} batch {ex_b:>8.3f} ms/q  single {ex_s:>8.3f} ms",
                  flush=True)
        for ef in args.ef_search:
            hnsw.hnsw.efSearch = ef
            results["rows"].append(time_index("hnsw", hnsw, queries, args.single, k, truth_h, ex_b, ex_s, build,
                                              {"M": args.hnsw_m, "efC": args.ef_construction, "efSearch": ef,
                                               "n": m}))
        del hnsw
        gc.collect()
    results["peak_rss_gb"] = round(rss_gb(), 2)
    print(f"peak RSS {results['peak_rss_gb']} GB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if limiter is not None:
        limiter.restore_original_limits()
    return 0


if __name__ == "__main__":
    sys.exit(main())
