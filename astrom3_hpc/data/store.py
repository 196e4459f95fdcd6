"""The trimodal Zarr v3 store: layout, creation and validated opening. See docs/store.md.

Everything per object lives on one object axis; ragged light curves are flat values plus offsets. Spectra
dominate the bytes, so their chunk length (`chunk_objects`) is the unit the loader shuffles and MPI ranks own.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ..core.constants import SPLIT_SEEDS, SUBSET_FACTORS
from .store_schema import (MODALITIES, PER_OBJECT_ARRAYS, SCHEMA_VERSION, SPLITS, StoreError,  # noqa: F401
                           open_group)

_warned: set[Path] = set()


def _warn_unchecked(path: Path) -> None:
    """Stores built before checksums still open (shapes and chunk files are checked), once with a warning."""
    if path not in _warned:
        _warned.add(path)
        logging.getLogger("astrom3").warning(
            "%s has no checksum table (%s; built by an older astrom3): shapes and chunk files are checked, "
            "chunk contents cannot be; rebuild it with `astrom3 ingest` to make it verifiable",
            path, "checksums.json")


@dataclass(frozen=True)
class Layout:
    n_objects: int
    chunk_objects: int = 64  # spectra: 64 x 3 x 2575 x 4 B = 2 MB per chunk before compression
    table_chunk: int = 8192  # per-object tables (meta, aux, labels): 8192 x 34 x 4 B = 1.1 MB
    # Light-curve points: 32768 x 3 x 4 B = 0.4 MB, about the points of one spectra chunk's 64 objects, so an
    # object chunk touches 2-3 lc chunks; larger lc chunks get decoded once per object chunk touching them.
    lc_chunk: int = 32768
    shard_chunks: int = 0  # spectra chunks per shard (0: unsharded, one file per chunk)
    # Spectra and light-curve points: "none" (the loader copies rows straight out of the page cache), "lz4hc"
    # (half the disk, ~2.5x slower to load) or "lz4" (faster to write than lz4hc, slower to read). See
    # compressor() and docs/store.md.
    compression: str = "none"

    @property
    def block(self) -> int:
        """Objects per write unit of the bulk arrays: ingest ranks owning whole blocks never share a spectra chunk
        or shard file. The small tables are written whole by one rank (data/ingest.py), so their 8192-object
        chunks do not coarsen the ranks' shares: a 6,000-object survey still spreads over every rank."""
        return self.chunk_objects * max(self.shard_chunks, 1)

    def validate(self) -> None:
        for name in ("chunk_objects", "table_chunk", "lc_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"store layout: {name} must be >= 1")
        if self.shard_chunks < 0:
            raise ValueError(f"store layout: shard_chunks must be >= 0 (0: no sharding), got {self.shard_chunks}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"store layout: compression must be one of {COMPRESSIONS}, got {self.compression!r}")


COMPRESSIONS = ("none", "lz4hc", "lz4")


def compressor(compression: str = "lz4") -> list | None:
    """Codecs for an array; the small per-object tables always use "lz4" (read once per job, fast to write).

    Measured on synthetic store chunks, one core (benchmarks/codecs.py, RESULTS.md): Blosc lz4hc (level 5, byte
    shuffle) compresses 1.96x and decodes at 7-8 GB/s; lz4 compresses 1.87x and decodes at 3-4 GB/s but encodes
    ~20x faster (1.4-2 GB/s against 80-90 MB/s); zstd level 1 gives 1.92x at 1.7-2 GB/s. Decoding is what a
    compressed store's loader spends most of its time on, and every rank decodes its own copy, so the bulk
    arrays default to "none": ranks on a node then share one page-cache copy and only copy rows.
    """
    if compression == "none":
        return None
    return [BloscCodec(cname=compression, clevel=5, shuffle="shuffle")]


# name: (trailing shape, dtype, which chunk length along axis 0)


def create_arrays(root: zarr.Group, layout: Layout) -> None:
    """Create every per-object array (empty) in a new store group. One process calls this."""
    layout.validate()
    n = layout.n_objects
    for name, (trail, dtype, chunk_attr) in PER_OBJECT_ARRAYS.items():
        c = getattr(layout, chunk_attr)
        shards = None
        if name == "spec" and layout.shard_chunks:
            shards = (c * layout.shard_chunks, *trail)
        root.create_array(name, shape=(n, *trail), chunks=(c, *trail), shards=shards, dtype=dtype,
                          compressors=compressor(layout.compression if name == "spec" else "lz4"), fill_value=0)


def is_store(path: str | Path) -> bool:
    """Whether `path` is a store `astrom3 ingest` wrote (a Zarr group carrying a schema_version: any version, complete
    or not, since rebuilding an old or interrupted store in place is what `ingest --overwrite` is for)."""
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and meta.get("node_type") == "group"
            and "schema_version" in (meta.get("attributes") or {}))


def modalities_held(present: np.ndarray) -> list[str]:
    """The modalities (store order) that some row of a presence mask (rows, len(MODALITIES)) has."""
    return [m for i, m in enumerate(MODALITIES) if present[:, i].any()]


class Store:
    """Read access to a finished store, validated on open."""

    def __init__(self, path: str | Path, check_chunks: bool = True):
        from . import checksums

        self.path = Path(path)
        checksums.check_root(self.path)
        self.root = open_group(self.path, "r")
        a = dict(self.root.attrs)
        if a.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema_version {a.get('schema_version')!r}, this code reads "
                             f"{SCHEMA_VERSION}; rebuild the store with `astrom3 ingest`")
        if not a.get("complete"):
            raise StoreError(f"{self.path}: the store is not marked complete (interrupted build?)")
        self.attrs = a
        self.n_objects = int(a["n_objects"])
        self.class_names = tuple(a["class_names"])
        self.chunk_objects = int(a["layout"]["chunk_objects"])
        self.table = checksums.read_table(self.path, a)
        if self.table is None:
            _warn_unchecked(self.path)
        if check_chunks:
            self.check_chunks()

    def check_chunks(self) -> None:
        """Every array's shape against n_objects (and against the checksum table), every chunk file present
        with its recorded size: zarr reads a missing chunk as fill values without complaint, and a wrong shape
        in a zarr.json would surface as an IndexError far from the cause. No file is hashed here."""
        from .checksums import ChecksumError
        from .verify import structure_problems

        problems = structure_problems(self.path, self.attrs, self.table)
        if problems:
            more = f"\n(and {len(problems) - 5} more; `astrom3 verify {self.path}` lists all)" \
                if len(problems) > 5 else ""
            raise ChecksumError("\n".join(problems[:5]) + more)

    @property
    def fingerprint(self) -> str | None:
        """The store's content fingerprint (SHA-256 of its checksum table), None for a store without one."""
        return self.attrs.get("checksums", {}).get("fingerprint") if self.table is not None else None

    def digests(self, name: str) -> dict[str, list[int]] | None:
        """{chunk key: [size, crc32c]} of an array's files, None for a store without a checksum table."""
        if self.table is None:
            return None
        return self.table["arrays"].get(name, {}).get("chunks")

    def check_arrays(self, names: list[str]) -> None:
        """Hash every file of these (small) arrays before they are read whole; raises ChecksumError."""
        if self.table is None:
            return
        from .checksums import ChecksumError
        from .verify import content_problems

        problems = content_problems(self.path, self.table, names)
        if problems:
            raise ChecksumError("\n".join(problems))

    def array(self, name: str) -> zarr.Array:
        return self.root[name]

    @cached_property
    def labels(self) -> np.ndarray:
        return self.root["label"][:].astype(np.int64)

    @cached_property
    def offsets(self) -> np.ndarray:
        return self.root["lc/offsets"][:]

    def split(self, seed: int, subset: str = "full", split: str = "train") -> np.ndarray:
        key = f"splits/seed{seed}/{subset}/{split}"
        if seed not in SPLIT_SEEDS or subset not in SUBSET_FACTORS or split not in SPLITS:
            raise StoreError(f"no such split '{key}' (seeds {SPLIT_SEEDS}, subsets {list(SUBSET_FACTORS)})")
        if key not in self.root:
            raise StoreError(f"{self.path}: split array '{key}' is missing")
        return self.root[key][:].astype(np.int64)

    def empty_split_error(self, seed: int, subset: str, split: str) -> StoreError:
        """What to say of a split without objects: a store of objects without a class has none anywhere."""
        why = (": the store holds no object with a class (ingested with --keep-unlabelled from a table without "
               "labels: it is for `astrom3 predict` with a run trained elsewhere)" if not self.class_names else "")
        return StoreError(f"{self.path}: split seed{seed}/{subset}/{split} is empty{why}")

    def check_classifier_splits(self, seed: int, subset: str) -> None:
        """Refuse, before a classifier's run (fine-tune, baseline) makes its run directory, a split it cannot learn
        from or be scored on: an empty train split, or one of a single class, on which any classifier answers that
        class (the baseline crashed in numpy after its fit; a fine-tune trained and reported macro-F1 1.000); an
        empty val or test split, or, for a sub-X subset, an empty full test split, which it is also scored on (the
        baseline failed in scikit-learn after its fit, a fine-tune after training)."""
        reads = [(subset, split) for split in SPLITS] + ([("full", "test")] if subset != "full" else [])
        # Fine-tuning asks before its loader has hashed these, on a store opened without the chunk check: a
        # damaged label or split array must not pass for a split of one class or none.
        self.check_arrays(["label", *(f"splits/seed{seed}/{sub}/{split}" for sub, split in reads)])
        rows = {key: self.split(seed, *key) for key in reads}
        if not len(rows[subset, "train"]):
            raise self.empty_split_error(seed, subset, "train")
        classes = np.unique(self.labels[rows[subset, "train"]])
        if len(classes) < 2:
            name = self.class_names[classes[0]]
            raise ValueError(f"{self.path}: split seed{seed}/{subset}/train holds one class ({name}): a classifier "
                             f"trained on it can only answer {name}; nothing to classify")
        for (sub, split), r in rows.items():
            if not len(r):
                raise self.empty_split_error(seed, sub, split)

    def unlabelled_rows(self) -> np.ndarray:
        """Rows of valid objects without a class (label -1: `ingest lightcurves --keep-unlabelled`, the synthetic
        generator's unseen classes): in no split; fine-tune and baseline runs classify them."""
        return np.flatnonzero(self.root["valid"][:] & (self.labels < 0)).astype(np.int64)

    def valid_rows(self) -> np.ndarray:
        """Every object ingested whole, in a split or not (`astrom3 predict` classifies them all)."""
        return np.flatnonzero(self.root["valid"][:]).astype(np.int64)

    def stats(self, seed: int) -> dict[str, np.ndarray]:
        """Train-split z-score statistics of the given seed (population std, as the reference)."""
        key = f"stats/seed{seed}"
        if key not in self.root:
            raise StoreError(f"{self.path}: statistics '{key}' are missing")
        g = self.root[key]
        return {k: g[k][:] for k in ("meta_mean", "meta_std", "aux_mean", "aux_std")}

    def skipped(self) -> list[dict[str, Any]]:
        p = self.path / "skipped.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else []


def kept_object_names(store) -> np.ndarray | None:
    """The source's own id of every store row where ingestion kept them (object_names.json: ids that are not
    integers), else None: object_id is then the id. Checked against the size and CRC ingestion recorded: lost or
    replaced, it would put row numbers or another store's ids in every predictions file without a word."""
    from .checksums import ChecksumError, side_file_problem

    problem = side_file_problem(store.path, store.attrs, "object_names.json")
    if problem:
        raise ChecksumError(problem)
    p = store.path / "object_names.json"
    if not p.exists():
        return None
    names = json.loads(p.read_text(encoding="utf-8"))
    if len(names) != store.n_objects:
        raise ChecksumError(f"{p}: {len(names)} ids for the store's {store.n_objects} objects")
    return np.asarray(names, dtype=object)


def object_names(store) -> np.ndarray:
    """The source's own id of every store row: the kept names, else object_id."""
    names = kept_object_names(store)
    return store.root["object_id"][:].astype(object) if names is None else names
