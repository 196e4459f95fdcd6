"""Any survey's light curves from two long tables: a points file (one row per epoch) and an objects file (one
row per object: id, class, optionally a period and a split). `astrom3 ingest lightcurves`; see
docs/lightcurves.md.

Formats: CSV, gzip CSV (``.gz``) and Parquet (``.parquet``, with the optional pyarrow), read by tables.py as rows
of text cells, so both formats pass the same checks.

The whole points file is parsed once per process by points_table.py (every MPI rank re-reads it, keeping its
own objects' rows: a million rows take about a second, less than shipping them). Problems that concern one
object (no rows, a non-numeric time) are raised from `get()` as BadInputError, so `--on-error skip` lists them in
skipped.json; problems with a whole file (a missing column, an unknown class, a split file naming an unknown
object) raise at construction, before anything is written. Split files are read by the generic reader
(data/split_files.py) with this source's id column and id matching; the command-line options live in cli/ingest.py.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...core.constants import AUX_COLUMNS, META_COLUMNS
from .. import periods
from ..class_notes import nfc, spelled_alike
from ..preprocess import repeated_rows
from ..raw import BadInputError, RawObject
from ..split_files import lookup_rows, read_split_dir
from .common import ERR_SENTINEL, MAG_SENTINEL, is_missing, mag_to_flux_mjy
from .points_table import Points, is_integer_id, narrow_float_resolution, norm_id, read_points
from .tables import Table, TableError, open_table, read_header

log = logging.getLogger("astrom3")


# The fewest points of an object (and distinct times: points at one time are one epoch), and of a band to merge:
# fewer fix neither a period nor an offset.
MIN_POINTS = 5


@dataclass
class TableOptions:
    points: str
    objects: str
    id_column: str = "id"
    time_column: str = "time"
    mag_column: str | None = None  # exactly one of mag_column / flux_column
    flux_column: str | None = None
    err_column: str = "err"
    band_column: str | None = None
    # Required when band_column holds more than one band; "g,r" merges those bands into one curve (see
    # merge_bands) at the first band's level.
    band: str | None = None
    label_column: str = "label"
    class_map: str | None = None  # JSON {raw label: class} or a two-column CSV (label, class)
    drop_unlabelled: bool = False  # objects without a (mapped) class are left out instead of an error
    # ... or kept with label -1: in no split, classified by every fine-tune and baseline run
    # (predictions_unlabelled.csv)
    keep_unlabelled: bool = False
    period_column: str | None = None  # catalogue period (days); empty, zero or negative: Lomb-Scargle
    splits_from: str | None = None  # splits/{subset}/{seed}/{train,val,test}.csv (the authors' layout)
    split_column: str | None = None  # train / val / test per object (stored as split seed 42)
    skip_bad_split_ids: bool = False  # --on-error skip: ids in split files not in the store are listed, not fatal
    period_backend: str = "auto"
    min_period: float = periods.MIN_PERIOD_DAYS  # shortest Lomb-Scargle period searched, days


def _col(header: list[str], name: str, path: str, what: str) -> int:
    if name not in header:
        raise TableError(f"{path}: no {what} column {name!r} (columns: {header})")
    return header.index(name)


def read_class_map(path: str) -> tuple[dict[str, str], str | None]:
    """{raw label: class name} (an empty class name means "leave this object out"), and a table's first header
    cell (None for JSON): a table without a header line loses its first mapping to the header, which the
    objects' labels then show (`_read_object_rows`)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(path)
    if p.suffix.lower() == ".json":
        try:
            pairs = json.loads(p.read_text(encoding="utf-8-sig"), object_pairs_hook=_Pairs)
        except (ValueError, UnicodeDecodeError) as e:
            raise TableError(f"{path}: the class map is not valid UTF-8 JSON ({e})") from None
        if not isinstance(pairs, _Pairs):
            raise TableError(f"{path}: a class map must be a JSON object {{label: class}}")
        return _one_class_each(path, ((str(k), _map_class(path, k, v)) for k, v in pairs)), None
    with open_table(path) as t:
        if len(t.header) < 2:
            raise TableError(f"{path}: a class-map table needs two columns (label, class), got {t.header}")
        return _one_class_each(path, ((r[0], r[1].strip() if len(r) > 1 else "") for _, r in t.rows)), t.header[0]


class _Pairs(list):
    """A JSON object's (key, value) pairs in file order, repeats kept (a dict keeps the last silently); a type of
    its own, so that a JSON array is not taken for one."""


