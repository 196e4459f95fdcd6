"""Whole-store checks: every array's shape against the store's object count, every chunk file present with its
recorded size (cheap: run on every open), and, for `astrom3 verify`, every file's checksum and every value that must
be finite.

Shapes are read from each array's own `zarr.json`, not through zarr: a damaged metadata file must give a
message naming the array, not an exception from zarr's parser.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..core.constants import AUX_COLUMNS, META_COLUMNS
from . import checksums


def _meta(store_dir: Path, name: str) -> dict[str, Any] | None:
    p = store_dir / name / "zarr.json"
    if not p.is_file():
        return None
    try:
        m = checksums.read_meta(p, f"array '{name}'")
    except checksums.ChecksumError as e:
        return {"_error": str(e)}
    if not isinstance(m.get("shape"), list):
        return {"_error": f"{p}: metadata of array '{name}' has no shape"}
    return m


def expected_shapes(store_dir: Path, attrs: dict[str, Any], names: list[str]) -> dict[str, tuple]:
    """What each array's shape must be, from `n_objects` alone (None: any length along that axis)."""
    from .store_schema import PER_OBJECT_ARRAYS

    n = int(attrs["n_objects"])
    want: dict[str, tuple] = {k: (n, *trail) for k, (trail, _, _) in PER_OBJECT_ARRAYS.items()}
    want["lc/offsets"] = (n + 1,)
    want["lc/values"] = (None, 3)
    for name in names:
        if name.startswith("splits/"):
            want[name] = (None,)
        elif name.startswith("stats/"):
            want[name] = (len(META_COLUMNS) if name.rsplit("/", 1)[-1].startswith("meta") else len(AUX_COLUMNS),)
    return want


def structure_problems(store_dir: str | Path, attrs: dict[str, Any],
                       table: dict[str, Any] | None) -> list[str]:
    """Everything wrong with the store's arrays that needs no hashing: missing arrays, shapes that disagree
    with n_objects or with the table, missing or resized chunk files."""
    store_dir = Path(store_dir)
    n = int(attrs["n_objects"])
    damaged: dict[str, str] = {}
    names = checksums.array_names(store_dir, damaged)
    recorded = table["arrays"] if table else {}
    want = expected_shapes(store_dir, attrs, sorted(set(names) | set(recorded)))
    # The loop below names the known arrays among them as arrays; the rest (groups, unrecorded arrays) here.
    problems = [damaged[k] for k in sorted(set(damaged) - set(want) - set(recorded))]
    for name in sorted(set(want) | set(recorded)):
        m = _meta(store_dir, name)
        if m is None:
            problems.append(f"{store_dir}: array '{name}' is missing")
            continue
        if "_error" in m:
            problems.append(m["_error"])
            continue
        shape = tuple(m["shape"])
        w = want.get(name)
        if w is not None and (len(shape) != len(w) or any(a is not None and a != b for a, b in zip(w, shape))):
            shown = tuple("*" if a is None else a for a in w)
            problems.append(f"{store_dir / name / 'zarr.json'}: array '{name}' has shape {shape}, expected "
                            f"{shown} (n_objects={n})")
            continue
        if name.startswith("splits/") and shape[0] > n:
            problems.append(f"{store_dir / name / 'zarr.json'}: split '{name}' has {shape[0]} rows, more than "
                            f"the store's {n} objects")
            continue
        if name in recorded:
            r = recorded[name]
            if list(shape) != list(r["shape"]):
                problems.append(f"{store_dir / name / 'zarr.json'}: array '{name}' has shape {shape}, "
                                f"{tuple(r['shape'])} at ingestion")
                continue
            files = checksums.chunk_files(store_dir / name)
            for key, (size, _) in r["chunks"].items():
                p = files.get(key)
                if p is None:
                    problems.append(checksums.damaged(store_dir / name / key, name, key, "file missing"))
                elif p.stat().st_size != size:
                    problems.append(checksums.damaged(p, name, key, f"{p.stat().st_size} bytes, {size} written "
                                                                    f"at ingestion"))
        elif table is None:
            problems.extend(_count_problems(store_dir, name, m))
    return problems


