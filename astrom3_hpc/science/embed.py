"""`astrom3 embed`: embeddings of every valid object of a store under a trained model, as a Zarr v3 store.

The model: a pretraining run's CLIP (one embedding per modality, in one space), or a fine-tune run's network (one
view named by its mode: the unit vector its head classifies; model.members.ClassifierEmbedding), e.g. a `periodic`
network trained on a photometry-only survey, for similarity search, outliers and UMAP in that survey.

Layout of RUN_DIR/science/embeddings.zarr (one row per embedded object, in store-row order):

    emb/<modality>   (N, D) float32   L2-normalised embedding of each modality of the model (a fine-tune
                                      run: one, named by its mode)
    emb/average      (N, D) float32   L2-normalised mean of the normalised embeddings of the modalities the
                                      object has
    object_id        (N,)   int64     the store's object id
    object_names.json                 the source's own ids of the rows, where the store keeps them (ingest of
                                      ids that are not integers): the ids the science tools write and take
    row              (N,)   int64     row index in the data store (= generator index for synthetic stores)
    label            (N,)   int16     stored label, -1 for classes unseen in training
    present          (N, 3) bool      modalities the object has (photo, spectra, meta)
    split/{train,val,test} (N,) bool  membership in the full subset of the run's split seed
    attrs: schema, complete, modalities, embed_dim, class_names, run_dir, model_kind, store, store_provenance,
           split_seed, sample_seed, model_meta, weights_digest, splits, train_store, n_objects, world_size

Reuse: the science tools take an existing store only where it was made by the run's current best_model.pt
(`weights_digest`, the sha256 of its tensors; stores made before it record the file's bytes, `weights_sha256`,
and are compared by those); one made by other weights (the run resumed and improved since) is embedded again with the
options recorded with it (store, splits, sample seed, training store), as `astrom3 embed` made it.

Distributed: under torchrun / srun / mpiexec every rank embeds a contiguous, chunk-aligned range of the output
rows and writes it directly into the temporary store that rank 0 created; rank 0 marks it complete and renames
it into place after a barrier. One process does the same alone. Readers never see a partial store.

Light curves: the paper preset samples attention keys at evaluation time. The sampler is re-seeded with
`sample_seed` before every batch; in the reference layout one index table is shared by the whole batch, so an
object's embedding is a function of the object alone (not of its batch or rank).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..core.constants import ALL_OBJECTS, SAMPLE_SEED
from ..core.atomic import replace_dir, write_json
from ..core.digests import file_sha256
from ..core.errors import DiskFullError, disk_full, naming_full_disk
from ..data.store import kept_object_names
from ..distributed.env import rank_share
from .common import (AVERAGE, EMBEDDINGS, EMBEDDINGS_SCHEMA, OBJECT_NAMES, Embeddings, average_embedding,
                     check_counts, load_model, read_embeddings, run_config, science_dir)

log = logging.getLogger("astrom3")

CHUNK_ROWS = 4096
NOTHING_WRITTEN = " while embedding; nothing was written: free space and rerun"


def select_rows(store, seed: int, splits: list[str] | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rows to embed (sorted) and their split membership. splits None: every valid object, unseen-class
    objects (in no split) included; else the union of the named splits of the full subset."""
    valid = store.root["valid"][:].astype(bool)
    members = {s: store.split(seed, "full", s) for s in ("train", "val", "test")}
    if splits:
        unknown = sorted(set(splits) - set(members))
        if unknown:
            raise ValueError(f"unknown split(s) {unknown}; choose from train, val, test")
        rows = np.unique(np.concatenate([members[s] for s in splits]))
    else:
        rows = np.flatnonzero(valid)
    flags = {s: np.isin(rows, m) for s, m in members.items()}
    return rows.astype(np.int64), flags


def encode_rows(model, batches, rows: np.ndarray, batch_size: int = 256, sample_seed: int = SAMPLE_SEED,
                device=None) -> dict[str, np.ndarray]:
    """Normalised embeddings per modality of the given store rows, with evaluation (centre) windows."""
    import torch

    from ..train.engine import to_device
    from ..train.pretrain import encode_seeded

    mods = list(model.modalities)
    out: dict[str, list] = {m: [] for m in mods}
    dev = device or next(model.parameters()).device
    with torch.no_grad():
        for k, a in enumerate(range(0, len(rows), batch_size)):
            batch = to_device(batches.make_batch(rows[a:a + batch_size], 0, k), dev)
            for m in mods:
                out[m].append(encode_seeded(model, m, batch, sample_seed).float().cpu().numpy())
    return {m: np.concatenate(v) if v else np.zeros((0, model.embed_dim), np.float32) for m, v in out.items()}


