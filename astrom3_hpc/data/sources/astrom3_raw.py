"""The published AstroM3 raw layout as a RawSource: split catalogues, ASAS-SN light curves, LAMOST spectra.

The published AstroM3 raw layout
--------------------------------
What is known, and where it comes from:

1. Hugging Face dataset ``AstroMLCore/AstroM3Dataset`` (first published as ``MeriDK/AstroM3Dataset``; dataset card
   and file tree on huggingface.co) holds::

       AstroM3Dataset.py                       loading script (needs trust_remote_code)
       photometry.zip                          ASAS-SN V-band light curves, one .dat per object (95 MB)
       spectra/{split}/{class}/{spec_filename} LAMOST FITS, split in (train, val, test), class e.g. "EW"
       splits/{subset}/{seed}/{train,val,test}.csv   subset in (full, sub50, sub25, sub10), seed in (42, 0, 66, 12, 123)
       splits/{subset}/{seed}/info.json        column lists (the card: metadata is split into meta_cols and
                                               photo_cols dictionaries)
       utils/parallelzipfile.py                a fork-safe ZipFile the loader uses for photometry.zip

   The card: photometry (N, 3) = (time, flux, flux_error); spectra (M, 3) = (wavelength, flux, flux_error)
   where the "error" column is in fact LAMOST inverse variance (see `read_lamost_fits`); label = class name.
   The spectra directory was built by ``dev/notebooks/049-hf-upload.ipynb`` in github.com/MeriDK/AstroM3:
   ``dst = f'spectra/{split}/{cls}/{spec_filename}'`` for split in (train, val, test) from
   ``spectra_and_v_{split}.csv``.
2. The split CSVs descend from the authors' ``preprocessed_data/full_lb/spectra_and_v_{split}.csv``
   (github.com/MeriDK/AstroM3, ``dev/notebooks/027-add-lb-cols.ipynb`` shows its head: 17,512 rows x 42 columns
   before the class filter) whose columns are, in order: ``mean_vmag, amplitude, period, phot_g_mean_mag,
   e_phot_g_mean_mag, lksl_statistic, rfr_score, phot_bp_mean_mag, e_phot_bp_mean_mag, phot_rp_mean_mag,
   e_phot_rp_mean_mag, bp_rp, parallax, parallax_error, parallax_over_error, pmra, pmra_error, pmdec,
   pmdec_error, j_mag, e_j_mag, h_mag, e_h_mag, k_mag, e_k_mag, w1_mag, e_w1_mag, w2_mag, e_w2_mag, w3_mag,
   w4_mag, j_k, w1_w2, w3_w4, pm, ruwe, id, target, name, spec_filename, l, b`` with raw (un-normalised)
   values, e.g. ``id = "EDR3 2117581746386552576"``, ``target = "EW"``,
   ``name = "ASASSN-VJ184120.05+445439.3"``, ``spec_filename = "spec-57516-HD184435N434959B01_sp15-016.fits.gz"``
   (LAMOST files are gzip-compressed FITS), l and b in degrees. ``META_COLS`` / ``PHOTO_COLS`` in the
   reference's ``core/final/tune.py`` and ``src/main.py`` are exactly constants.META_COLUMNS / AUX_COLUMNS.
3. Light curves: every reference loader (``core/final/dataset.py`` ``get_vlc``, the draft HF script in
   ``dev/notebooks/050-hf-load-script.ipynb``) reads ``f'vardb_files/{name.replace(" ", "")}.dat'`` from a zip
   (``asassnvarlc_vband_complete.zip``, the ASAS-SN variable-star database dump) with
   ``pd.read_csv(sep='\\s+', skiprows=2, names=['HJD', 'MAG', 'MAG_ERR', 'FLUX', 'FLUX_ERR'])``.
   The member paths inside the published ``photometry.zip`` were not visible from the sources reachable here,
   so this reader looks the file up by its base name anywhere in the zip (see below).

Not verified (could not be read): the exact header of the published ``splits/.../*.csv`` (assumed to keep the
columns above; the aliases below cover the older ``edr3_source_id`` / ``asassn_name`` / ``variable_type`` names)
and the content of ``info.json`` (not needed: the column lists are constants here).

Exact layout `AstroM3RawSource` expects (all paths relative to ``root`` unless absolute)::

    splits/{subset}/{seed}/{split}.csv    default catalogues, split in `splits` (default train, val, test);
                                          or give `split_files` (a {split: path} mapping or a list of paths,
                                          split = file stem), e.g. the authors' spectra_and_v_train.csv
    photometry.zip | photometry/ | asassnvarlc_vband_complete.zip | vardb_files/
                                          light curves, first that exists (or `photometry=`), a zip or a
                                          directory; member "<name without spaces>.dat", looked up as
                                          "vardb_files/<file>", "<file>", then (zip only) by base name anywhere
    spectra/{split}/{target}/{spec_filename}, else spectra/{spec_filename}, else spectra/*/*/{spec_filename}
                                          (or `spectra_dir=`; .fits or .fits.gz)

Catalogue columns: the 34 constants.META_COLUMNS and 4 constants.AUX_COLUMNS by exactly those names, plus
an object id (``id``, ``edr3_source_id`` or ``source_id``; "EDR3 <digits>", "Gaia DR3 <digits>" or plain digits,
as in split files; any other cell, "EDR3" or "EDR3 <digits>.0", is a `BadInputError` naming the file, row and cell:
the Gaia EDR3 source id becomes `RawObject.object_id`), the class (``target`` or ``variable_type``), the
light-curve name (``name`` or ``asassn_name``) and ``spec_filename``. A missing column raises `BadInputError` at
construction naming the column and the file (object id "*": every row is affected). Empty / "nan" cells become
NaN and are passed through. Values must be raw: the reference's ``*_norm.csv`` files hold z-scored values and
are not raw inputs.

Fork / MPI safety: nothing is opened at construction except the CSVs (read fully, then closed); the zip is
opened lazily on first use in each process (re-opened after a fork, dropped when pickled), FITS files are opened
per call with memmap=False and closed.
"""

