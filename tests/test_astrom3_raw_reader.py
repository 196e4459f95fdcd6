"""The reader of the authors' raw AstroM3 layout (astrom3_hpc.data.sources.astrom3_raw): ASAS-SN light curves in a
zip or a directory, LAMOST FITS spectra, the catalogue and split CSVs, in fixtures of the exact formats; every bad
file an error naming the object and the file."""

from __future__ import annotations

import csv
import multiprocessing as mp
import pickle
import shutil
import zipfile

import numpy as np
import pytest

from astrom3_hpc.core.constants import CLASS_NAMES, META_COLUMNS
from astrom3_hpc.data.raw import BadInputError, RawObject
from astrom3_hpc.data.sources import AstroM3RawSource

try:
    from tests import fixtures_raw as fx
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    import fixtures_raw as fx

assert_names = fx.assert_names


def assert_object_matches(got: RawObject, want: dict) -> None:
    assert got.object_id == want["object_id"] and got.label == want["label"]
    np.testing.assert_array_equal(got.lc, want["lc"])
    np.testing.assert_array_equal(got.spec_wave, want["wave"])
    np.testing.assert_array_equal(got.spec_flux, want["flux"])
    np.testing.assert_array_equal(got.spec_ivar, want["ivar"])
    np.testing.assert_array_equal(got.meta, want["meta"])  # NaN == NaN for array_equal on float arrays
    np.testing.assert_array_equal(got.aux, want["aux"])
    assert got.extra["split"] == want["split"] and got.extra["modalities"] == ("photo", "spectra", "meta")


@pytest.fixture(scope="module", params=["zip", "dir"])
def layout(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"astrom3_{request.param}")
    return fx.write_astrom3_raw_layout(root, n_objects=20, seed=11, lc_container=request.param)


def test_astrom3_round_trip(layout):
    src = AstroM3RawSource(layout["root"])
    assert len(src) == layout["n_objects"] == 20 and src.class_names() == CLASS_NAMES
    for i, want in enumerate(layout["objects"]):
        assert_object_matches(src.get(i), want)
    first = [o for o in layout["objects"] if np.isnan(o["meta"]).any()]
    assert first and np.isnan(src.get(layout["objects"].index(first[0])).meta[META_COLUMNS.index("w4_mag")])
    d = src.describe()
    assert d["n_objects"] == 20 and set(d["split_files"]) == {"train", "val", "test"}
    assert sum(d["n_per_split"].values()) == 20 and ("zip" in d["photometry"]) == (layout["lc_container"] == "zip")
    assert sorted({o["target"] for o in layout["objects"]}) == sorted(CLASS_NAMES)
    src.close()


def _get_in_child(args):
    src, i = args
    o = src.get(i)
    return o.object_id, float(o.lc.sum()), float(o.spec_flux.sum())


_FORK_SRC = None


def _get_forked(i):
    o = _FORK_SRC.get(i)
    return o.object_id, float(o.lc.sum()), float(o.spec_flux.sum())


def test_astrom3_source_is_pickle_and_fork_safe(layout):
    global _FORK_SRC
    src = AstroM3RawSource(layout["root"])
    want = [(o.object_id, float(o.lc.sum()), float(o.spec_flux.sum())) for o in (src.get(i) for i in range(6))]
    clone = pickle.loads(pickle.dumps(src))  # the open zip handle is not pickled
    assert clone._lc._zip is None
    assert [_get_in_child((clone, i)) for i in range(6)] == want
    _FORK_SRC = src  # the parent holds an open zip; forked children must reopen it
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        assert pool.map(_get_forked, range(6)) == want
    _FORK_SRC = None


def test_astrom3_split_files_and_flat_spectra(tmp_path):
    lay = fx.write_astrom3_raw_layout(tmp_path / "a", n_objects=6, seed=2, lc_container="zip")
    root = lay["root"]
    # The authors' research layout: preprocessed_data/.../spectra_and_v_{split}.csv, a flat spectra directory,
    # asassnvarlc_vband_complete.zip; and members under another prefix are found by base name.
    flat = root / "Spectra" / "v2"
    flat.mkdir(parents=True)
    for o in lay["objects"]:
        shutil.copy(o["spec_path"], flat / o["spec_filename"])
    pre = root / "preprocessed_data" / "full_lb"
    pre.mkdir(parents=True)
    paths = []
    for split, p in lay["split_files"].items():
        q = pre / f"spectra_and_v_{split}.csv"
        shutil.copy(p, q)
        paths.append(q)
    with zipfile.ZipFile(lay["photometry"]) as zin, \
            zipfile.ZipFile(root / "asassnvarlc_vband_complete.zip", "w") as zout:
        for n in zin.namelist():
            zout.writestr("photometry/" + n.rsplit("/", 1)[-1], zin.read(n))
    src = AstroM3RawSource(root, split_files=paths, photometry="asassnvarlc_vband_complete.zip",
                           spectra_dir="Spectra/v2")
    assert set(src.split_files) == {"spectra_and_v_train", "spectra_and_v_val", "spectra_and_v_test"}
    for i, want in enumerate(lay["objects"]):
        got = src.get(i)
        np.testing.assert_array_equal(got.lc, want["lc"])
        np.testing.assert_array_equal(got.spec_flux, want["flux"])


