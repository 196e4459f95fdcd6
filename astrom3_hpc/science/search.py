"""`astrom3 search`: top-k cosine neighbours within a modality and across modalities, and retrieval recall@k.

Embeddings are unit vectors, so cosine similarity is the inner product. Index kinds (`VectorIndex`):

    exact  numpy, blockwise matrix products (memory bounded); exact
    flat   faiss IndexFlatIP; exact, multi-threaded BLAS
    hnsw   faiss IndexHNSWFlat (inner product); approximate, no training, fast queries
    ivf    faiss IndexIVFFlat (inner product), k-means coarse quantiser; approximate, quick to build
    auto   exact up to AUTO_EXACT_MAX vectors, else ivf (faiss needed; without it: exact, with a warning)

A query is an object of the embeddings store (by object id or store row) or a raw file: an ASAS-SN light curve
(.dat, or .csv with time, flux, flux_err columns) or a LAMOST spectrum (.fits, .fits.gz), run through the same
preprocessing as ingestion, the store's z-score statistics and the model's encoder.
"""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import write_json
from . import require
from .common import Embeddings, check_counts, load_model, normalise, science_dir
from .embed import embeddings_for, weights_id, weights_mismatch

log = logging.getLogger("astrom3")

INDEX_KINDS = ("auto", "exact", "flat", "hnsw", "ivf")
AUTO_EXACT_MAX = 50_000
RECALL_KS = (1, 5, 10)


# ------------------------------------------------------------------------------------------------- indexes

def exact_topk(base: np.ndarray, queries: np.ndarray, k: int, max_block_bytes: int = 256 << 20
               ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products, (sims, idx) each (n_queries, k), best first. Memory: one block of scores and
    their partition indices, max_block_bytes together (a negated copy of the scores and the whole int64 partition,
    kept alive by a view, made it 6x that: 1.5 GB at 16,000 vectors)."""
    base = np.ascontiguousarray(base, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = len(base)
    k = min(k, n)
    block = max(1, int(max_block_bytes // (12 * max(n, 1))))  # 4 bytes a score, 8 its partition index
    sims = np.empty((len(queries), k), np.float32)
    idx = np.empty((len(queries), k), np.int64)
    for a in range(0, len(queries), block):
        neg = queries[a:a + block] @ base.T
        np.negative(neg, out=neg)  # smallest first: argpartition's order
        part = np.argpartition(neg, k - 1, axis=1)[:, :k].copy() if k < n else np.tile(np.arange(n), (len(neg), 1))
        pneg = np.take_along_axis(neg, part, 1)
        del neg
        order = np.lexsort((part, pneg), axis=1)  # by similarity, ties by index (deterministic)
        idx[a:a + block] = np.take_along_axis(part, order, 1)
        sims[a:a + block] = -np.take_along_axis(pneg, order, 1)
    return sims, idx


class VectorIndex:
    """Inner-product (cosine for unit vectors) nearest-neighbour index over `vectors` (N, D)."""

    def __init__(self, vectors: np.ndarray, kind: str = "auto", *, hnsw_m: int = 32, ef_construction: int = 80,
                 ef_search: int = 128, nlist: int | None = None, nprobe: int = 16, train_size: int = 50_000,
                 seed: int = 0):
        if kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = self.vectors.shape
        if kind == "auto":
            kind = "exact"
            if n > AUTO_EXACT_MAX:
                from . import has_module

                if has_module("faiss"):
                    kind = "ivf"
                else:
                    log.warning("%d vectors: an approximate faiss index would be faster; install the science "
                                "extra (faiss-cpu). Using exact numpy search.", n)
        self.kind = kind
        self.params: dict[str, Any] = {}
        t0 = time.perf_counter()
        if kind == "exact":
            self.index = None
        else:
            faiss = require("faiss", f"the '{kind}' search index")
            if kind == "flat":
                self.index = faiss.IndexFlatIP(d)
            elif kind == "hnsw":
                self.index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
                self.index.hnsw.efConstruction = ef_construction
                self.index.hnsw.efSearch = ef_search
                self.params = {"M": hnsw_m, "efConstruction": ef_construction, "efSearch": ef_search}
            else:  # ivf
                nlist = nlist or max(1, min(int(round(math.sqrt(n))), n // 39 or 1))
                quantizer = faiss.IndexFlatIP(d)
                self.index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
                self._quantizer = quantizer  # keep it alive as long as the index
                rng = np.random.default_rng(seed)
                sample = self.vectors if n <= train_size else self.vectors[np.sort(rng.choice(n, train_size, False))]
                self.index.cp.seed = seed
                self.index.train(sample)
                self.index.nprobe = min(nprobe, nlist)
                self.params = {"nlist": nlist, "nprobe": self.index.nprobe, "train_size": len(sample)}
            self.index.add(self.vectors)
        self.build_seconds = time.perf_counter() - t0

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, indices), each (n_queries, k), best first; index -1 where fewer than k were found.
        One query may be given as a vector. A query of another dimension or k < 1 is a ValueError for every
        kind: faiss asserted with no message, and numpy gave k = 0 an empty answer."""
        check_counts(k=k)
        queries = np.atleast_2d(queries)
        dim = self.vectors.shape[1]
        if queries.ndim != 2:
            raise ValueError(f"queries must be a vector or a 2-D array (n_queries, {dim}), got shape {queries.shape}")
        if queries.shape[1] != dim:
            raise ValueError(f"queries have dimension {queries.shape[1]}, the index {dim}")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self))
        if self.index is None:
            return exact_topk(self.vectors, queries, k)
        sims, idx = self.index.search(queries, k)
        return sims, idx.astype(np.int64)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "n": len(self), **self.params, "build_seconds": round(self.build_seconds, 3)}


