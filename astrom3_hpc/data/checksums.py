"""Per-file digests of a store, written once at ingestion, checked by `astrom3 verify` and by the loader.

A digest table rather than zarr's `crc32c` codec: the loader reads chunk files itself (data/chunks.py) and
maps uncompressed chunks straight from the page cache, so a codec-level checksum would either be skipped by
that path or break the mapped layout (a 4-byte trailer after every chunk's rows). The table
(`checksums.json` at the store root) records, for every array, its shape, the CRC-32C of its `zarr.json`, and
the size and CRC-32C of every chunk (or shard) file (the checksum of zarr's `crc32c` codec, computed by the
same library, in hardware where the CPU has it: ~5 GB/s per core here, 5x zlib's CRC-32), so hashing a 2 MB
spectra chunk costs ~0.4 ms, once per process. The SHA-256 of the table is the store's content
fingerprint (group attribute `checksums.fingerprint`): it changes with any chunk, any shape, any object.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import google_crc32c  # zarr's own crc32c codec uses it: hardware CRC-32C where the CPU has it
import numpy as np

from ..core.atomic import write_json
from ..core.errors import EXIT_DAMAGED
from .store_schema import StoreError

TABLE = "checksums.json"
ALGORITHM = "crc32c"
_BLOCK = 8 << 20


class ChecksumError(StoreError):
    """A chunk file whose bytes differ from the digest recorded at ingestion; the message names file and array."""

    exit_code = EXIT_DAMAGED


def buffer_crc(buf) -> int:
    # The C extension takes bytes or a read-only array, not a memoryview or an mmap: view those as uint8.
    return google_crc32c.value(buf if isinstance(buf, bytes) else np.frombuffer(buf, np.uint8))


def file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(_BLOCK)
            if not b:
                return crc
            crc = google_crc32c.extend(crc, b)


def read_meta(meta: Path, node: str) -> dict[str, Any]:
    """A node's zarr.json. One that is not a JSON object (truncated, garbled, not UTF-8) is store damage like a
    bad chunk (ChecksumError, exit 3, naming file and node): a bare JSONDecodeError is a ValueError, which the
    CLI reports as bad input (exit 2) naming no file."""
    try:
        m = json.loads(meta.read_bytes())
    except ValueError as e:  # UnicodeDecodeError included
        m = e
    if not isinstance(m, dict):
        why = f"not valid JSON: {m}" if isinstance(m, ValueError) else "not a JSON object"
        raise ChecksumError(f"{meta}: the metadata of {node} is damaged ({why}); rebuild the store with "
                            f"`astrom3 ingest`")
    return m


def check_root(store_dir: str | Path) -> None:
    """zarr parses the root zarr.json on opening, before any check: a garbled one must be named as damage too."""
    p = Path(store_dir) / "zarr.json"
    if p.exists():
        read_meta(p, "the store's root group")


def array_names(store_dir: Path, damaged: dict[str, str] | None = None) -> list[str]:
    """Every array of the store, as its path relative to the store root (the store's files, not zarr's API:
    the table describes bytes on disk). A node whose zarr.json is damaged raises ChecksumError, or, given
    `damaged`, is recorded there ({node: message}) so that `astrom3 verify` can list it with everything else."""
    names = []
    for meta in sorted(store_dir.rglob("zarr.json")):
        rel = meta.parent.relative_to(store_dir).as_posix()
        if rel == ".":
            continue
        try:
            m = read_meta(meta, f"node '{rel}'")
        except ChecksumError as e:
            if damaged is None:
                raise
            damaged[rel] = str(e)
            continue
        if m.get("node_type") == "array":
            names.append(rel)
    return names


def chunk_files(array_dir: Path) -> dict[str, Path]:
    """The array's chunk (or shard) files by key relative to the array dir ('c/3/0/0')."""
    c = array_dir / "c"
    if not c.is_dir():
        return {}
    return {p.relative_to(array_dir).as_posix(): p for p in sorted(c.rglob("*")) if p.is_file()}


def build_table(store_dir: str | Path) -> dict[str, Any]:
    store_dir = Path(store_dir)
    arrays = {}
    for name in array_names(store_dir):
        d = store_dir / name
        meta = (d / "zarr.json").read_bytes()
        arrays[name] = {
            "shape": json.loads(meta)["shape"],
            "meta_crc": buffer_crc(meta),
            "chunks": {k: [p.stat().st_size, file_crc(p)] for k, p in chunk_files(d).items()},
        }
    return {"algorithm": ALGORITHM, "arrays": arrays}


