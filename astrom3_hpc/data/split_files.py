"""Published (or user-supplied) split files: read, validate, and turn into store row indices.

Layout (the authors' ``splits/`` directory, or any directory given with ``astrom3 ingest ... --splits-from DIR``)::

    DIR/{subset}/{seed}/{train,val,test}.csv     subset in constants.SUBSET_FACTORS, seed in constants.SPLIT_SEEDS

``DIR`` may also be the folder that holds ``splits/``. Each CSV needs one object-id column (``id``,
``edr3_source_id``, ``source_id`` or ``object_id``, or the column a source names; values "EDR3 <digits>" or plain
digits, or any text where a source parses ids its own way, e.g. `ingest lightcurves`); other columns are ignored.
A (subset, seed) directory must hold all three files.

Any ingest source uses it in two calls::

    published = read_split_dir(DIR)                       # parse + id-level checks, before any object is read
    rows, info = resolve_splits(published, object_ids, valid, labels)   # ids -> row indices, every seed/subset

or, for a source that keeps only the splits it was given (text ids, unknown ids skipped under --on-error skip),
``lookup_rows(published, key, row_of, skip_unknown=True)`` per published (subset, seed).

Checks, each a `SplitFileError` naming the file (and the object id):
- a missing id column, an unparseable id, an id listed twice in one file;
- an object in two of train/val/test of the same (subset, seed);
- a sub-X split not nested in the same seed's full split (object in sub10/42 train but not in full/42 train), or a
  sub-X split published without its seed's full split. Both are errors, not warnings: the leak guard (pretraining
  on full train, fine-tuning and testing on sub-X) is only sound when sub-X train/val/test lie inside full
  train/val/test;
- (at `resolve_splits`) an id that is not an object of the store.

Objects that ingestion skipped as bad input (``valid`` False) are dropped from published splits with a warning
and counted in the split's provenance. Absent (subset, seed) pairs are generated with `splits.py`: a missing sub-X
is capped from the (published or generated) full split of its seed; a missing full split is drawn as before.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Mapping, Union

import numpy as np

from ..core.constants import SPLIT_SEEDS, SUBSET_FACTORS
from .raw import InputFileError
from .splits import split_indices, subset_indices
from .text_files import decoding_errors_named, open_text

log = logging.getLogger("astrom3")

SPLITS = ("train", "val", "test")
ID_COLUMNS = ("id", "edr3_source_id", "source_id", "object_id")
_ID_RE = re.compile(r"^(?:(?:gaia\s*)?(?:edr3|dr3|dr2)\s*)?(\d+)$", re.IGNORECASE)


ObjectKey = Union[int, str]
IdParser = Callable[[str], "ObjectKey | None"]


class SplitFileError(InputFileError):
    """A split file is unusable; the message names the file and, where one is at fault, the object id."""


@dataclass
class PublishedSplits:
    """Object ids per (subset, seed, split) as read from the files, and where each came from."""

    root: Path
    ids: dict[tuple[str, int], dict[str, np.ndarray]] = field(default_factory=dict)
    files: dict[tuple[str, int], dict[str, Path]] = field(default_factory=dict)

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self.ids


def parse_id(text: str) -> int | None:
    m = _ID_RE.match(text.strip())
    return int(m.group(1)) if m else None


def read_split_file(path: Path, id_column: str | None = None, parse: IdParser = parse_id) -> np.ndarray:
    """The object ids of one split CSV, in file order: int64 with the default parser, else str.

    id_column: looked for first, before the usual ID_COLUMNS. parse: text -> id, or None (or "") for a cell
    that is not one."""
    columns = ((id_column,) if id_column else ()) + tuple(c for c in ID_COLUMNS if c != id_column)
    with open_text(path) as fh, decoding_errors_named(path):
        rd = csv.reader(fh)
        header = [h.strip() for h in next(rd, [])]
        col = next((header.index(c) for c in columns if c in header), None)
        if col is None:
            raise SplitFileError(f"split file {path}: no object-id column (need one of {list(columns)}; "
                                 f"header: {header[:8]}{'...' if len(header) > 8 else ''})")
        ids, seen = [], {}
        for line, r in enumerate(rd, start=2):
            if not any(c.strip() for c in r):
                continue
            cell = r[col] if col < len(r) else ""
            oid = parse(cell)
            if oid is None or oid == "":
                raise SplitFileError(f"split file {path}:{line}: not an object id: {cell!r}")
            if oid in seen:
                raise SplitFileError(f"split file {path}:{line}: object {oid} listed twice (first at line "
                                     f"{seen[oid]})")
            seen[oid] = line
            ids.append(oid)
    return np.asarray(ids, dtype=np.int64 if parse is parse_id else str)


def read_split_dir(root: str | Path, id_column: str | None = None, parse: IdParser = parse_id) -> PublishedSplits:
    """Read every ``{subset}/{seed}/{train,val,test}.csv`` under `root` (or under `root`/splits) and check them
    against each other. id_column and parse: as in `read_split_file`."""
    root = Path(root)
    if not root.is_dir():
        raise SplitFileError(f"split directory {root} does not exist")
    if (root / "splits").is_dir():
        root = root / "splits"
    out = PublishedSplits(root)
    for sub_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if sub_dir.name not in SUBSET_FACTORS:
            raise SplitFileError(f"split directory {sub_dir}: unknown subset {sub_dir.name!r} "
                                 f"(expected {list(SUBSET_FACTORS)})")
        for seed_dir in sorted(p for p in sub_dir.iterdir() if p.is_dir()):
            if not seed_dir.name.isdigit() or int(seed_dir.name) not in SPLIT_SEEDS:
                raise SplitFileError(f"split directory {seed_dir}: unknown split seed {seed_dir.name!r} "
                                     f"(expected one of {list(SPLIT_SEEDS)})")
            key = (sub_dir.name, int(seed_dir.name))
            files = {s: seed_dir / f"{s}.csv" for s in SPLITS}
            for s, p in files.items():
                if not p.is_file():
                    raise SplitFileError(f"split file {p} is missing ({seed_dir} must hold train.csv, val.csv and "
                                         f"test.csv)")
            out.files[key] = files
            out.ids[key] = {s: read_split_file(p, id_column, parse) for s, p in files.items()}
            _check_disjoint(out, key)
    for (subset, seed) in out.ids:
        if subset != "full":
            _check_nested(out, subset, seed)
    return out


def check_published(ps: PublishedSplits, key: tuple[str, int]) -> None:
    """The checks read_split_dir makes, for one (subset, seed) added from elsewhere (a source's catalogues)."""
    _check_disjoint(ps, key)
    if key[0] != "full":
        _check_nested(ps, *key)


def _check_disjoint(ps: PublishedSplits, key: tuple[str, int]) -> None:
    where: dict[int, str] = {}
    for s in SPLITS:
        for oid in ps.ids[key][s].tolist():
            if oid in where:
                raise SplitFileError(f"object {oid} is in both {ps.files[key][where[oid]]} and {ps.files[key][s]}")
            where[oid] = s


def _check_nested(ps: PublishedSplits, subset: str, seed: int) -> None:
    full = ps.ids.get(("full", seed))
    if full is None:
        raise SplitFileError(f"{ps.files[(subset, seed)]['train'].parent}: a published {subset} split needs the "
                             f"published full split of seed {seed} ({ps.root / 'full' / str(seed)}): a generated "
                             f"full split would not contain it")
    for s in SPLITS:
        extra = np.setdiff1d(ps.ids[(subset, seed)][s], full[s])
        if len(extra):
            raise SplitFileError(f"split file {ps.files[(subset, seed)][s]}: object {extra[0]} is not in the "
                                 f"{s} split of {ps.files[('full', seed)][s]} ({len(extra)} such objects): sub-X "
                                 f"splits must be nested in the full split of their seed")


def lookup_rows(published: PublishedSplits, key: tuple[str, int], row_of: Mapping[ObjectKey, int],
                skip_unknown: bool = False, left_out: Collection[ObjectKey] = ()
                ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Store rows {split: rows} of one published (subset, seed), in file order, and the ids that are not
    objects of the store ("<file>:<id>"; an error naming file and id unless `skip_unknown`). Ids in `left_out`
    are objects of the catalogue the user chose not to store (no class): passed over."""
    rows: dict[str, np.ndarray] = {}
    ignored: list[str] = []
    for s in SPLITS:
        idx = []
        for oid in published.ids[key][s].tolist():
            r = row_of.get(oid)
            if r is None and oid in left_out:
                continue
            if r is None:
                if not skip_unknown:
                    raise SplitFileError(f"split file {published.files[key][s]}: object {oid} is not in the "
                                         f"ingested catalogue")
                ignored.append(f"{published.files[key][s]}:{oid}")
                continue
            idx.append(r)
        rows[s] = np.asarray(idx, dtype=np.int64)
    return rows, ignored


def resolve_splits(published: PublishedSplits | None, object_ids: np.ndarray, valid: np.ndarray,
                   labels: np.ndarray) -> tuple[dict[int, dict[str, dict[str, np.ndarray]]], dict[str, dict]]:
    """Row indices {seed: {subset: {split: rows}}} for every seed and subset, and per "seed<s>/<subset>" its
    origin ("published" with its files, or "generated"). Rows are sorted (chunk-aligned reads)."""
    object_ids = np.asarray(object_ids, dtype=np.int64)
    row_of = {int(o): i for i, o in enumerate(object_ids.tolist())}
    out: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    info: dict[str, dict] = {}
    for seed in SPLIT_SEEDS:
        sets: dict[str, dict[str, np.ndarray]] = {}
        for subset, factor in SUBSET_FACTORS.items():
            key = (subset, seed)
            if published is not None and key in published:
                rows = lookup_rows(published, key, row_of)[0]
                dropped = sum(int((~valid[r]).sum()) for r in rows.values())
                rows = {s: np.sort(r[valid[r]]) for s, r in rows.items()}
                if dropped:
                    log.warning("%s/%d: %d object(s) of the published split were skipped as bad input and are "
                                "left out", subset, seed, dropped)
                sets[subset] = rows
                info[f"seed{seed}/{subset}"] = {"origin": "published", "dropped_invalid": dropped,
                                                "files": {s: str(p) for s, p in published.files[key].items()}}
                continue
            if subset == "full":
                sets[subset] = split_indices(labels, valid, seed)
            else:
                # Capped from the full split of this seed, published or generated, so sub-X stays nested in it.
                sets[subset] = {s: subset_indices(v, labels, factor, seed) for s, v in sets["full"].items()}
            info[f"seed{seed}/{subset}"] = {"origin": "generated"}
        out[seed] = sets
    return out, info