# ------------------------------------------------------------------------------------------------- recall

def retrieval_recall(a: np.ndarray, b: np.ndarray, ks=RECALL_KS, index: str = "auto") -> dict[str, float | None]:
    """Cross-modal retrieval: object i's `a` embedding queries all `b` embeddings; recall@k = share of objects
    whose own `b` embedding is among the top k. Row i of `a` and `b` must be the same object. Without objects
    recall is undefined: None (null in retrieval.json, which stays strict JSON; bare NaN was written)."""
    if len(a) != len(b):
        raise ValueError("a and b must hold the same objects in the same order")
    if len(a) == 0:
        return {f"recall@{k}": None for k in ks}
    kmax = min(max(ks), len(b))
    _, idx = VectorIndex(b, index).search(a, kmax)
    hit = idx == np.arange(len(a))[:, None]
    return {f"recall@{k}": float(hit[:, :min(k, kmax)].any(1).mean()) for k in ks}


def recall_report(emb: Embeddings, split: str = "test", ks=RECALL_KS, index: str = "auto") -> dict[str, Any]:
    """recall@k for every ordered pair of modalities (and each modality against the averaged embedding is
    omitted: it contains the query) over the objects of `split` ("all": every embedded object) that have both."""
    if split == "all":
        sel = np.ones(len(emb), bool)
    else:
        if split not in emb.splits:
            raise ValueError(f"split must be train, val, test or all, got {split!r}")
        sel = emb.splits[split]
    out: dict[str, Any] = {"split": split, "index": index, "pairs": {}}
    for a in emb.modalities:
        for b in emb.modalities:
            if a == b:
                continue
            ok = sel & emb.has(a) & emb.has(b)
            r = retrieval_recall(emb.view(a)[ok], emb.view(b)[ok], ks, index)
            r["n"] = int(ok.sum())
            if not r["n"]:
                log.warning("retrieval %s->%s: no object of split %s has both: recall undefined (null)", a, b, split)
            r.update({f"chance@{k}": min(k / max(int(ok.sum()), 1), 1.0) for k in ks})
            out["pairs"][f"{a}->{b}"] = r
    return out


# ------------------------------------------------------------------------------------------------- raw queries