def _count_problems(store_dir: Path, name: str, m: dict[str, Any]) -> list[str]:
    """A store without a table: at least every chunk of the per-object arrays must exist (zarr reads a
    missing chunk as fill values). Splits and statistics are written without empty chunks, so an all-zero
    chunk of them is legitimately absent and their files cannot be counted."""
    if name.startswith(("splits/", "stats/")):
        return []
    shape = m["shape"]
    grid = m.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape", shape)
    if not shape or shape[0] == 0:
        return []
    expected = math.prod(-(-s // max(c, 1)) for s, c in zip(shape, grid))
    files = checksums.chunk_files(store_dir / name)
    empty = [k for k, p in files.items() if p.stat().st_size == 0]
    out = [checksums.damaged(files[k], name, k, "0 bytes") for k in empty]
    if len(files) != expected:
        out.append(f"{store_dir / name}: array '{name}' has {len(files)} of {expected} chunk files on disk "
                   f"(missing or deleted chunk files)")
    return out


def content_problems(store_dir: str | Path, table: dict[str, Any], names: list[str] | None = None) -> list[str]:
    """Every recorded file's checksum (arrays `names`, default all); one problem per damaged file."""
    store_dir = Path(store_dir)
    problems = []
    for name, r in table["arrays"].items():
        if names is not None and name not in names:
            continue
        meta = store_dir / name / "zarr.json"
        if meta.exists() and checksums.file_crc(meta) != r["meta_crc"]:
            problems.append(checksums.damaged(meta, name, "zarr.json", "metadata changed since ingestion"))
        for key, expected in r["chunks"].items():
            try:
                checksums.check_file(store_dir / name / key, expected, name, key)
            except checksums.ChecksumError as e:
                problems.append(str(e))
    return problems


# Arrays every valid object holds finite: the normalised light curves and spectra and their scales. (meta and aux
# may hold NaN on purpose: --meta-nan impute, a catalogue value a source lacks.)
_FINITE = ("lc/values", "lc/stats", "spec")
_BLOCK_VALUES = 1 << 22  # values decoded at once: 16 MB of float32


def non_finite_rows(block, first: int, offsets=None):
    """Store rows holding a non-finite value in `block`, rows `first`.. of a per-object array, or, given `offsets`
    (lc/offsets), points `first`.. of the per-point light curves."""
    import numpy as np

    bad = np.flatnonzero(~np.isfinite(block.reshape(len(block), -1)).all(axis=1)) + first
    return bad if offsets is None else np.unique(np.searchsorted(offsets, bad, side="right") - 1)


def shown_ids(ids, limit: int = 10) -> str:
    return ", ".join(map(str, ids[:limit])) + (", ..." if len(ids) > limit else "")


def value_problems(path: Path) -> list[str]:
    """Non-finite values in arrays that must hold none, named with their objects: a store built before ingest
    refused values that overflow float32 is intact byte for byte, and training stops on it."""
    from .store_schema import open_group

    root = open_group(path)
    valid = root["valid"][:]
    out = []
    for name in (n for n in _FINITE if n in root):
        a = root[name]
        offsets = root["lc/offsets"][:] if name == "lc/values" else None
        step = max(1, _BLOCK_VALUES // max(1, math.prod(a.shape[1:])))
        objects: set[int] = set()
        for start in range(0, a.shape[0], step):
            objects.update(int(r) for r in non_finite_rows(a[start:start + step], start, offsets) if valid[r])
        if objects:
            ids = _ids(path, root, sorted(objects))
            out.append(f"{path / name}: array '{name}' holds non-finite values for {len(ids)} valid object(s) "
                       f"(object_id {shown_ids(ids)}): rebuild the store with `astrom3 ingest`, which refuses such "
                       f"objects")
    return out


def _ids(path: Path, root, rows: list[int]):
    """The ids users know the rows by: the kept names (object_names.json) where they read, else object_id."""
    import json

    import numpy as np

    try:
        names = json.loads((path / "object_names.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none kept, or a damaged copy the checksum pass names
        names = None
    if isinstance(names, list) and len(names) == root["object_id"].shape[0]:
        return np.asarray(names, dtype=object)[rows]
    return root["object_id"][:][rows]


def verify_store(path: str | Path) -> tuple[list[str], bool]:
    """(problems, checksummed) for `astrom3 verify`: shapes, chunk files and, when the store has a table,
    every file's checksum."""
    from .store_schema import SCHEMA_VERSION, StoreError, open_group

    path = Path(path)
    checksums.check_root(path)
    attrs = dict(open_group(path).attrs)
    if attrs.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(f"{path}: schema_version {attrs.get('schema_version')!r}, this code reads "
                         f"{SCHEMA_VERSION}; rebuild the store with `astrom3 ingest`")
    problems = [] if attrs.get("complete") else [f"{path}: the store is not marked complete (interrupted build?)"]
    table = checksums.read_table(path, attrs)
    problems += structure_problems(path, attrs, table)
    problems += [p for p in (checksums.side_file_problem(path, attrs, n) for n in checksums.SIDE_FILES) if p]
    if table is not None:
        problems += [p for p in content_problems(path, table) if p not in problems]
        rec = attrs.get("checksums", {}).get("fingerprint")
        if rec and rec != checksums.fingerprint(table):
            problems.append(f"{path / checksums.TABLE}: the checksum table itself changed since ingestion")
    if not problems:  # damaged chunks would only be read as garbage here
        problems += value_problems(path)
    return problems, table is not None