def embed_run(run_dir: str | Path, store: str | Path | None = None, splits: list[str] | None = None,
              out: str | Path | None = None, batch_size: int = 256, sample_seed: int = SAMPLE_SEED,
              chunk_rows: int = CHUNK_ROWS, progress: bool = False,
              train_store: str | Path | None = None) -> dict[str, Any]:
    """Embed a store under the run's best model into `out` (default RUN_DIR/science/embeddings.zarr).

    A pretraining run's inputs are scaled by the embedded store's own train split; a fine-tune run's by its
    training store's (`train_store`: where it moved), as `astrom3 predict` scales them, so an object gets the
    vector its network gives it whichever store holds it.

    Call it on every rank of a distributed job (it initialises the process group via astrom3_hpc.distributed.env) or
    in one process. Returns a summary (on every rank). A job signal stops it with exit 75 (requeue) and nothing
    written: there is nothing worth checkpointing in a pass that takes minutes.
    """
    from ..core.signals import stopped_by

    check_counts(batch_size=batch_size, chunk_rows=chunk_rows)  # before the model is loaded
    out = Path(out) if out is not None else science_dir(run_dir) / EMBEDDINGS
    check_out(out, run_dir, Path(store) if store is not None else Path(run_config(run_dir).data.store))
    with stopped_by(f"embedding {store or 'the run store'} with {run_dir}"):
        # The link's target where `out` is a symbolic link, as ingest does: the new store replaced the link itself
        # and left the old embeddings where the link pointed.
        return _embed_run(run_dir, store, splits, out.resolve(), batch_size, sample_seed, chunk_rows, progress,
                          train_store)


def check_out(out: Path, run_dir: str | Path, store: Path) -> None:
    """Refuse an `out` whose replacement would lose data: the finished store replaces whatever `out` names,
    which took a user's folder, the store being embedded, or the run dir (best_model.pt, checkpoints/) with it.
    Only an earlier embeddings store may be replaced; `out` may lie inside the run dir (the default does)."""
    target = out.resolve()
    for what, path in (("the run dir", Path(run_dir)), ("the store", store)):
        held = path.resolve()
        if held.is_relative_to(target):
            raise ValueError(f"embeddings output {out} is or holds {what} {path}, which writing it would delete; "
                             f"choose another output")
        if what == "the store" and target.is_relative_to(held):
            raise ValueError(f"embeddings output {out} lies inside the store {path}, which must stay as ingested; "
                             f"choose another output")
    if (out.exists() or out.is_symlink()) and not _is_embeddings(out):
        raise ValueError(f"embeddings output {out} exists and is not an embeddings store ({EMBEDDINGS_SCHEMA}), "
                         f"which writing it would delete; only an earlier one is replaced: choose another output "
                         f"or remove it")


def _is_embeddings(path: Path) -> bool:
    """Whether `path` is an embeddings store as this module writes it. Any version of the format counts: a
    store of an older schema is still one that `astrom3 embed` made and may redo."""
    schema = _attrs(path).get("schema")
    return isinstance(schema, str) and schema.startswith(EMBEDDINGS_SCHEMA.rsplit("/", 1)[0] + "/")


