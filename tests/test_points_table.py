"""The long points table parser (data/sources/points_table.py): batches parsed by numpy and the row-by-row path
for batches with a short row or a bad cell must give the same rows, and errors must name the right line."""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest

from astrom3_hpc.data.sources.points_table import read_points

HEADER = "id,time,flux,err,band"
# Objects 7 and 08 (= 8) interleave; 9 has an empty error (NaN) and a band the store does not read;
# 5 is not in the store, so its garbage is nobody's error; 6 has a non-numeric time on line 12.
LINES = [
    HEADER,
    "7,1.0,10.0,0.1,r",
    "08,1.5,20.0,0.2,r",
    "7,2.0,11.0,0.1,g",
    "",  # blank lines are skipped and still counted
    "08,2.5,21.0,0.2,r",
    "9,3.0,30.0,,r",
    "9,3.1,31.0,0.3,x",
    "5,not-a-time,?,?,r",
    "7,3.0,12.0,0.1,r",
    "6,1.0,1.0,0.1,r",
    "6,yesterday,1.0,0.1,r",
    "6,3.0,1.0,oops,r",
    " 7 ,4.0, 13.0 ,0.1,r",
    "8,3.5",  # a short row: the missing cells are empty (NaN numbers, no band)
]
KEYS = ["6", "7", "8", "9"]


def _read(path, batch_rows, bands=("r", "g"), band_column="band"):
    return read_points(str(path), id_column="id", numeric_columns=("time", "flux", "err"), band_column=band_column,
                       keys=KEYS, bands=bands, batch_rows=batch_rows)


@pytest.mark.parametrize("batch_rows", [1, 2, 3, 5, 1000])
def test_batches_of_any_size_give_the_same_rows_and_errors(tmp_path, batch_rows):
    path = tmp_path / "points.csv"
    path.write_text("\n".join(LINES) + "\n")
    p = _read(path, batch_rows)

    def rows(key):
        s, e = p.groups[key]
        return p.values[s:e].tolist()

    # Band index = position in `bands`; rows of other bands (and the short row, which has none) are left out.
    assert rows("7") == [[1.0, 10.0, 0.1, 0.0], [2.0, 11.0, 0.1, 1.0], [3.0, 12.0, 0.1, 0.0], [4.0, 13.0, 0.1, 0.0]]
    assert rows("8") == [[1.5, 20.0, 0.2, 0.0], [2.5, 21.0, 0.2, 0.0]]
    assert len(rows("9")) == 1 and rows("9")[0][:2] == [3.0, 30.0] and math.isnan(rows("9")[0][2])
    # Object 6: the first bad cell is reported, with its line (blank line 5 counted), and 5's garbage is ignored.
    assert p.bad == {"6": "line 12: column 'time' holds 'yesterday', not a number"}
    assert p.bands == {"r", "g", "x", ""}  # every band of the store's objects, read or not

    # Without a band column every row of a wanted object is read, the short row with NaN flux and error.
    p = _read(path, batch_rows, bands=(), band_column=None)
    assert [r[0] for r in rows("7")] == [1.0, 2.0, 3.0, 4.0] and [r[0] for r in rows("9")] == [3.0, 3.1]
    last = rows("8")[-1]
    assert len(rows("8")) == 3 and last[0] == 3.5 and math.isnan(last[1]) and math.isnan(last[2])
    assert set(p.bad) == {"6"} and p.bands == set()


def test_one_band_and_spread_objects_keep_file_order(tmp_path):
    path = tmp_path / "points.csv.gz"
    import gzip

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, 500)  # four objects' rows shuffled through the file
    times = np.arange(500) * 0.5
    with gzip.open(path, "wt") as fh:
        fh.write("id,time,flux,err,band\n")
        for i, t in zip(ids, times):
            fh.write(f"{6 + i},{t},{i + 0.25},0.1,{'rg'[int(t * 2) % 2]}\n")
    p = _read(path, batch_rows=64, bands=("g",))
    for i in range(4):
        s, e = p.groups[str(6 + i)]
        want = times[(ids == i) & ((times * 2).astype(int) % 2 == 1)]
        np.testing.assert_array_equal(p.values[s:e, 0], want)  # only band g, in file order
        assert np.all(p.values[s:e, 1] == i + 0.25) and np.all(p.values[s:e, 3] == 0)
    assert p.bad == {} and p.bands == {"r", "g"}


def test_cyclic_gc_is_restored(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("\n".join(LINES) + "\n")
    assert gc.isenabled()
    _read(path, 3)
    assert gc.isenabled()
    gc.disable()
    try:
        _read(path, 3)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_only_a_range_of_objects_is_kept_and_every_range_sees_the_same_bands(tmp_path):
    """An MPI rank keeps its own objects' rows (`only`), but the bands it reports are the whole store's, so a
    table with several bands fails on every rank alike."""
    path = tmp_path / "points.csv"
    path.write_text("\n".join(LINES) + "\n")
    whole = _read(path, 4, bands=(), band_column="band")
    for lo, hi in ((0, 1), (1, 3), (3, 4), (2, 2)):
        p = read_points(str(path), id_column="id", numeric_columns=("time", "flux", "err"), band_column="band",
                        keys=KEYS, only=(lo, hi), batch_rows=4)
        assert set(p.groups) == set(KEYS[lo:hi]) & set(whole.groups)
        for k in p.groups:
            (s, e), (s0, e0) = p.groups[k], whole.groups[k]
            np.testing.assert_array_equal(p.values[s:e], whole.values[s0:e0])
        assert p.bad == {k: v for k, v in whole.bad.items() if k in KEYS[lo:hi]}
        assert p.bands == whole.bands == {"r", "g", "x", ""}