def read_lightcurve_file(path: str | Path) -> np.ndarray:
    """(n, 3) [time, flux, flux_err] from an ASAS-SN .dat(.gz) or a CSV (header naming time/hjd/mjd, flux,
    flux_err; or no header and those three columns first). In a CSV, `#` lines are comments and empty or NaN
    cells drop their row; a cell that is not a number is an error naming its line, never a row left out."""
    from ..data.raw import BadInputError
    from ..data.sources.asassn import read_asassn_dat
    from ..data.sources.common import NotANumber, cell_numbers
    from ..data.text_files import open_text

    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".csv") or name.endswith(".csv.gz")):
        return read_asassn_dat(path, path.stem)
    import csv

    with open_text(path) as f:
        rd = csv.reader(f)
        rows = [(rd.line_num, r) for r in rd if r and not r[0].lstrip().startswith("#")]
    if not rows:
        raise BadInputError(path.stem, str(path), "empty light-curve CSV")
    head = [c.strip().lower() for c in rows[0][1]]
    cols = [0, 1, 2]
    body = rows
    try:
        cell_numbers(rows[0][1][:3])
    except NotANumber:  # a header
        body = rows[1:]

        def find(names):
            for nm in names:
                if nm in head:
                    return head.index(nm)
            raise BadInputError(path.stem, str(path), f"CSV header {head} lacks one of {names}")

        cols = [find(("time", "hjd", "mjd", "jd", "t")), find(("flux",)),
                find(("flux_err", "flux_error", "fluxerr", "e_flux", "err"))]
    data = []
    for line, r in body:
        if len(r) <= max(cols):
            raise BadInputError(path.stem, f"{path}:{line}", f"{len(r)} cells, expected at least {max(cols) + 1}")
        try:
            data.append(cell_numbers([r[c] for c in cols]))
        except NotANumber as e:
            raise BadInputError(path.stem, f"{path}:{line}", str(e)) from None
    lc = np.asarray(data, dtype=np.float64).reshape(-1, 3)
    lc = lc[np.isfinite(lc).all(1)]
    if len(lc) == 0:
        raise BadInputError(path.stem, str(path), "no usable rows in light-curve CSV")
    return lc


def file_modality(path: str | Path) -> str:
    name = Path(path).name.lower()
    for suf in (".fits", ".fits.gz", ".fit", ".fit.gz", ".fts"):
        if name.endswith(suf):
            return "spectra"
    for suf in (".dat", ".dat.gz", ".csv", ".csv.gz", ".txt"):
        if name.endswith(suf):
            return "photo"
    raise ValueError(f"cannot tell the modality of {path}: use .dat/.csv (light curve) or .fits (spectrum)")


def lc_model_inputs(values: np.ndarray, lc_stats: np.ndarray, aux_z: np.ndarray) -> dict[str, np.ndarray]:
    """One object's model inputs for the light-curve encoder, exactly as the loader builds them in evaluation
    (centre 200-point window, zero padding with a mask, 9 channels)."""
    from ..core.constants import LC_CHANNELS, SEQ_LEN

    lc = np.zeros((1, SEQ_LEN, LC_CHANNELS), np.float32)
    mask = np.zeros((1, SEQ_LEN), np.float32)
    n = len(values)
    p0 = 0
    if n > SEQ_LEN:
        p0, n = (n - SEQ_LEN) // 2, SEQ_LEN
    lc[0, :n, :3] = values[p0:p0 + n]
    mask[0, :n] = 1.0
    lc[0, :, 3:] = np.concatenate([aux_z, lc_stats]).astype(np.float32)[None, :]
    return {"lc": lc, "lc_mask": mask}