def _embed_run(run_dir, store, splits, out, batch_size, sample_seed, chunk_rows, progress,
               train_store) -> dict[str, Any]:
    import torch
    import zarr

    from .. import distributed as adist
    from ..data.loader import LoaderSpec, TrimodalBatches
    from ..data.store import Store, compressor
    from ..core.progress import Progress
    from ..model.presets import resolve
    from ..model.registry import cached_inputs

    t0 = time.perf_counter()
    # A process group only when launched as several ranks (one process leaves os.environ alone).
    if adist.is_initialized() or adist.detect(use_mpi4py=False).world_size > 1:
        adist.init()
    rank, world = adist.get_rank(), adist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    # Hashed before the weights are read: were best_model.pt replaced in between, the store records the older
    # file and is embedded again on its next use, never taken for the newer model's.
    weights = weights_id(run_dir) if rank == 0 else None
    model, cfg, meta = load_model(run_dir, device)
    store_path = Path(store) if store is not None else Path(cfg.data.store)
    if not store_path.exists():
        raise FileNotFoundError(f"store {store_path} (from the run's config) does not exist; pass --store")
    st = Store(store_path)
    norm = None
    if meta.get("kind") == "finetune":
        from ..train.predict import network_training_store

        trained_on = network_training_store(Path(run_dir), cfg, None if train_store is None else str(train_store))
        if trained_on.path.resolve() != store_path.resolve():
            norm = str(trained_on.path)
    seed = cfg.data.seed
    if norm is None and len(st.split(seed, "full", "train")) == 0:
        # Its statistics would be placeholders (mean 0, std 1): every vector silently off.
        raise ValueError(f"{store_path} has no train split of seed {seed} to scale the inputs of {run_dir} by "
                         f"(no object with a class); embed it with a fine-tune run, which scales by its own "
                         f"training store")
    rows, flags = select_rows(st, seed, splits)
    n, dim = len(rows), int(model.embed_dim)
    mods = list(model.modalities)
    # The loader's own split is unused (encode_rows reads the rows above): every object, so that a store without
    # classes (ingested for `predict`) can be embedded too.
    batches = TrimodalBatches(LoaderSpec(store=str(store_path), seed=seed, split=ALL_OBJECTS, train=False,
                                         batch_size=batch_size, use_rfr_score=cfg.data.use_rfr_score,
                                         read_spectra="spectra" in getattr(model, "reads", mods), norm_store=norm,
                                         **cached_inputs(resolve(cfg.model))))

    # Rank 0 creates the temporary store (every array, the small tables filled in); the others get its path.
    setup: Any = None
    if rank == 0:
        record = {WEIGHTS: weights, "splits": splits, "train_store": train_store and str(train_store)}
        try:
            setup = str(_create(out, st, cfg, meta, run_dir, store_path, rows, flags, mods, dim, chunk_rows,
                                sample_seed, world, compressor, record))
        except Exception as e:  # noqa: BLE001 - forwarded to every rank
            setup = disk_full(e, out, NOTHING_WRITTEN) or e
    setup = adist.broadcast_object(setup)
    if isinstance(setup, Exception):
        raise setup
    tmp = Path(setup)

    error = None
    try:  # everything from here on inside: a failure on any rank removes the temporary store
        lo, hi = rank_share(n, chunk_rows, rank, world)
        root = zarr.open_group(str(tmp), mode="r+")
        with Progress(hi - lo, f"embed rank {rank}", enabled=progress and rank == 0) as bar:
            for a in range(lo, hi, chunk_rows):
                z = min(a + chunk_rows, hi)
                emb = encode_rows(model, batches, rows[a:z], batch_size, sample_seed, device)
                for m in mods:
                    root[f"emb/{m}"][a:z] = emb[m]
                root[f"emb/{AVERAGE}"][a:z] = average_embedding([emb[m] for m in mods], _presence(st, rows[a:z], mods))
                bar.update(z - a)
    except Exception as e:  # noqa: BLE001
        import traceback

        # A full disk is one line naming the output (DiskFullError, exit 1), not a traceback through zarr.
        error = disk_full(e, out, NOTHING_WRITTEN)
        if error is None:
            error = f"rank {rank}: {traceback.format_exc()}"
            log.error("embedding failed on rank %d: %s", rank, e)
    except BaseException:  # a job signal or Ctrl-C on every rank: the half-filled store must not outlive the job
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        return _finish(tmp, out, error, rank, world, n, dim, mods, t0)
    finally:  # replace_dir moved it into place unless something failed
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)