def _one_class_each(path: str, pairs) -> dict[str, str]:
    """{label: class}; a label mapped twice to different classes is an error (a dict would keep the last, and
    every object of that label would silently take it)."""
    out: dict[str, str] = {}
    for label, cls in pairs:
        label, cls = nfc(label.strip()), nfc(cls)
        if out.get(label, cls) != cls:
            raise TableError(f"{path}: label {label!r} is mapped twice, to {out[label]!r} and to {cls!r}")
        out[label] = cls
    return out


def _alike(label: str, cmap: dict[str, str]) -> str:
    like = spelled_alike(label, cmap)
    return f" (it names {like!r})" if like is not None else ""


def _map_class(path: str, label: str, v: Any) -> str:
    """A JSON map's class as text: integer codes are common, and class 0 (or false) is a class like any other,
    so only null and "" leave the label out. Non-string scalars keep their JSON spelling (false, 0.0)."""
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        shown = json.dumps(dict(v) if isinstance(v, _Pairs) else v)
        raise TableError(f"{path}: label {label!r} maps to {shown}: a class is one name or number "
                         f"(null or \"\" leaves the label out)")
    return (v if isinstance(v, str) else json.dumps(v)).strip()


class LightCurveTableSource:
    """`raw.RawSource` over a long points table and an objects table (light curve only)."""

    def __init__(self, opt: TableOptions):
        if (opt.mag_column is None) == (opt.flux_column is None):
            raise TableError("give exactly one of --mag-column and --flux-column")
        if opt.splits_from and opt.split_column:
            raise TableError("give at most one of --splits-from and --split-column")
        if opt.drop_unlabelled and opt.keep_unlabelled:
            raise TableError("give at most one of --drop-unlabelled and --keep-unlabelled")
        if not (opt.min_period > 0 and math.isfinite(opt.min_period)):
            raise TableError(f"--min-period must be a positive number of days, got {opt.min_period}")
        self.opt = opt
        self.bands = tuple(b.strip() for b in opt.band.split(",")) if opt.band is not None else ()
        if any(not b for b in self.bands) or len(set(self.bands)) != len(self.bands):
            raise TableError(f"--band {opt.band!r}: give one band, or several distinct bands separated by commas")
        if len(self.bands) > 1 and not opt.band_column:
            raise TableError(f"--band {opt.band!r} names several bands: give the points table's --band-column")
        self._read_objects()
        self._points: Points | None = None
        self._selected: tuple[int, int] | None = None
        self._fixed_splits: dict | None = None
        self.ignored_split_ids: list[str] = []
        self.unsplit_ids: list[str] = []  # labelled objects the given split files leave out (--on-error skip)
        if opt.splits_from:
            self._fixed_splits = self._given_splits(opt.splits_from)
        elif opt.split_column:
            self._fixed_splits = {42: {"full": self._column_split()}}
        # Check the points file's header now: a wrong column name should fail before ingestion starts.
        header = read_header(opt.points)
        for name, what in ((opt.id_column, "id"), (opt.time_column, "time"),
                           (opt.mag_column or opt.flux_column, "magnitude/flux"), (opt.err_column, "error"),
                           (opt.band_column, "band")):
            if name:
                _col(header, name, opt.points, what)
        narrow = narrow_float_resolution(opt.points, opt.time_column)
        # A step of a quarter of the shortest period jitters phases by up to 1/8 of a cycle; below that the search
        # finds the float64 periods (float32 MJD: steps of 0.004 d, periods of 0.035 d found alike).
        if narrow and narrow[2] > opt.min_period / 4:
            kind, top, step = narrow
            raise TableError(f"{opt.points}: time column {opt.time_column!r} is {kind}: at {top:.7g} its values move "
                             f"in steps of {step:.3g} d, too coarse for periods down to --min-period {opt.min_period} "
                             f"d (a period search on it finds aliases): export the times as float64, or as days "
                             f"since an epoch near the first observation, or raise --min-period")

    # -- objects -------------------------------------------------------------------------------------------
    def _read_objects(self) -> None:
        with open_table(self.opt.objects) as t:
            self._read_object_rows(t)

    def _read_object_rows(self, t: Table) -> None:
        o, header = self.opt, t.header
        k_id = self._k_id = _col(header, o.id_column, o.objects, "id")
        k_lab = _col(header, o.label_column, o.objects, "label")
        k_per = _col(header, o.period_column, o.objects, "period") if o.period_column else None
        self._k_split = _col(header, o.split_column, o.objects, "split") if o.split_column else None
        cmap, map_header = read_class_map(o.class_map) if o.class_map else (None, None)
        keys, raw_ids, labels, periods_, splits, dropped = [], [], [], [], [], []
        left_out: dict[str, int] = {}  # per label the class map sends to "": objects left out by request
        unmapped: dict[str, int] = {}  # per label the map does not name: objects kept or dropped unlabelled
        self._left_out_keys: set[str] = set()  # those objects, which split files may still list
        seen: set[str] = set()
        for pos, r in t.rows:
            key = norm_id(r[k_id]) if k_id < len(r) else ""
            if not key:
                raise TableError(f"{t.at(pos)}: empty id in column {o.id_column!r}")
            if key in seen:
                raise TableError(f"{t.at(pos)}: object {key!r} appears twice")
            seen.add(key)
            raw = nfc(r[k_lab].strip()) if k_lab < len(r) else ""
            if raw and raw == map_header:
                raise TableError(f"{t.at(pos)}: object {key}: label {raw!r} is the header of the class map "
                                 f"{o.class_map}: a class-map table's first line names its columns (label,class), "
                                 f"so a map without that line loses its first mapping; add the header line")
            cls = cmap.get(raw, None) if cmap is not None else raw
            if is_missing(raw) and (cmap is None or raw not in cmap):
                cls = ""  # "NA", "nan", "null": how exports write a missing class; a class only if the map says so
            if raw and cls == "" and cmap is not None and raw in cmap:
                # The map names this label and gives it no class: the user left these objects out on purpose, so
                # neither the missing-class error nor --keep-unlabelled (which would classify them) applies.
                left_out[raw] = left_out.get(raw, 0) + 1
                self._left_out_keys.add(key)
                continue
            if not cls and raw and cmap is not None and raw not in cmap and not is_missing(raw):
                unmapped[raw] = unmapped.get(raw, 0) + 1
            if not cls and not o.keep_unlabelled:
                if not o.drop_unlabelled:
                    why = (f"label {raw!r} is not in the class map {o.class_map}{_alike(raw, cmap)}"
                           if cmap is not None and raw not in cmap else f"no class (label {raw!r})")
                    raise TableError(f"{t.at(pos)}: object {key}: {why}; pass --drop-unlabelled to leave "
                                     f"such objects out, --keep-unlabelled to have runs classify them, or "
                                     f"--class-map to name their class")
                dropped.append(key)
                self._left_out_keys.add(key)
                continue
            keys.append(key)
            raw_ids.append(r[k_id].strip())
            labels.append(cls)
            p = math.nan
            if k_per is not None and k_per < len(r) and r[k_per].strip():
                try:
                    p = float(r[k_per])
                except ValueError:
                    raise TableError(f"{t.at(pos)}: object {key}: period {r[k_per]!r} in column "
                                     f"{o.period_column!r} is not a number") from None
            periods_.append(p if p > 0 else math.nan)
            if self._k_split is not None:
                splits.append(self._split_cell(t, pos, r, cls))
        if not keys:
            # --keep-unlabelled keeps a table whose labels are all blank (new objects for `astrom3 predict`: a store
            # without classes or splits); otherwise say what left every object out.
            why = [f"{len(dropped)} without a class left out by --drop-unlabelled (--keep-unlabelled keeps them, "
                   f"for `astrom3 predict` with a run trained on another store)"] if dropped else []
            why += [f"{sum(left_out.values())} left out by the class map {o.class_map} (labels "
                    f"{', '.join(map(repr, left_out))})"] if left_out else []
            raise TableError(f"{o.objects}: no objects to ingest: {'; '.join(why) or 'the table has no rows'}")
        self.keys = keys
        self.dropped = dropped
        self.left_out_by_class_map = dict(sorted(left_out.items()))
        self.unmapped_by_class_map = dict(sorted(unmapped.items()))
        self.map_keys, self.keeps_unlabelled = list(cmap or ()), o.keep_unlabelled
        self._names = tuple(sorted(set(c for c in labels if c)))
        self.labels = np.array([self._names.index(c) if c else -1 for c in labels], np.int64)
        self.periods = np.array(periods_, np.float64)
        self._split_values = splits
        # Integer ids are stored as they are; otherwise the store's object_id is the row and the names are kept.
        try:
            if not all(map(is_integer_id, keys)):  # int() alone would read the name "1_5" as 15
                raise ValueError("not integer ids")
            self.object_ids = np.array([int(k) for k in keys], np.int64)
            self.object_names: list[str] | None = None
        except (ValueError, OverflowError):  # not integers, or beyond int64
            self.object_ids = np.arange(len(keys), dtype=np.int64)
            self.object_names = raw_ids

    def _given_splits(self, root: str) -> dict[int, dict[str, dict[str, np.ndarray]]]:
        """{seed: {subset: {split: positions}}} from split files, ids matched like the objects file's (the
        generic reader checks the files; unknown ids are listed in ignored_split_ids under --on-error skip)."""
        published = read_split_dir(root, self.opt.id_column, norm_id)
        if not published.ids:
            raise TableError(f"{root}: no splits/{{subset}}/{{seed}}/{{train,val,test}}.csv found")
        known = {k: i for i, k in enumerate(self.keys)}
        out: dict[int, dict[str, dict[str, np.ndarray]]] = {}
        for (subset, seed) in sorted(published.ids):
            rows, ignored = lookup_rows(published, (subset, seed), known, self.opt.skip_bad_split_ids,
                                        left_out=self._left_out_keys)
            out.setdefault(seed, {})[subset] = rows
            self.ignored_split_ids += ignored
        for seed, sets in out.items():
            if "full" in sets:
                self._check_all_split(root, seed, sets["full"])
        return out

    def _check_all_split(self, root: str, seed: int, full: dict[str, np.ndarray]) -> None:
        """Every labelled object in one of the seed's full train/val/test files: one left out would be stored
        with its class in no split, never trained on, scored or classified."""
        listed = np.zeros(len(self.keys), bool)
        for r in full.values():
            listed[r] = True
        missing = np.flatnonzero(~listed & (self.labels >= 0))
        if not len(missing):
            return
        first = ", ".join(self.shown_id(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
        what = (f"{root}: {len(missing)} labelled object(s) of {self.opt.objects} are in none of the split files "
                f"full/{seed}/{{train,val,test}}.csv ({first})")
        if not self.opt.skip_bad_split_ids:
            raise TableError(f"{what}: add them to a split, or leave them out of the objects table (--on-error "
                             f"skip stores them in no split)")
        log.warning("%s: stored in no split (--on-error skip)", what)
        self.unsplit_ids = sorted(set(self.unsplit_ids) | {self.shown_id(i) for i in missing})

    def shown_id(self, index: int) -> str:
        """Object `index`'s id as the tables write it ("000123") where the store keeps ids as written, else its
        key: what messages and provenance lists name it by."""
        return self.keys[index] if self.object_names is None else self.object_names[index]

    def _split_cell(self, t: Table, pos: int, r: list[str], cls: str) -> str:
        """An object's split-column cell as train, val or test ("" for a kept unlabelled object's blank cell)."""
        k, column, shown = self._k_split, self.opt.split_column, r[self._k_id].strip()
        v = r[k].strip().lower() if k < len(r) else ""
        v = {"validation": "val", "valid": "val"}.get(v, v)
        if not v and cls:
            raise TableError(f"{t.at(pos)}: object {shown}: no split in column {column!r}; a labelled object "
                             f"needs train, val or test (only unlabelled objects, in no split, may leave it blank)")
        if v and v not in ("train", "val", "test"):
            raise TableError(f"{t.at(pos)}: object {shown}: split {r[k].strip()!r} in column {column!r} is not "
                             f"train, val or test")
        return v

    def _column_split(self) -> dict[str, np.ndarray]:
        out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        for i, v in enumerate(self._split_values):
            if v:  # blank: a kept unlabelled object, in no split
                out[v].append(i)
        return {k: np.asarray(v, np.int64) for k, v in out.items()}

    # -- points --------------------------------------------------------------------------------------------
    def _load_points(self) -> Points:
        """The points file's rows of this store's objects (time, value, err, band index) in the file's units;
        magnitudes are converted per object in get(), after merge_bands."""
        o = self.opt
        pts = read_points(o.points, id_column=o.id_column, keys=self.keys, bands=self.bands, only=self._selected,
                          numeric_columns=(o.time_column, o.mag_column or o.flux_column, o.err_column),
                          band_column=o.band_column)
        if o.band_column and o.band is None and len(pts.bands) > 1:
            seen = sorted(pts.bands)
            raise TableError(f"{o.points}: column {o.band_column!r} holds bands {seen}; a store holds one light "
                             f"curve per object: choose a band with --band, or merge several with "
                             f"--band {','.join(seen[:2])}")
        absent = [b for b in self.bands if o.band_column and b not in pts.bands]
        if absent:  # a typo, or the survey's own band codes (ZTF writes 1, 2, 3 for g, r, i)
            raise TableError(f"{o.points}: no rows of band {', '.join(map(repr, absent))} in column "
                             f"{o.band_column!r} for this store's objects (bands there: {sorted(pts.bands)})")
        return pts

    def __getstate__(self) -> dict[str, Any]:
        st = self.__dict__.copy()
        st["_points"] = None  # each process re-reads the points file rather than receiving it pickled
        return st

    # -- RawSource -----------------------------------------------------------------------------------------
    def select(self, lo: int, hi: int) -> None:
        """This process will get() objects lo..hi-1 only (ingest calls it with each MPI rank's range): the points
        of the others are skipped, not kept, so a rank holds its own objects' rows, not the whole table's."""
        self._selected = (lo, hi)
        self._points = None

    def __len__(self) -> int:
        return len(self.keys)

    def class_names(self) -> tuple[str, ...]:
        return self._names

    def fixed_splits(self) -> dict | None:
        return self._fixed_splits

    def names(self) -> list[str] | None:
        return self.object_names

    def describe(self) -> dict[str, Any]:
        o = self.opt
        return {"kind": "lightcurves", "points": str(Path(o.points).resolve()),
                "objects": str(Path(o.objects).resolve()), "columns": {
                    "id": o.id_column, "time": o.time_column, "mag": o.mag_column, "flux": o.flux_column,
                    "err": o.err_column, "band": o.band_column, "label": o.label_column, "period": o.period_column,
                    "split": o.split_column},
                "band": o.band, **({"band_merge": MERGE_RULE.format(first=self.bands[0])} if len(self.bands) > 1
                                   else {}), "class_map": o.class_map, "splits_from": o.splits_from,
                "n_objects": len(self), "n_dropped_unlabelled": len(self.dropped),
                "n_left_out_by_class_map": sum(self.left_out_by_class_map.values()),
                "left_out_by_class_map": self.left_out_by_class_map,
                "unmapped_by_class_map": self.unmapped_by_class_map,
                "n_unlabelled": int((self.labels < 0).sum()),
                "ignored_split_ids": self.ignored_split_ids[:100], "n_ignored_split_ids": len(self.ignored_split_ids),
                "unsplit_ids": self.unsplit_ids[:100], "n_unsplit_ids": len(self.unsplit_ids),
                "modalities": ["photo"],
                "flux": ("mJy from magnitudes, AB-like zero point 3631 Jy" if o.mag_column else "as given"),
                "period": f"column {o.period_column!r}, else Lomb-Scargle" if o.period_column else "Lomb-Scargle",
                "min_period_days": o.min_period}

    def get(self, index: int) -> RawObject:
        if self._selected is not None and not self._selected[0] <= index < self._selected[1]:
            raise IndexError(f"object {index} is outside the objects {self._selected} this process selected")
        if self._points is None:
            self._points = self._load_points()
        key = self.keys[index]
        shown = self.shown_id(index)  # skipped.json's id: the store keeps "000123" as written, not as "123"
        src = f"{self.opt.points} (object {shown})"
        if key in self._points.bad:
            raise BadInputError(shown, self.opt.points, self._points.bad[key])
        s, e = self._points.groups.get(key, (0, 0))
        rows, dropped = usable_rows(self._points.values[s:e], magnitudes=bool(self.opt.mag_column))
        if len(self.bands) > 1:
            merged = merge_bands(rows, magnitudes=bool(self.opt.mag_column))
            if len(merged) < len(rows):
                dropped[f"band with < {MIN_POINTS} points"] = len(rows) - len(merged)
            rows = merged
        if len(rows) < MIN_POINTS:
            band = f" in band {self.opt.band!r}" if self.opt.band is not None else ""
            why = f" of {e - s}; left out: " + ", ".join(f"{k} ({n})" for k, n in dropped.items()) if dropped else ""
            raise BadInputError(shown, self.opt.points,
                                f"{len(rows)} usable rows{band}{why}; at least {MIN_POINTS} needed")
        lc = rows[:, :3]
        if np.ptp(lc[:, 1]) == 0:
            raise BadInputError(shown, self.opt.points, f"all {len(lc)} usable values are {lc[0, 1]:g}: a constant "
                                "light curve has no amplitude or period to classify by")
        # Points at a few times leave the periodogram flat or all aliases: its argmax would be stored as the period
        # (floating-point noise for a single time), and the folds and features built on it.
        times = np.unique(lc[:, 0])
        if len(times) == 1:
            raise BadInputError(shown, self.opt.points, f"all {len(lc)} usable rows are at time {float(times[0])}: a "
                                "light curve without a time span has no period to classify by")
        if len(times) < MIN_POINTS:
            raise BadInputError(shown, self.opt.points, f"the {len(lc)} usable rows are at {len(times)} distinct "
                                f"times; at least {MIN_POINTS} needed for a period to classify by")
        if self.opt.mag_column:
            lc = np.stack([lc[:, 0], *mag_to_flux_mjy(lc[:, 1], lc[:, 2])], axis=1)
        ls = periods.search(lc[:, 0], lc[:, 1], lc[:, 2], self.opt.period_backend, self.opt.min_period)
        aux = np.full(len(AUX_COLUMNS), np.nan)
        period = self.periods[index]
        aux[AUX_COLUMNS.index("period")] = period if np.isfinite(period) else ls.period
        return RawObject(object_id=int(self.object_ids[index]), label=int(self.labels[index]), lc=lc,
                         spec_wave=np.zeros(0), spec_flux=np.zeros(0), spec_ivar=np.zeros(0),
                         meta=np.full(len(META_COLUMNS), np.nan), aux=aux, source=src,
                         extra={"modalities": ("photo",), "period_search": ls.as_array(), "name": key,
                                "points_dropped": dropped})


def usable_rows(rows: np.ndarray, *, magnitudes: bool) -> tuple[np.ndarray, dict[str, int]]:
    """An object's (time, value, err, band) rows without those no light curve should hold, and how many went for
    each reason (ingest sums them into the store's summary, so a survey's quirks are seen, not silently absorbed).

    A row repeated exactly (a catalogue merged from overlapping releases) would weigh its epoch twice in the
    period search and the fit; two different values at one time are kept (Stripe 82 has such pairs from
    overlapping runs). An error of zero or less would get infinite or negative weight."""
    dropped: dict[str, int] = {}

    def keep(mask: np.ndarray, reason: str) -> None:
        nonlocal rows
        if not mask.all():
            dropped[reason] = int((~mask).sum())
            rows = rows[mask]

    keep(np.all(np.isfinite(rows[:, :3]), axis=1), "non-finite value")
    if magnitudes:  # survey "no measurement" values (SDSS: magnitude 99.999, error 9.999; others: -99)
        keep((np.abs(rows[:, 1]) < MAG_SENTINEL) & (rows[:, 2] < ERR_SENTINEL), "no-measurement sentinel")
    keep(rows[:, 2] > 0, "error <= 0")
    keep(~repeated_rows(rows), "exact repeat")
    return rows, dropped


MERGE_RULE = ("bands merged per object: each band shifted to band {first}'s median (or the next listed band's "
              "where an object has too few points in it; magnitudes: added offset; positive fluxes: scaled), bands "
              f"with fewer than {MIN_POINTS} points left out")


def merge_bands(rows: np.ndarray, *, magnitudes: bool) -> np.ndarray:
    """(time, value, err, band index) rows of several bands -> one curve at the level of the first listed band
    the object has with at least MIN_POINTS points, sorted by time.

    A colour is an offset in magnitude and a ratio in flux; a pulsator's shape and phase are nearly the same in
    neighbouring bands, so the merged curve keeps the period and the fold while doubling (ZTF g+r) or more the
    points the period search and the fold see. Amplitudes differ between bands (larger in bluer bands), which
    the merged fold shows as extra scatter; median offsets, not a fit, so a band covering only part of the cycle
    shifts a little. Fluxes that are not all positive (difference imaging) are shifted instead of scaled."""
    bands, counts = np.unique(rows[:, 3].astype(np.int64), return_counts=True)
    usable = [int(b) for b, n in zip(bands, counts) if n >= MIN_POINTS]
    if not usable:
        return rows[:0]
    ref = rows[rows[:, 3] == usable[0], 1]
    out = []
    for b in usable:
        part = rows[rows[:, 3] == b].copy()
        if magnitudes or np.any(ref <= 0) or np.any(part[:, 1] <= 0):
            part[:, 1] += np.median(ref) - np.median(part[:, 1])
        else:
            scale = np.median(ref) / np.median(part[:, 1])
            part[:, 1:3] *= scale
        out.append(part)
    merged = np.concatenate(out)
    return merged[np.argsort(merged[:, 0], kind="stable")]