def fingerprint(table: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(table, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_table(store_dir: str | Path) -> dict[str, Any]:
    """Hash every array file of a finished (not yet renamed) store; returns the attribute to record."""
    table = build_table(store_dir)
    write_json(Path(store_dir) / TABLE, table, indent=None)  # ~60 bytes per file, one line
    return {"algorithm": ALGORITHM, "table": TABLE, "fingerprint": fingerprint(table)}


def read_table(store_dir: str | Path, attrs: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The store's checksum table, None for a store built before checksums. A table that does not parse is store
    damage like a bad chunk (ChecksumError, exit 3), not the bad input a bare JSON error would pass for; so is a
    table the store's attributes (`attrs`) say ingestion wrote and that is gone, which would otherwise turn off
    every check under a warning about an older astrom3."""
    p = Path(store_dir) / TABLE
    if not p.exists():
        if (attrs or {}).get("checksums"):
            raise ChecksumError(f"{p}: missing, though the store was built with it (lost in a copy?); copy it "
                                f"back from the store's source or rebuild the store with `astrom3 ingest`")
        return None
    try:
        table = json.loads(p.read_bytes())
    except ValueError as e:  # UnicodeDecodeError included
        raise ChecksumError(f"{p}: the checksum table is damaged (unreadable JSON: {e}); rebuild the store with "
                            f"`astrom3 ingest`") from None
    if not (isinstance(table, dict) and isinstance(table.get("arrays"), dict)):
        raise ChecksumError(f"{p}: the checksum table is damaged (no 'arrays' table); rebuild the store with "
                            f"`astrom3 ingest`")
    return table


SIDE_FILES = ("object_names.json",)  # beside the arrays, read by jobs: their size and CRC sit in the attributes


def side_file_records(store_dir: str | Path) -> dict[str, list[int]]:
    """[size, crc] of each side file the store holds, for its attributes (the table covers arrays only)."""
    return {n: [p.stat().st_size, file_crc(p)] for n in SIDE_FILES if (p := Path(store_dir) / n).exists()}


def side_file_problem(store_dir: str | Path, attrs: dict[str, Any], name: str) -> str | None:
    """Why side file `name` is not what ingestion wrote (gone, other size or CRC), or None."""
    rec = (attrs.get("side_files") or {}).get(name)
    if rec is None:
        return None
    p = Path(store_dir) / name
    if not p.exists():
        why = "missing"
    elif p.stat().st_size != rec[0] or file_crc(p) != rec[1]:
        why = "changed since ingestion"
    else:
        return None
    return f"{p}: {why} (the source's own ids by store row); rebuild the store with `astrom3 ingest`"


def damaged(path: Path, name: str, key: str, why: str) -> str:
    """The one message for a damaged chunk file, shared by `astrom3 verify`, store opening and the loader."""
    return (f"{path}: chunk '{key}' of array '{name}' is damaged ({why}); "
            f"rebuild the store with `astrom3 ingest`")


def check_bytes(buf, expected: list[int], path: Path, name: str, key: str) -> None:
    size, crc = expected
    if len(buf) != size:
        raise ChecksumError(damaged(path, name, key, f"{len(buf)} bytes, {size} written at ingestion"))
    got = buffer_crc(buf)
    if got != crc:
        raise ChecksumError(damaged(path, name, key, f"{ALGORITHM} {got:08x}, {crc:08x} written at ingestion"))


def check_file(path: Path, expected: list[int], name: str, key: str) -> None:
    size, crc = expected
    try:
        have = path.stat().st_size
        if have != size:
            raise ChecksumError(damaged(path, name, key, f"{have} bytes, {size} written at ingestion"))
        got = file_crc(path)
    except FileNotFoundError:
        raise ChecksumError(damaged(path, name, key, "file missing")) from None
    except OSError as e:
        # A colleague's umask-077 chunk, an I/O error: listed like any other damage (verify's exit 3), where it
        # ended verify with a traceback and left the files after it unchecked.
        raise ChecksumError(damaged(path, name, key, f"unreadable: {e.strerror or e}")) from None
    if got != crc:
        raise ChecksumError(damaged(path, name, key, f"{ALGORITHM} {got:08x}, {crc:08x} written at ingestion"))
