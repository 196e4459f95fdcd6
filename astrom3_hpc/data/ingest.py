"""Build a store from any RawSource: one path for synthetic and real data, serial or under `mpiexec`.

Phase 1: every rank preprocesses a contiguous range of whole blocks (see Layout.block: one spectra chunk or
shard), writes its spectra directly and keeps its rows of the small per-object tables; its light-curve points go
to a private part array (their global offsets are unknown until every rank has counted). Rank 0 gathers the
table rows and writes each table whole (a few hundred bytes per object; owning whole 8192-object table chunks
instead would leave all but one rank idle on a store of a few thousand objects). Phase 2: each rank copies the
light-curve chunks it owns from the parts into the final flat array. Rank 0 then writes offsets, splits and
z-score statistics, marks the store complete and renames it into place. Until that rename the store exists only
under a `.tmp-` name.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .. import __version__
from ..core.atomic import replace_dir, write_json
from ..core.constants import META_COLUMNS
from ..core.errors import DiskFullError, disk_full, naming_full_disk
from ..core.progress import Progress
from ..distributed.env import rank_share
from ..distributed.mpi_comm import MpiComm
from .preprocess import META_NAN_POLICIES, MissingMetadataError, preprocess
from . import class_notes, ingest_notes
from .checksums import side_file_records, write_table
from .raw import BadInputError, InputFileError, RawSource
from .split_files import PublishedSplits, read_split_dir, resolve_splits
from .periods import PERIOD_SEARCH_COLUMNS
from .splits import classes_missing_from_splits, given_splits
from .store import MODALITIES, SCHEMA_VERSION, Layout, compressor, create_arrays, is_store
from .tempdirs import removed_if_interrupted

log = logging.getLogger("astrom3")

PERIOD_SEARCH = "lc/period_search"
OBJECT_NAMES = "object_names.json"  # the source's own ids, by row, when they are not integers
_NO_SEARCH = np.full(len(PERIOD_SEARCH_COLUMNS), np.nan, np.float32)
# How a full disk's one line ends (DiskFullError, exit 1: not the bad input of exit 2).
NOTHING_WRITTEN = " while ingesting; nothing was written: free space and rerun"


class IngestError(RuntimeError):
    pass


@dataclass
class IngestOptions:
    on_error: str = "fail"  # "fail": stop at the first bad object; "skip": record it in skipped.json
    error_channel: str = "ivar"  # spectrum error channel: the reference's "ivar" or the corrected "sigma"
    # NaN metadata: "fail" (a BadInputError naming object and column), "skip" (leave the object out, whatever
    # on_error says) or "impute" (store NaN + a presence mask; the loader fills the split seed's train median).
    meta_nan: str = "fail"
    # Published split files ({subset}/{seed}/{train,val,test}.csv, see split_files.py); None: the source's own
    # (`source.published_splits()`, e.g. the AstroM3 raw layout's), if any. Absent (subset, seed) are generated.
    splits_from: str | Path | None = None
    overwrite: bool = False
    progress: bool = True
    layout_kw: dict[str, Any] = field(default_factory=dict)  # store.Layout fields: chunk sizes, shards, compression


def ingest(source: RawSource, out: str | Path, options: IngestOptions | None = None) -> dict[str, Any]:
    """Build the store at `out` from `source`. Every rank of an MPI job calls this with the same arguments.
    Interrupted (Ctrl-C, SIGTERM) or failed, it removes its temporary directory (data/tempdirs.py)."""
    with removed_if_interrupted() as pending:
        return _ingest(source, out, options, pending)


def _ingest(source: RawSource, out: str | Path, options: IngestOptions | None, pending: list[Path]
            ) -> dict[str, Any]:
    opt = options or IngestOptions()
    if opt.on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {opt.on_error!r}")
    if opt.meta_nan not in META_NAN_POLICIES:
        raise ValueError(f"meta_nan must be one of {META_NAN_POLICIES}, got {opt.meta_nan!r}")
    comm = MpiComm()
    out = Path(out).resolve()
    layout = Layout(n_objects=len(source), **opt.layout_kw)
    try:
        layout.validate()
    except ValueError as e:
        raise IngestError(f"ingestion into {out}: {e}") from None
    t0 = time.perf_counter()

    # Rank 0 creates the temporary store; the others open it after the broadcast.
    setup = None
    published: PublishedSplits | None = None
    if comm.rank == 0:
        try:
            # Split files are checked before anything is written: a bad one costs no preprocessing.
            if opt.splits_from is not None:
                published = read_split_dir(opt.splits_from)
            elif hasattr(source, "published_splits"):  # e.g. the AstroM3 raw layout's splits/ and catalogues
                published = source.published_splits()
            setup = _create(source, out, layout, opt, comm.size)
        except Exception as e:  # noqa: BLE001 - forwarded to every rank
            setup = disk_full(e, out, NOTHING_WRITTEN) or e
    setup = comm.bcast(setup)
    if isinstance(setup, Exception):
        raise setup
    tmp = Path(setup)
    if comm.rank == 0:
        pending.append(tmp)  # the creator removes it

    lo, hi = rank_share(layout.n_objects, layout.block, comm.rank, comm.size)
    status: dict[str, Any] = {"skipped": [], "error": None, "lc_points": 0, "objects": hi - lo,
                              "notes": ingest_notes.empty()}
    table = _TableRows()
    try:
        with zarr.config.set({"array.write_empty_chunks": True}):
            _phase1(source, tmp, layout, opt, comm, lo, hi, status, table)
    except Exception as e:  # noqa: BLE001
        full = disk_full(e, out, NOTHING_WRITTEN)
        status["error"] = (str(full) if full else f"{type(e).__name__}: {e}" if isinstance(e, BadInputError)
                           else str(e) if isinstance(e, InputFileError) else traceback.format_exc())
        status["one_object"] = isinstance(e, BadInputError)  # what --on-error skip could step over
        status["full"] = full and full.errno
    statuses = comm.allgather(status)
    errors = [s["error"] for s in statuses if s["error"]]
    tables = comm.gather([] if errors else table.arrays())
    if errors:
        comm.barrier()
        if comm.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        full = next((s for s in statuses if s.get("full")), None)
        if full is not None:  # no bad input: exit 1, one line, as a full disk during training
            raise DiskFullError(full["error"], full["full"])
        hint = "" if opt.on_error == "skip" or not any(s.get("one_object") for s in statuses) else \
            "\n(--on-error skip keeps going and lists bad objects in skipped.json)"
        raise IngestError(f"ingestion into {out} failed, nothing was written:\n" + "\n".join(errors) + hint)

    part_sizes = [s["lc_points"] for s in statuses]
    with zarr.config.set({"array.write_empty_chunks": True}):
        failed = None
        if comm.rank == 0:
            try:
                root = zarr.open_group(str(tmp), mode="r+")
                _write_tables(root, tables)
                root.create_array("lc/values", shape=(sum(part_sizes), 3), chunks=(layout.lc_chunk, 3),
                                  dtype="float32", compressors=compressor(layout.compression), fill_value=0)
            except Exception as e:  # noqa: BLE001 - forwarded to every rank, which would otherwise wait forever
                failed = disk_full(e, out, NOTHING_WRITTEN) or e
                shutil.rmtree(tmp, ignore_errors=True)
        failed = comm.bcast(failed)
        if isinstance(failed, DiskFullError):
            raise failed
        if failed is not None:
            raise IngestError(f"ingestion into {out} failed, nothing was written: {failed}") from None
        with naming_full_disk(out, NOTHING_WRITTEN):  # the temporary store goes with the error (`pending`)
            _phase2_lc(tmp, layout, part_sizes, comm)
        comm.barrier()
        skipped = sorted((s for st in statuses for s in st["skipped"]), key=lambda s: s["index"])
        summary = None
        if comm.rank == 0:
            try:
                summary = _finish(tmp, out, layout, skipped, opt, published, time.perf_counter() - t0,
                                  [st["objects"] for st in statuses], source,
                                  ingest_notes.summed([st["notes"] for st in statuses]))
            except Exception as e:  # noqa: BLE001 - forwarded to every rank; nothing half-written stays behind
                summary = disk_full(e, out, NOTHING_WRITTEN) or e
                shutil.rmtree(tmp, ignore_errors=True)
    summary = comm.bcast(summary)
    if isinstance(summary, (IngestError, DiskFullError)):  # says itself what was kept
        raise summary
    if isinstance(summary, Exception):
        raise IngestError(f"ingestion into {out} failed, nothing was written: {summary}") from None
    return summary


def _create(source: RawSource, out: Path, layout: Layout, opt: IngestOptions, n_ranks: int) -> str:
    if out.exists() and not opt.overwrite:
        raise FileExistsError(f"store {out} already exists; pass --overwrite to replace it")
    if out.exists() and not is_store(out):
        # --overwrite deletes what it replaces: `--out data --overwrite` must not wipe a data directory.
        raise IngestError(f"{out} exists and is not an astrom3 store (no zarr.json with a schema_version); "
                          f"--overwrite replaces only a store: choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with naming_full_disk(out, NOTHING_WRITTEN):  # inside: the space is measured before the partial store goes
            _create_arrays(tmp, source, layout, opt, n_ranks)
    except BaseException:  # the caller's error says nothing was written
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(tmp)


def _create_arrays(tmp: Path, source: RawSource, layout: Layout, opt: IngestOptions, n_ranks: int) -> None:
    root = zarr.open_group(str(tmp), mode="w")
    root.attrs.update({
        "schema_version": SCHEMA_VERSION,
        "complete": False,
        "n_objects": layout.n_objects,
        "class_names": list(source.class_names()),
        "modalities": list(MODALITIES),
        "layout": {"chunk_objects": layout.chunk_objects, "table_chunk": layout.table_chunk,
                   "lc_chunk": layout.lc_chunk, "shard_chunks": layout.shard_chunks,
                   "compression": layout.compression},
        "preprocessing": {"spectrum_error_channel": opt.error_channel, "spectrum_grid": [3850.0, 8998.0, 2.0],
                          "on_error": opt.on_error, "meta_nan": opt.meta_nan},
        "provenance": {"source": source.describe(), "astrom3_hpc_version": __version__, "mpi_ranks": n_ranks},
        "period_search_columns": list(PERIOD_SEARCH_COLUMNS),
    })
    create_arrays(root, layout)
    # Which metadata values were observed (False: NaN in the input, filled by the loader under meta_nan impute).
    root.create_array("meta_present", shape=(layout.n_objects, len(META_COLUMNS)), chunks=(layout.table_chunk,
                      len(META_COLUMNS)), dtype="bool", compressors=compressor(), fill_value=False)
    # Optional (older stores lack it): the Lomb-Scargle search of sources that ran one, NaN elsewhere.
    root.create_array(PERIOD_SEARCH, shape=(layout.n_objects, len(PERIOD_SEARCH_COLUMNS)),
                      chunks=(layout.table_chunk, len(PERIOD_SEARCH_COLUMNS)), dtype="float32",
                      compressors=compressor("lz4"), fill_value=float("nan"))


class _TableRows:
    """One rank's rows of the small per-object arrays, in object order. Rows are packed into arrays every
    PACK rows: as Python lists of small arrays a 690,000-object catalogue's rows would take about 1 GB."""

    names = ("object_id", "label", "valid", "present", "lc/length", "lc/stats", "aux", "meta", "meta_present",
             PERIOD_SEARCH)
    PACK = 8192

    def __init__(self):
        self.rows: dict[str, list] = {k: [] for k in self.names}
        self.packed: list[dict[str, np.ndarray]] = []

    def add(self, **row) -> None:
        for k in self.names:
            self.rows[k].append(row[k])
        if len(self.rows["label"]) >= self.PACK:
            self._pack()

    def _pack(self) -> None:
        if self.rows["label"]:
            self.packed.append({k: np.asarray(v) for k, v in self.rows.items()})
            self.rows = {k: [] for k in self.names}

    def arrays(self) -> list[dict[str, np.ndarray]]:
        """The rows as packs of arrays (concatenated once, by _write_tables)."""
        self._pack()
        return self.packed