from __future__ import annotations

import csv
import math
import os
import zipfile
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from astrom3_hpc.core.constants import AUX_COLUMNS, CLASS_NAMES, META_COLUMNS
from astrom3_hpc.data.raw import BadInputError, RawObject

from ...core.digests import file_sha256
from ..split_files import SPLITS, PublishedSplits, check_published, parse_id, read_split_dir
from ..text_files import decoding_errors_named, open_text
from .asassn import read_asassn_dat
from .common import MODALITIES, _label_of, _to_float
from .lamost import read_lamost_fits

# Column-name aliases in the AstroM3 catalogues (first present wins).
LC_ID_COLUMNS: tuple[str, ...] = ("id", "edr3_source_id", "source_id")
LC_TARGET_COLUMNS: tuple[str, ...] = ("target", "variable_type")
LC_NAME_COLUMNS: tuple[str, ...] = ("name", "asassn_name")
SPEC_FILE_COLUMN = "spec_filename"


# ----------------------------------------------------------------------------------------------------------------
# Helpers for catalogue CSVs
# ----------------------------------------------------------------------------------------------------------------

def _read_csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open_text(path) as fh, decoding_errors_named(path):
        rd = csv.reader(fh)
        header = next(rd, None)
        if header is None:
            raise BadInputError("*", str(path), "empty catalogue CSV (no header)")
        header = [h.strip() for h in header]
        rows = [r for r in rd if any(c.strip() for c in r)]
    return header, rows



def _parse_object_id(s: str) -> int:
    """"EDR3 2117581746386552576", "Gaia DR3 2117581746386552576" or "2117581746386552576" -> int.

    The split files' own parser (split_files.parse_id: an optional Gaia/EDR3/DR3/DR2 prefix, then digits to the
    end), so a catalogue and its split files accept the same ids; a prefix alone ("EDR3") or a float-formatted id
    ("EDR3 2117581746386552576.0") is refused instead of yielding its trailing digits (3, 0)."""
    oid = parse_id(s)
    if oid is None:
        raise ValueError(f"not an integer source id: {s!r}")
    return oid



# ----------------------------------------------------------------------------------------------------------------
# Light-curve containers (zip or directory), lazily opened per process
# ----------------------------------------------------------------------------------------------------------------

