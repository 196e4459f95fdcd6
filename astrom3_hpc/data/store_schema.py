"""What a finished store is made of, apart from reading it: its schema version, error type, per-object arrays
and group opener. The store (`store.py`), its checksums (`checksums.py`) and `astrom3 verify` (`verify.py`) all
build on this, so none of them imports another to learn the format."""

from __future__ import annotations

from pathlib import Path

import zarr

from ..core.constants import AUX_COLUMNS, META_COLUMNS, MODALITIES, SPEC_CHANNELS, SPEC_LEN

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")


class StoreError(RuntimeError):
    """The store is missing, incomplete, corrupt or of another schema; the message names the path and key."""


PER_OBJECT_ARRAYS: dict[str, tuple[tuple[int, ...], str, str]] = {
    "object_id": ((), "int64", "table_chunk"),
    "label": ((), "int16", "table_chunk"),
    "valid": ((), "bool", "table_chunk"),  # False: the object was skipped at ingestion (see skipped.json)
    "present": ((len(MODALITIES),), "bool", "table_chunk"),
    "lc/length": ((), "int32", "table_chunk"),
    "lc/stats": ((2,), "float32", "table_chunk"),
    "aux": ((len(AUX_COLUMNS),), "float32", "table_chunk"),
    "meta": ((len(META_COLUMNS),), "float32", "table_chunk"),
    "spec": ((SPEC_CHANNELS, SPEC_LEN), "float32", "chunk_objects"),
}


def open_group(path: str | Path, mode: str = "r") -> zarr.Group:
    path = Path(path)
    if not (path / "zarr.json").exists():
        from .tempdirs import leftovers

        # A build killed between its two renames leaves the previous store as .NAME.old-*, its only copy:
        # "build one" sent users to hours of ingest that clean-store-temp undoes at once.
        old = [p for p in leftovers(path) if ".old-" in p.name] if not path.exists() else []
        if old:
            raise StoreError(f"{path} does not exist, but {old[-1]} holds the store an interrupted `astrom3 "
                             f"ingest --overwrite` moved aside: `astrom3 clean-store-temp {path}` puts it back")
        if not path.exists():  # a moved store is not one to build again
            raise StoreError(f"store {path} does not exist (moved? give its new path; else build one with "
                             f"`astrom3 ingest`)")
        raise StoreError(f"{path} is not a Zarr v3 store (no zarr.json); build one with `astrom3 ingest`")
    return zarr.open_group(str(path), mode=mode)