def _finish(tmp: Path, out: Path, error, rank: int, world: int, n: int, dim: int, mods: list[str],
            t0: float) -> dict[str, Any]:
    import zarr

    from .. import distributed as adist
    from ..distributed.collectives import gather_objects

    errors = [e for e in gather_objects(error) if e]
    if errors:
        adist.barrier()
        full = next((e for e in errors if isinstance(e, DiskFullError)), None)
        if full is not None:
            raise full
        raise RuntimeError("embedding failed, nothing was written:\n" + "\n".join(errors))
    adist.barrier()
    elapsed = time.perf_counter() - t0
    summary = {"embeddings": str(out), "n_objects": n, "embed_dim": dim, "modalities": mods + [AVERAGE],
               "world_size": world, "seconds": round(elapsed, 2),
               "objects_per_second": round(n / max(elapsed, 1e-9), 1)}
    failure: BaseException | None = None
    if rank == 0:
        try:
            with naming_full_disk(out, NOTHING_WRITTEN):
                root = zarr.open_group(str(tmp), mode="r+")
                root.attrs.update({"complete": True, "summary": summary})
                replace_dir(tmp, out)
        except Exception as e:  # noqa: BLE001 - forwarded to every rank
            failure = e
        else:
            log.info("embedded %d objects (%s) into %s in %.1f s on %d rank(s)", n, ", ".join(mods), out, elapsed,
                     world)
    # Rank 0's last write decides for every rank: the others waited at a barrier for ever where it failed.
    failure = adist.broadcast_object(failure)
    if failure is not None:
        raise failure
    return summary


def _presence(st, rows: np.ndarray, mods: list[str]) -> np.ndarray:
    """(len(rows), len(mods)) bool: which of the model's modalities each object has (True for modalities the
    store does not track)."""
    from ..data.store import MODALITIES

    p = st.root["present"].oindex[rows] if len(rows) else np.zeros((0, len(MODALITIES)), bool)
    return np.stack([p[:, MODALITIES.index(m)] if m in MODALITIES else np.ones(len(rows), bool) for m in mods],
                    axis=1)


def _create(out: Path, st, cfg, meta, run_dir, store_path, rows, flags, mods, dim, chunk_rows, sample_seed,
            world, compressor, record) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        _fill_tables(tmp, st, cfg, meta, run_dir, store_path, rows, flags, mods, dim, chunk_rows, sample_seed, world,
                     compressor, record)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _fill_tables(tmp: Path, st, cfg, meta, run_dir, store_path, rows, flags, mods, dim, chunk_rows, sample_seed,
                 world, compressor, record) -> None:
    import zarr

    from ..data.store import MODALITIES

    n = len(rows)
    c = max(min(chunk_rows, n), 1)
    with zarr.config.set({"array.write_empty_chunks": True}):
        root = zarr.open_group(str(tmp), mode="w")
        for v in mods + [AVERAGE]:
            root.create_array(f"emb/{v}", shape=(n, dim), chunks=(c, dim), dtype="float32",
                              compressors=compressor(), fill_value=0)
        present = st.root["present"][:][rows]
        tables = {"object_id": st.root["object_id"][:][rows].astype(np.int64), "row": rows.astype(np.int64),
                  "label": st.labels[rows].astype(np.int16), "present": present.astype(bool),
                  **{f"split/{s}": f.astype(bool) for s, f in flags.items()}}
        for name, data in tables.items():
            root.create_array(name, shape=data.shape, chunks=(c, *data.shape[1:]), dtype=data.dtype,
                              compressors=compressor(), fill_value=0)
            if n:
                root[name][:] = data
        names = kept_object_names(st)
        if names is not None:  # else object_id is the id users know; here it is only the row's number
            write_json(tmp / OBJECT_NAMES, [str(x) for x in names[rows]], indent=None)
        root.attrs.update({
            "schema": EMBEDDINGS_SCHEMA, "complete": False, "modalities": mods, "embed_dim": dim,
            "store_modalities": list(MODALITIES), "class_names": list(st.class_names),
            "run_dir": str(Path(run_dir).resolve()), "store": str(Path(store_path).resolve()),
            "store_provenance": st.attrs.get("provenance"), "split_seed": int(cfg.data.seed),
            "sample_seed": int(sample_seed), "model_preset": cfg.model.preset,
            "model_kind": meta.get("kind", "pretrain"),
            "model_meta": _model_meta(meta), **record,
            "n_objects": n, "world_size": world, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })


def embeddings_for(run_dir: str | Path, out_dir: str | Path | None = None, embeddings: str | Path | None = None,
                   auto: bool = True) -> Embeddings:
    """The embeddings of a run: `embeddings` if given, else SCIENCE_DIR/embeddings.zarr, computed (one process)
    when missing or made by other weights than the run's best_model.pt, and `auto`. A given store made by other
    weights is read as it is, with a warning."""
    path = Path(embeddings) if embeddings else science_dir(run_dir, out_dir) / EMBEDDINGS
    own = auto and embeddings is None
    if (path / "zarr.json").exists():
        attrs = _attrs(path)
        checked = attrs.get("schema") == EMBEDDINGS_SCHEMA and attrs.get("complete")  # else read_embeddings says
        why = _stale(attrs, path, run_dir) if checked else None
        if why and own:
            log.info("%s: embedding the run's store again (astrom3 embed)", why)
            embed_run(run_dir, out=path, store=attrs.get("store"), splits=attrs.get("splits"),
                      sample_seed=int(attrs.get("sample_seed", SAMPLE_SEED)), train_store=attrs.get("train_store"))
        elif why:
            log.warning("%s; reading it as given: rerun `astrom3 embed %s` for the run's current model", why, run_dir)
    elif own:
        log.info("%s does not exist yet: embedding the run's store first (astrom3 embed)", path)
        embed_run(run_dir, out=path)
    return read_embeddings(path)


WEIGHTS = "weights_digest"
FILE_HASH = "weights_sha256"  # what stores made before WEIGHTS recorded: the sha256 of best_model.pt's bytes


def weights_id(run_dir: str | Path) -> str | None:
    """sha256 of the tensors of the run's best_model.pt (None where there is none): the content, so a copied or
    moved run dir keeps its embeddings, and weights saved again with the same epoch and metrics still differ. Not
    of the file's bytes: torch.save names its archive after the temporary file, so a deterministic rerun's same
    tensors would be embedded again."""
    from ..train.checkpoint import BEST_MODEL, weights_digest

    path = Path(run_dir) / BEST_MODEL
    return weights_digest(path) if path.is_file() else None


def weights_mismatch(attrs: dict, where: str | Path, sha: str | None, meta: dict | None,
                     warn: bool = True, best: Path | None = None) -> str | None:
    """Why embeddings (their attrs) were not made by the weights of tensor hash `sha` and meta `meta`, or None. A
    store that records only its file's hash is compared with `best`'s bytes; one written before any hash was
    recorded, by epoch and validation metrics: where those agree it is taken, with a warning (`warn`), as weights
    without an epoch (imported) or saved again alike cannot be told apart."""
    then = attrs.get("model_meta") or {}
    recorded = attrs.get(WEIGHTS)
    if recorded is None and attrs.get(FILE_HASH) is not None and best is not None and best.is_file():
        recorded, sha = attrs[FILE_HASH], file_sha256(best)
    if recorded is not None and sha is not None:
        same = recorded == sha
    elif meta is not None:
        # Through JSON as the attrs went, so that floats and tuples compare as they were stored.
        same = json.loads(json.dumps(_model_meta(meta), default=str)) == then
        if same and warn:
            log.warning("%s records no weights hash (made before embeddings recorded it): its model's epoch and "
                        "validation metrics match best_model.pt, which is all that can be checked; `astrom3 embed "
                        "%s` records it", where, attrs.get("run_dir"))
    else:
        return None
    if same:
        return None
    return (f"{where} was made by other weights than the run's best_model.pt ({_epoch(then)} then, "
            f"{_epoch(meta)} now)")


def _stale(attrs: dict, path: Path, run_dir: str | Path) -> str | None:
    from ..train.checkpoint import BEST_MODEL, load_weights

    sha = weights_id(run_dir)
    if sha is None:
        log.warning("%s has no %s: %s cannot be checked against the run's model", run_dir, BEST_MODEL, path)
        return None
    if attrs.get(WEIGHTS) == sha:  # the common case: no need to read the weights
        return None
    best = Path(run_dir) / BEST_MODEL
    return weights_mismatch(attrs, path, sha, load_weights(best).get("meta") or {}, best=best)


def _attrs(path: Path) -> dict:
    try:
        attrs = json.loads((path / "zarr.json").read_text(encoding="utf-8")).get("attributes") or {}
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return {}  # read_embeddings says what is wrong with it
    return attrs if isinstance(attrs, dict) else {}


def _model_meta(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k in ("epoch", "seed", "kind", "val")}


def _epoch(meta: dict | None) -> str:
    epoch = (meta or {}).get("epoch")
    return "unknown epoch (imported weights)" if epoch is None else f"epoch {epoch}"