class _LcContainer:
    """`.dat` files in a directory or a zip. The ZipFile is opened on first use in each process."""

    def __init__(self, path: Path, prefix: str | None = None):
        self.path = Path(path)
        self.is_zip = self.path.is_file()
        if not self.is_zip and not self.path.is_dir():
            raise FileNotFoundError(f"light-curve container not found: {self.path}")
        p = None if prefix is None else prefix.strip("/")
        self.prefixes: tuple[str, ...] = (f"{p}/" if p else "",) if p is not None else ("vardb_files/", "")
        self._zip: zipfile.ZipFile | None = None
        self._pid: int | None = None
        self._by_base: dict[str, str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        st = self.__dict__.copy()
        st["_zip"] = None
        st["_pid"] = None
        st["_by_base"] = None
        return st

    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():
            # After a fork the parent's handle shares a file offset with the child: never reuse it.
            self._zip = zipfile.ZipFile(self.path, "r")
            self._pid = os.getpid()
        return self._zip

    def close(self) -> None:
        if self._zip is not None and self._pid == os.getpid():
            self._zip.close()
        self._zip = None
        self._pid = None

    def describe(self) -> str:
        return f"{self.path} ({'zip' if self.is_zip else 'directory'})"

    def read(self, file_name: str, object_id: Any) -> tuple[bytes, str]:
        """Bytes of one member and its provenance string; BadInputError when absent or unreadable."""
        if self.is_zip:
            try:
                zf = self._zipfile()
            except (OSError, zipfile.BadZipFile) as exc:
                raise BadInputError(object_id, str(self.path), f"cannot open light-curve zip: {exc}") from None
            members = [pre + file_name for pre in self.prefixes]
            member = None
            for m in members:
                try:
                    zf.getinfo(m)
                    member = m
                    break
                except KeyError:
                    continue
            if member is None:
                if self._by_base is None:
                    self._by_base = {}
                    for n in zf.namelist():
                        if not n.endswith("/"):
                            self._by_base.setdefault(n.rsplit("/", 1)[-1], n)
                member = self._by_base.get(file_name)
            src = f"{self.path}:{member or self.prefixes[0] + file_name}"
            if member is None:
                raise BadInputError(object_id, src, f"light-curve file {file_name} not found in zip")
            try:
                return zf.read(member), src
            except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
                raise BadInputError(object_id, src, f"cannot read zip member: {exc}") from None
        tried = [self.path / (pre + file_name) for pre in self.prefixes]
        for p in tried:
            if p.is_file():
                try:
                    return p.read_bytes(), str(p)
                except OSError as exc:
                    raise BadInputError(object_id, str(p), f"cannot read light-curve file: {exc}") from None
        raise BadInputError(object_id, str(tried[0]), f"light-curve file {file_name} not found "
                                                      f"(looked in {[str(t) for t in tried]})")


# ----------------------------------------------------------------------------------------------------------------
# AstroM3 raw layout
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Row:
    object_id: int
    target: str
    name: str
    spec_filename: str
    split: str
    csv_index: int  # which split file
    row: int  # data row number in that file (0-based)


class AstroM3RawSource:
    """The published AstroM3 raw layout as a RawSource (see the module docstring for the exact layout).

    Objects are the rows of the split catalogues in order (train, then val, then test by default); the published
    split of each object is kept in ``extra["split"]``. Ingestion keeps the memberships of every published
    ``splits/{subset}/{seed}/`` (``splits_dir``) and of catalogues named train, val and test (the research
    layout's ``spectra_and_v_{split}.csv`` are the seed-42 full split), and generates only the absent ones
    (``published_splits``, data/split_files.py).
    `allow_unknown_class`: a target outside constants.CLASS_NAMES gives label -1 instead of BadInputError.
    Duplicate object ids across or within the catalogues raise BadInputError at construction.
    """

    def __init__(self, root: str | os.PathLike,
                 split_files: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike] | None = None, *,
                 subset: str = "full", seed: int = 42, splits: Sequence[str] = ("train", "val", "test"),
                 photometry: str | os.PathLike | None = None, spectra_dir: str | os.PathLike | None = None,
                 lc_prefix: str | None = None, allow_unknown_class: bool = False):
        self.root = Path(root)
        self.subset, self.seed = subset, seed
        self.allow_unknown_class = allow_unknown_class
        if split_files is None:
            files = {s: self.root / "splits" / subset / str(seed) / f"{s}.csv" for s in splits}
        elif isinstance(split_files, Mapping):
            files = {str(k): self._abs(v) for k, v in split_files.items()}
        else:
            files = {}
            for v in split_files:
                p = self._abs(v)
                files[p.stem] = p
        self.split_files: dict[str, Path] = files
        # Published split memberships that ingestion keeps (data/split_files.py), when the layout has them.
        self.splits_dir: Path | None = self.root / "splits" if (self.root / "splits").is_dir() else None
        self.spectra_dir = self._abs(spectra_dir) if spectra_dir is not None else self.root / "spectra"
        self._lc = _LcContainer(self._find_photometry(photometry), lc_prefix)
        self._rows: list[_Row] = []
        self._meta = np.zeros((0, len(META_COLUMNS)))  # parsed at construction: no per-row strings kept
        self._aux = np.zeros((0, len(AUX_COLUMNS)))
        self._value_errors: dict[int, str] = {}  # row index -> "column 'x': not a number: 'y'"
        self._load_catalogues()

    def published_splits(self) -> PublishedSplits | None:
        """The split memberships ingestion keeps: every ``splits/{subset}/{seed}/`` of the layout, and, where
        those lack (subset, seed), the catalogues' own when they are named train, val and test. Without the
        latter, ``--catalogue train=... val=... test=...`` drew seed 42 afresh: the authors' test objects in train."""
        out = read_split_dir(self.splits_dir) if self.splits_dir is not None else None
        key = (self.subset, self.seed)
        if set(self.split_files) != set(SPLITS) or (out is not None and key in out):
            return out
        out = out if out is not None else PublishedSplits(self.root)
        out.ids[key] = {s: np.array([r.object_id for r in self._rows if r.split == s], np.int64) for s in SPLITS}
        out.files[key] = dict(self.split_files)
        check_published(out, key)
        return out

    # -- construction ---------------------------------------------------------------------------------------
    def _abs(self, p: str | os.PathLike) -> Path:
        p = Path(p)
        return p if p.is_absolute() else self.root / p

    def _find_photometry(self, photometry: str | os.PathLike | None) -> Path:
        if photometry is not None:
            p = self._abs(photometry)
            if not p.exists():
                raise FileNotFoundError(f"light-curve container not found: {p}")
            return p
        for cand in ("photometry.zip", "photometry", "asassnvarlc_vband_complete.zip", "vardb_files"):
            p = self.root / cand
            if p.exists():
                return p if cand != "vardb_files" else self.root
        raise FileNotFoundError(f"no light curves under {self.root}: expected photometry.zip, photometry/, "
                                "asassnvarlc_vband_complete.zip or vardb_files/")

    def _load_catalogues(self) -> None:
        seen: dict[int, str] = {}
        metas: list[np.ndarray] = []
        auxs: list[np.ndarray] = []
        for ci, (split, path) in enumerate(self.split_files.items()):
            if not path.is_file():
                raise BadInputError("*", str(path), "catalogue CSV not found")
            header, rows = _read_csv_rows(path)
            col = {h: i for i, h in enumerate(header)}

            def pick(aliases: Sequence[str], what: str) -> int:
                for a in aliases:
                    if a in col:
                        return col[a]
                raise BadInputError("*", str(path), f"missing column {aliases[0]!r} ({what}; also accepted: "
                                                    f"{list(aliases[1:])}) in the CSV header")

            i_id = pick(LC_ID_COLUMNS, "Gaia EDR3 source id")
            i_t = pick(LC_TARGET_COLUMNS, "class")
            i_n = pick(LC_NAME_COLUMNS, "ASAS-SN light-curve name")
            i_s = pick((SPEC_FILE_COLUMN,), "LAMOST file name")
            missing = [c for c in (*META_COLUMNS, *AUX_COLUMNS) if c not in col]
            if missing:
                raise BadInputError("*", str(path), f"missing column {missing[0]!r} in the CSV header"
                                                    + (f" (and {missing[1:]})" if len(missing) > 1 else ""))
            i_meta = [col[c] for c in META_COLUMNS]
            i_aux = [col[c] for c in AUX_COLUMNS]
            width = len(header)
            for r_i, r in enumerate(rows):
                where = f"{path}:row {r_i + 2}"
                if len(r) < width:
                    r = r + [""] * (width - len(r))
                try:
                    oid = _parse_object_id(r[i_id])
                except ValueError as exc:
                    raise BadInputError(r[i_id] or "?", where, f"column {header[i_id]!r}: {exc}") from None
                if oid in seen:
                    raise BadInputError(oid, where, f"duplicate object id (first seen at {seen[oid]})")
                seen[oid] = where
                k = len(self._rows)
                self._rows.append(_Row(object_id=oid, target=r[i_t].strip(), name=r[i_n].strip(),
                                       spec_filename=r[i_s].strip(), split=split, csv_index=ci, row=r_i))
                metas.append(self._parse_values(k, r, i_meta, META_COLUMNS))
                auxs.append(self._parse_values(k, r, i_aux, AUX_COLUMNS))
        if self._rows:
            self._meta = np.stack(metas)
            self._aux = np.stack(auxs)

    def _parse_values(self, k: int, r: list[str], idx: Sequence[int], names: Sequence[str]) -> np.ndarray:
        out = np.empty(len(idx), dtype=np.float64)
        for j, (i, n) in enumerate(zip(idx, names)):
            try:
                out[j] = _to_float(r[i])
            except ValueError:
                out[j] = math.nan
                self._value_errors.setdefault(k, f"column {n!r}: not a number: {r[i]!r}")
        return out

    # -- RawSource ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES

    @property
    def object_ids(self) -> np.ndarray:
        return np.array([r.object_id for r in self._rows], dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "astrom3_raw",
            "root": str(self.root),
            "subset": self.subset,
            "seed": self.seed,
            "split_files": {k: str(v) for k, v in self.split_files.items()},
            "split_files_sha256": {k: file_sha256(v) for k, v in self.split_files.items()},
            "n_objects": len(self),
            "n_per_split": {k: sum(1 for r in self._rows if r.split == k) for k in self.split_files},
            "photometry": self._lc.describe(),
            "spectra_dir": str(self.spectra_dir),
            "allow_unknown_class": self.allow_unknown_class,
        }

    def close(self) -> None:
        self._lc.close()

    def _spectrum_path(self, r: _Row) -> Path:
        cands = [self.spectra_dir / r.split / r.target / r.spec_filename, self.spectra_dir / r.spec_filename]
        for c in cands:
            if c.is_file():
                return c
        # Last resort (e.g. a corrected class): any spectra/<split>/<class>/ directory holding the file.
        for c in sorted(self.spectra_dir.glob(f"*/*/{glob_escape(r.spec_filename)}")):
            if c.is_file():
                return c
        raise BadInputError(r.object_id, str(cands[0]),
                            f"spectrum file {r.spec_filename} not found (looked in {[str(c) for c in cands]})")

    def get(self, index: int) -> RawObject:
        if not -len(self._rows) <= index < len(self._rows):
            raise IndexError(index)
        r = self._rows[index]
        csv_path = self.split_files[r.split]
        where = f"{csv_path}:row {r.row + 2}"
        label = _label_of(r.target, self.allow_unknown_class)
        if label is None:
            raise BadInputError(r.object_id, where, f"unknown class {r.target!r} (known: {list(CLASS_NAMES)})")
        if not r.name:
            raise BadInputError(r.object_id, where, "empty light-curve name")
        if not r.spec_filename:
            raise BadInputError(r.object_id, where, "empty spec_filename")
        if index < 0:
            index += len(self._rows)
        if index in self._value_errors:
            raise BadInputError(r.object_id, where, self._value_errors[index])
        meta = self._meta[index].copy()
        aux = self._aux[index].copy()
        raw, lc_src = self._lc.read(r.name.replace(" ", "") + ".dat", r.object_id)
        lc = read_asassn_dat(raw, r.object_id, source=lc_src)
        spec_path = self._spectrum_path(r)
        wave, flux, ivar = read_lamost_fits(spec_path, r.object_id)
        return RawObject(
            object_id=r.object_id, label=label, lc=lc, spec_wave=wave, spec_flux=flux, spec_ivar=ivar,
            meta=meta, aux=aux, source=f"{where}; {lc_src}; {spec_path}",
            extra={"split": r.split, "name": r.name, "target": r.target, "spec_filename": r.spec_filename,
                   "modalities": MODALITIES},
        )