def _write_tables(root: zarr.Group, per_rank: list[list[dict[str, np.ndarray]]]) -> None:
    """Each small table whole, from the ranks' packs of rows (contiguous object ranges, in rank order)."""
    parts = [t for packs in per_rank for t in packs]
    if not parts:  # no objects at all: the arrays stay empty
        return
    for k in _TableRows.names:
        data = np.concatenate([t[k] for t in parts])
        if len(data) != root[k].shape[0]:
            raise RuntimeError(f"ingestion: {len(data)} rows of {k} for {root[k].shape[0]} objects")
        root[k][:] = data


def _phase1(source: RawSource, tmp: Path, layout: Layout, opt: IngestOptions, comm: MpiComm,
            lo: int, hi: int, status: dict, table: _TableRows) -> None:
    if hasattr(source, "select"):  # optional (raw.RawSource): a source over one shared file keeps only these rows
        source.select(lo, hi)
    root = zarr.open_group(str(tmp), mode="r+")
    part = root.create_array(f"parts/lc{comm.rank}", shape=(0, 3), chunks=(layout.lc_chunk, 3), dtype="float32",
                             compressors=compressor(layout.compression), fill_value=0) if hi > lo else None
    lc_buf: list[np.ndarray] = []
    lc_buffered = 0
    spec_arr = root["spec"]
    n_mod = len(MODALITIES)

    def flush_lc(final: bool) -> None:
        nonlocal lc_buf, lc_buffered
        if not lc_buf:
            return
        data = np.concatenate(lc_buf)
        # Only whole chunks go out before the end, so no chunk of the part is ever rewritten.
        n_write = len(data) if final else (len(data) // layout.lc_chunk) * layout.lc_chunk
        if n_write:
            start = part.shape[0]
            part.resize((start + n_write, 3))
            part[start:start + n_write] = data[:n_write]
        lc_buf = [data[n_write:]] if n_write < len(data) else []
        lc_buffered = len(data) - n_write

    with Progress(hi - lo, f"ingest rank {comm.rank}", enabled=opt.progress and comm.rank == 0) as bar:
        for c0 in range(lo, hi, layout.chunk_objects):
            c1 = min(c0 + layout.chunk_objects, hi)
            spec_block = np.zeros((c1 - c0, *spec_arr.shape[1:]), dtype=np.float32)
            for i in range(c0, c1):
                label = -1
                try:
                    obj = source.get(i)
                    label = obj.label
                    pre, present = preprocess(obj, MODALITIES, opt.error_channel, opt.meta_nan)
                except BadInputError as e:
                    nan_skip = isinstance(e, MissingMetadataError) and opt.meta_nan == "skip"
                    if opt.on_error == "fail" and not nan_skip:
                        raise
                    status["skipped"].append({"index": i, "object_id": e.object_id, "source": e.source,
                                              "reason": e.reason})
                    table.add(object_id=_as_id(e.object_id), label=label, valid=False,
                              present=np.zeros(n_mod, bool), **{"lc/length": 0, "lc/stats": np.zeros(2, np.float32)},
                              aux=np.zeros(4, np.float32), meta=np.zeros(34, np.float32),
                              meta_present=np.zeros(34, bool), **{PERIOD_SEARCH: _NO_SEARCH})
                    continue
                spec_block[i - c0] = pre.spec
                ingest_notes.note(status["notes"], obj, pre.caveats)
                lc_buf.append(pre.lc_values)
                lc_buffered += len(pre.lc_values)
                table.add(object_id=obj.object_id, label=obj.label, valid=True, present=present,
                          **{"lc/length": len(pre.lc_values), "lc/stats": pre.lc_stats, PERIOD_SEARCH:
                             obj.extra.get("period_search", _NO_SEARCH)}, aux=pre.aux, meta=pre.meta,
                          meta_present=np.isfinite(pre.meta))
            spec_arr[c0:c1] = spec_block
            if lc_buffered >= layout.lc_chunk:
                flush_lc(final=False)
            bar.update(c1 - c0, skipped=len(status["skipped"]))
    flush_lc(final=True)
    status["lc_points"] = part.shape[0] if part is not None else 0


def _as_id(object_id: Any) -> int:
    try:
        return int(object_id)
    except (TypeError, ValueError):
        return -1


def _phase2_lc(tmp: Path, layout: Layout, part_sizes: list[int], comm: MpiComm) -> None:
    """Copy light-curve points from the rank parts into the final array; each rank owns whole chunks."""
    root = zarr.open_group(str(tmp), mode="r+")
    dst = root["lc/values"]
    total = dst.shape[0]
    starts = np.concatenate([[0], np.cumsum(part_sizes)])
    n_chunks = -(-total // layout.lc_chunk)
    k0, k1 = rank_share(n_chunks, 1, comm.rank, comm.size)
    for k in range(k0, k1):
        g0, g1 = k * layout.lc_chunk, min((k + 1) * layout.lc_chunk, total)
        pieces = []
        for r, size in enumerate(part_sizes):
            a, b = max(g0, starts[r]), min(g1, starts[r] + size)
            if a < b:
                pieces.append(root[f"parts/lc{r}"][a - starts[r]:b - starts[r]])
        dst[g0:g1] = np.concatenate(pieces)


def _finish(tmp: Path, out: Path, layout: Layout, skipped: list[dict], opt: IngestOptions,
            published: PublishedSplits | None, elapsed: float, rank_objects: list[int],
            source: RawSource | None = None, notes: dict[str, dict] | None = None) -> dict[str, Any]:
    root = zarr.open_group(str(tmp), mode="r+")
    lengths = root["lc/length"][:].astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    root.create_array("lc/offsets", data=offsets, chunks=(max(len(offsets), 1),), compressors=compressor())
    labels = root["label"][:].astype(np.int64)
    if not root["valid"][:].any():  # a store of nothing would only fail later, in whichever job first reads it
        raise ValueError(_nothing_written(layout.n_objects, skipped))
    valid = root["valid"][:] & (labels >= 0)  # unlabelled objects are stored (embed, predict), never split
    present = root["present"][:]
    meta = root["meta"][:].astype(np.float64)
    aux = root["aux"][:].astype(np.float64)
    fixed = getattr(source, "fixed_splits", lambda: None)()
    if fixed:  # the source's own split (ingest lightcurves: --splits-from, --split-column): only its seeds
        all_sets = {seed: given_splits(fixed[seed], labels, valid, seed) for seed in sorted(fixed)}
        split_info = {f"seed{seed}/{sub}": {"origin": "given" if sub in fixed[seed] else "generated"}
                      for seed, sets in all_sets.items() for sub in sets}
    else:
        all_sets, split_info = resolve_splits(published, root["object_id"][:], valid, labels)
    for seed, sets in all_sets.items():
        for subset, parts in sets.items():
            for split, idx in parts.items():
                root.create_array(f"splits/seed{seed}/{subset}/{split}", data=idx.astype(np.int64),
                                  chunks=(max(len(idx), 1),), compressors=compressor())
        train = sets["full"]["train"]
        stats = {}
        for name, values, col in (("meta", meta, 2), ("aux", aux, 0)):
            rows = train[present[train, col]]
            # nan-aware: a catalogue value a source lacks (rfr_score outside ASAS-SN) is stored as NaN.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns and empty splits
                mean = np.nan_to_num(np.nanmean(values[rows], axis=0), nan=0.0)
                std = np.nan_to_num(np.nanstd(values[rows], axis=0), nan=1.0)
                if name == "meta":
                    # Fill value for missing metadata (meta_nan impute): the train median of this seed only.
                    stats["meta_median"] = np.nan_to_num(np.nanmedian(values[rows], axis=0), nan=0.0).astype(
                        np.float32)
            std[std == 0] = 1.0  # a constant column carries no information; keep it at 0 instead of NaN
            stats[f"{name}_mean"], stats[f"{name}_std"] = mean.astype(np.float32), std.astype(np.float32)
        for k, v in stats.items():
            root.create_array(f"stats/seed{seed}/{k}", data=v, chunks=v.shape, compressors=compressor())
    shutil.rmtree(tmp / "parts", ignore_errors=True)
    write_json(tmp / "skipped.json", skipped)
    names = getattr(source, "names", lambda: None)()
    if names is not None:
        write_json(tmp / OBJECT_NAMES, names, indent=None)
    counts = np.bincount(labels[valid], minlength=len(root.attrs["class_names"]))
    kind = root.attrs["provenance"]["source"].get("kind")
    hint = class_notes.merge_hint(kind)
    class_notes.warn(root.attrs["class_names"], kind, getattr(source, "left_out_by_class_map", None),
                     getattr(source, "unmapped_by_class_map", None), getattr(source, "map_keys", ()),
                     bool(getattr(source, "keeps_unlabelled", False)))
    thin = {root.attrs["class_names"][c]: n for c, n in classes_missing_from_splits(all_sets, labels).items()}
    if thin:
        log.warning("%s missing from the validation or test split of some seeds: nothing measures their recall "
                    "there (a generated split puts a class in all three from 8 objects on). %s",
                    ", ".join(f"class {k!r} ({n} object{'s' * (n != 1)})" for k, n in thin.items()),
                    hint[0].upper() + hint[1:])
    summary = {
        # Valid: ingested whole (what `predict` classifies); labelled: those of them with a class (what splits hold).
        "store": str(out), "n_objects": layout.n_objects, "n_valid": int(root["valid"][:].sum()),
        "n_labelled": int(valid.sum()),
        "n_skipped": len(skipped), "lc_points": int(offsets[-1]), "seconds": round(elapsed, 2),
        "objects_per_second": round(layout.n_objects / max(elapsed, 1e-9), 1), "mpi_ranks": len(rank_objects),
        "objects_per_rank": rank_objects,
        "class_counts": dict(zip(root.attrs["class_names"], counts.tolist())),
    }
    if thin:
        summary["classes_missing_from_val_or_test"] = thin
    ingest_notes.report(summary, notes or ingest_notes.empty())
    # Last, once every array file is final: the digests `astrom3 verify` and the loader check against.
    root.attrs.update({"complete": True, "summary": summary, "splits": split_info,
                       "checksums": write_table(tmp), "side_files": side_file_records(tmp)})
    try:
        replace_dir(tmp, out, overwrite=opt.overwrite)  # the check in _create was minutes ago
    except FileExistsError:
        raise IngestError(f"--out {out}: something else created it while this ingest ran; nothing of it was "
                          f"changed and this ingest's store was discarded; pass --overwrite to replace it") from None
    return summary


def _nothing_written(n_objects: int, skipped: list[dict]) -> str:
    if n_objects == 0:
        return "the source has no objects"
    first = skipped[0]
    return (f"all {n_objects} objects were skipped (the first, {first['object_id']} in {first['source']}: "
            f"{first['reason']}); skipped.json would be the whole store")