def embed_file(path: str | Path, model, store, seed: int, use_rfr_score: bool = True,
               aux: list[float] | None = None, sample_seed: int | None = None) -> tuple[str, np.ndarray]:
    """(modality, (D,) unit embedding) of a raw light-curve or spectrum file under `model`."""
    import torch

    from ..core.constants import AUX_COLUMNS
    from ..data import preprocess as pp
    from ..data.sources.lamost import read_lamost_fits

    path = Path(path)
    modality = file_modality(path)
    if modality not in model.modalities:
        raise ValueError(f"the model has no '{modality}' encoder (modalities {list(model.modalities)})")
    if modality == "photo":
        lc = read_lightcurve_file(path)
        values, lc_stats = pp.light_curve(lc, path.stem, str(path))
        stats = store.stats(seed)
        if aux is None:
            log.warning("no --aux given for %s: the 4 photometric features (amplitude, period, lksl, rfr_score) "
                        "are set to the train-split mean", path)
            aux_z = np.zeros(len(AUX_COLUMNS), np.float32)
        else:
            # As ingestion: amplitude and lksl the file lacks come from the light curve itself.
            raw = pp.aux_features(np.asarray(aux, np.float64), path.stem, str(path), lc)
            with np.errstate(invalid="ignore"):
                aux_z = ((raw - stats["aux_mean"]) / stats["aux_std"]).astype(np.float32)
            # A feature the source lacks (rfr_score outside ASAS-SN: NaN) gets the train mean, 0 after
            # z-scoring, as the loader gives a stored object; a NaN fed on would make every similarity NaN.
            bad = ~np.isfinite(aux_z)
            if bad.any():
                log.warning("%s: --aux %s not finite: set to the train-split mean", path,
                            ", ".join(np.asarray(AUX_COLUMNS)[bad]))
                aux_z[bad] = 0.0
        if not use_rfr_score:
            aux_z[AUX_COLUMNS.index("rfr_score")] = 0.0
        inputs = lc_model_inputs(values, lc_stats, aux_z)
    else:
        wave, flux, ivar = read_lamost_fits(path, path.stem)
        channel = store.attrs.get("preprocessing", {}).get("spectrum_error_channel", "sigma")
        inputs = {"spec": pp.spectrum(wave, flux, ivar, path.stem, str(path), channel)[None]}
    dev = next(model.parameters()).device
    batch = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dev) for k, v in inputs.items()}
    from ..core.constants import SAMPLE_SEED
    from ..train.pretrain import encode_seeded

    with torch.no_grad():
        seed = SAMPLE_SEED if sample_seed is None else sample_seed
        vec = encode_seeded(model, modality, batch, seed).float().cpu().numpy()[0]
    return modality, vec


# ------------------------------------------------------------------------------------------------- the command