@pytest.fixture()
def small_layout(tmp_path):
    return fx.write_astrom3_raw_layout(tmp_path / "raw", n_objects=4, seed=5, lc_container="zip")


@pytest.mark.parametrize("mode", ["missing", "empty", "garbage"])
def test_astrom3_bad_light_curve(small_layout, mode):
    o = fx.corrupt_light_curve(small_layout, 1, mode)
    src = AstroM3RawSource(small_layout["root"])
    with pytest.raises(BadInputError) as e:
        src.get(1)
    assert_names(e.value, o["object_id"], o["name"].replace(" ", "") + ".dat", "photometry.zip")
    assert e.value.object_id == o["object_id"]
    assert_object_matches(src.get(0), small_layout["objects"][0])  # the others still read


@pytest.mark.parametrize("mode", ["missing", "garbage", "truncated"])
def test_astrom3_bad_spectrum(small_layout, mode):
    o = fx.corrupt_spectrum(small_layout, 2, mode)
    src = AstroM3RawSource(small_layout["root"])
    with pytest.raises(BadInputError) as e:
        src.get(2)
    assert_names(e.value, o["object_id"], o["spec_filename"])
    assert_object_matches(src.get(3), small_layout["objects"][3])


def test_astrom3_bad_light_curve_in_directory(tmp_path):
    lay = fx.write_astrom3_raw_layout(tmp_path / "raw", n_objects=3, seed=6, lc_container="dir")
    for mode, k in (("missing", 0), ("empty", 1)):
        o = fx.corrupt_light_curve(lay, k, mode)
        with pytest.raises(BadInputError) as e:
            AstroM3RawSource(lay["root"]).get(k)
        assert_names(e.value, o["object_id"], o["name"].replace(" ", "") + ".dat")


@pytest.mark.parametrize("column", ["ruwe", "rfr_score", "spec_filename", "id"])
def test_astrom3_missing_csv_column(small_layout, column):
    path = small_layout["split_files"]["val"]
    fx.drop_csv_column(path, column)
    with pytest.raises(BadInputError) as e:
        AstroM3RawSource(small_layout["root"])
    assert_names(e.value, "*", str(path), repr(column))


def test_astrom3_unknown_class_and_bad_values(small_layout):
    path = small_layout["split_files"]["train"]
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    h = rows[0]
    rows[1][h.index("target")] = "CWA"
    rows[2][h.index("pmra")] = "not-a-number"
    rows[2][h.index("parallax")] = "nan"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    src = AstroM3RawSource(small_layout["root"])
    with pytest.raises(BadInputError) as e:
        src.get(0)
    assert_names(e.value, small_layout["objects"][0]["object_id"], "train.csv", "CWA")
    with pytest.raises(BadInputError) as e:
        src.get(1)
    assert_names(e.value, small_layout["objects"][1]["object_id"], "train.csv", "pmra")
    lenient = AstroM3RawSource(small_layout["root"], allow_unknown_class=True)
    assert lenient.get(0).label == -1


def test_astrom3_duplicate_ids_refused(small_layout):
    val, train = small_layout["split_files"]["val"], small_layout["split_files"]["train"]
    with open(train, newline="") as fh:
        extra = list(csv.reader(fh))[1]
    with open(val, "a", newline="") as fh:
        csv.writer(fh).writerow(extra)
    with pytest.raises(BadInputError, match="duplicate object id"):
        AstroM3RawSource(small_layout["root"])


def test_astrom3_missing_catalogue_and_container(tmp_path, small_layout):
    with pytest.raises(BadInputError, match="catalogue CSV not found"):
        AstroM3RawSource(small_layout["root"], seed=0)
    with pytest.raises(FileNotFoundError):
        AstroM3RawSource(tmp_path / "nothing-here")



def _set_id_cells(path, cells: dict[int, str]) -> str:
    """Rewrite the id cells of some data rows (0-based) of a catalogue CSV; the id column's name."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    column = next(c for c in ("id", "edr3_source_id", "source_id") if c in rows[0])
    for i, cell in cells.items():
        rows[1 + i][rows[0].index(column)] = cell
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return column


def test_astrom3_id_cell_that_is_not_a_source_id_is_refused(small_layout):
    """Catches the id parser taking the trailing digits after any prefix: "EDR3" became object 3, a float-formatted
    "EDR3 2117581746386552576.0" object 0, both read as real objects. The spellings the split files accept
    (split_files.parse_id) still read."""
    path = small_layout["split_files"]["train"]
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    good = [r[rows[0].index("id")] for r in rows[1:]]
    for cell in ("EDR3", "Gaia DR3", "EDR3 2117581746386552576.0", "2117581746386552576.0", "DR3 12x"):
        column = _set_id_cells(path, {1: cell})
        with pytest.raises(BadInputError) as e:
            AstroM3RawSource(small_layout["root"])
        assert_names(e.value, cell, f"{path}:row 3", repr(column), f"not an integer source id: {cell!r}")
    digits = [g.split()[-1] for g in good]
    _set_id_cells(path, {i: f"{p}{d}" for i, (p, d) in enumerate(zip(("Gaia DR3 ", "edr3 ", "", "DR2"), digits))})
    assert {int(d) for d in digits} <= set(AstroM3RawSource(small_layout["root"]).object_ids.tolist())