def _neighbours(emb: Embeddings, sims: np.ndarray, idx: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for r, (s, i) in enumerate(zip(sims, idx)):
        if i < 0:
            continue
        out.append({"rank": r + 1, "object_id": emb.object_name(i), "row": int(emb.row[i]),
                    "label": int(emb.label[i]), "class": emb.class_name(int(emb.label[i])),
                    "split": emb.split_name(int(i)), "similarity": float(s)})
    return out


def search_run(run_dir: str | Path, *, object_ids: list[str | int] | None = None, rows: list[int] | None = None,
               query_file: str | Path | None = None, aux: list[float] | None = None, modality: str | None = None,
               targets: list[str] | None = None, k: int = 10, index: str = "auto", recall: bool = False,
               recall_split: str = "test", out_dir: str | Path | None = None,
               embeddings: str | Path | None = None, store: str | Path | None = None) -> dict[str, Any]:
    """Neighbours of each query in each target view, written as JSON under SCIENCE_DIR/search/; with `recall`
    (or without any query) also the cross-modal retrieval report SCIENCE_DIR/retrieval.json. `modality`: the view
    a stored object queries with (default: the embeddings' first, photo for a pretraining run, a fine-tune run's
    single view named by its mode)."""
    check_counts(k=k)  # before an embedding pass
    emb = embeddings_for(run_dir, out_dir, embeddings)
    sci = science_dir(run_dir, out_dir)
    targets = targets or emb.views
    modality = modality or emb.views[0]
    # Views are the run's (a fine-tune run of mode all has "all" and "average"); the query's is checked only
    # where an object queries with it (a file sets its own; the retrieval report needs none).
    for t in targets + ([modality] if object_ids or rows else []):
        emb.view(t)  # raises for an unknown view, naming the ones there are
    queries: list[tuple[str, dict[str, Any], str, np.ndarray]] = []
    for oid in object_ids or []:
        i = emb.position_of_object(oid)
        queries.append((_query_name(emb, i), _describe(emb, i), modality, _stored_query(emb, i, modality)))
    for row in rows or []:
        i = emb.position_of_row(row)
        queries.append((f"row-{row}", _describe(emb, i), modality, _stored_query(emb, i, modality)))
    if query_file is not None:
        from ..data.store import Store
        from ..train.checkpoint import BEST_MODEL

        model, cfg, meta = load_model(run_dir)
        if meta.get("kind") == "finetune":
            raise ValueError(f"--query-file needs a pretraining run, and {run_dir} is a fine-tune run: its "
                             "network reads what ingestion computes (periods, classical features, folds); ingest "
                             "the file with `astrom3 ingest lightcurves` and embed that store (astrom3 embed "
                             "--store), or query by --query / --query-row")
        # Hashed after the weights were read: a best_model.pt replaced in between is refused, never searched
        # with. The embeddings themselves are the run's current ones unless --embeddings named others.
        mixed = weights_mismatch(emb.attrs, emb.path, weights_id(run_dir), meta, warn=False,
                                 best=Path(run_dir) / BEST_MODEL)
        if mixed:
            raise ValueError(f"{mixed}: the query would be embedded by one model and searched among another's "
                             f"vectors; rerun `astrom3 embed {run_dir}`, or search without --embeddings")
        st = Store(store or emb.attrs["store"])
        fmod, vec = embed_file(query_file, model, st, int(emb.attrs["split_seed"]), cfg.data.use_rfr_score, aux,
                                int(emb.attrs.get("sample_seed", 0)))
        queries.append((f"file-{Path(query_file).name}", {"file": str(query_file)}, fmod, vec))
    for name, _, qmod, vec in queries:
        if not np.isfinite(vec).all():
            # Searched on, a NaN vector gives NaN similarities and store rows in order as the "neighbours".
            raise ValueError(f"query {name}: its {qmod} embedding is not finite ({int((~np.isfinite(vec)).sum())}"
                             f" of {vec.size} values); nothing searched")
    indexes: dict[str, tuple[VectorIndex, np.ndarray]] = {}
    report: dict[str, Any] = {"embeddings": str(emb.path), "k": k, "queries": []}
    for name, desc, qmod, vec in queries:
        res: dict[str, Any] = {"query": desc, "name": name, "modality": qmod, "neighbours": {}}
        for t in targets:
            if t not in indexes:
                members = np.flatnonzero(emb.has(t))  # objects lacking modality t are not candidates
                indexes[t] = (VectorIndex(emb.view(t)[members], index), members)
            ix, members = indexes[t]
            sims, idx = ix.search(normalise(vec[None]), k)
            res["neighbours"][t] = _neighbours(emb, sims[0], np.where(idx[0] >= 0, members[idx[0]], -1))
        res["index"] = {t: indexes[t][0].describe() for t in targets}
        write_json(sci / "search" / f"{name}_{qmod}.json", res)
        report["queries"].append(res)
    if recall or not queries:
        rep = recall_report(emb, recall_split, index=index)
        write_json(sci / "retrieval.json", rep)
        report["retrieval"] = rep
    return report


def _stored_query(emb: Embeddings, i: int, modality: str) -> np.ndarray:
    """Object i's `modality` embedding; refused when the object lacks that modality, whose embedding is then
    the encoding of an empty (zero-filled) input: its neighbours would look confident and mean nothing."""
    if not emb.has(modality)[i]:
        have = [v for v in emb.modalities if emb.has(v)[i]]
        raise ValueError(f"object {emb.object_name(i)} (row {int(emb.row[i])}) has no {modality} (store "
                         f"`present` False in {emb.path}); it has: {', '.join(have) or 'no modality'}; query "
                         "one of those with --modality")
    return emb.view(modality)[i]


def _query_name(emb: Embeddings, i: int) -> str:
    """The output file's name for an object query: `object-<id>`. A kept id may hold '/', spaces or anything
    else a table cell can, and be longer than a file name may: such an id is made safe, cut, and followed by
    its row, or "a/b" and "a b" (both "a_b") would write one file."""
    name = str(emb.object_name(i))
    safe = re.sub(r"[^\w.+-]", "_", name)
    if safe == name and len(name.encode()) <= 100:
        return f"object-{name}"
    return f"object-{safe[:80]}-row{int(emb.row[i])}"


def _describe(emb: Embeddings, i: int) -> dict[str, Any]:
    return {"object_id": emb.object_name(i), "row": int(emb.row[i]), "label": int(emb.label[i]),
            "class": emb.class_name(int(emb.label[i])), "split": emb.split_name(i)}


__all__ = ["VectorIndex", "exact_topk", "retrieval_recall", "recall_report", "embed_file", "search_run",
           "read_lightcurve_file", "lc_model_inputs"]
