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


def test_parquet_columns_give_the_rows_of_the_csv_export(tmp_path):
    """The Parquet path reads float64 and integer columns as stored and everything else through its text; the
    result must be the CSV export's, row for row, including float32 decimals, nulls, bands and `only`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    n = 3000
    ids = rng.choice([4251347230184701952 + k for k in range(6)] + [17], n)  # 19-digit ids and one unknown
    time = np.round(rng.uniform(58000, 59000, n), 6)
    flux = rng.normal(10, 1, n).astype(np.float32)
    err = rng.integers(1, 5, n)  # an integer column
    band = rng.choice(["g", "r", None], n)
    flux_null = rng.random(n) < 0.05
    table = pa.table({"id": pa.array(ids, pa.int64()), "time": pa.array(time, pa.float64()),
                      "flux": pa.array(flux, pa.float32(), mask=flux_null), "err": pa.array(err, pa.int64()),
                      "band": pa.array(band, pa.string())})
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=700)
    with open(tmp_path / "p.csv", "w") as fh:
        fh.write("id,time,flux,err,band\n")
        for i in range(n):
            fh.write(f"{ids[i]},{float(time[i])!r},{'' if flux_null[i] else str(flux[i])},{err[i]},{band[i] or ''}\n")
    keys = [str(4251347230184701952 + k) for k in range(6)]
    for only, bands in ((None, ("r", "g")), ((2, 5), ("g",)), (None, ())):
        got = [read_points(str(tmp_path / f), id_column="id", numeric_columns=("time", "flux", "err"),
                           band_column="band", keys=keys, bands=bands, only=only, batch_rows=512)
               for f in ("p.parquet", "p.csv")]
        pq_, csv_ = got
        assert set(pq_.groups) == set(csv_.groups) and pq_.bands == csv_.bands == {"g", "r", ""}
        for k in pq_.groups:
            np.testing.assert_array_equal(pq_.values[slice(*pq_.groups[k])], csv_.values[slice(*csv_.groups[k])])
        lo, hi = only or (0, len(keys))
        want = np.isin(ids, [int(k) for k in keys[lo:hi]]) & (np.isin(band, bands) if bands else True)
        assert len(pq_.values) == len(csv_.values) == want.sum()
        assert np.isnan(pq_.values[:, 1]).sum() == (flux_null & want).sum() > 0


def test_parquet_text_column_with_a_bad_cell_names_its_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    times = ["1.0", "2.0", "soon", "4.0", None, "6.0"]
    pq.write_table(pa.table({"id": ["a", "a", "b", "b", "c", "c"], "time": times, "flux": [1.0] * 6,
                             "err": [0.1] * 6}), tmp_path / "p.parquet", row_group_size=4)
    p = read_points(str(tmp_path / "p.parquet"), id_column="id", numeric_columns=("time", "flux", "err"),
                    band_column=None, keys=["a", "b", "c"], batch_rows=4)
    assert p.bad == {"b": "row 3: column 'time' holds 'soon', not a number"}
    assert p.values[slice(*p.groups["a"]), 0].tolist() == [1.0, 2.0]
    c = p.values[slice(*p.groups["c"]), 0]
    assert np.isnan(c[0]) and c[1] == 6.0  # a null time is an empty cell: NaN, dropped later as non-finite


def test_only_ascii_digits_with_a_zero_fraction_are_integer_ids(tmp_path):
    """Catches int()/float() reading names as numbers: `1_5` stored and predicted as 15 (and then the same object
    as `15`), `1e3` as 1000, Arabic-Indic digits as 12. Only `00123` = `123` = `123.0` is promised."""
    import json

    from lightcurve_tables import ingest_args, write_tables

    from astrom3_hpc.cli import main
    from astrom3_hpc.data.sources.points_table import norm_id
    from astrom3_hpc.data.store import Store

    assert [norm_id(s) for s in (" 00123 ", "123.0", "+123.", "-7.00")] == ["123", "123", "123", "-7"]
    ids = ["1_5", "15", "1e3", "1000", "\u0661\u0662", "12", "11_1", "111", "007.0"]
    truth = write_tables(tmp_path, n_per_class=3, id_of=ids.__getitem__)
    assert [norm_id(s) for s in ids] == ids[:-1] + ["7"]
    out = tmp_path / "s.zarr"
    assert main(ingest_args(tmp_path, out)) == 0
    s = Store(out)
    assert json.loads((out / "object_names.json").read_text()) == list(truth) == ids  # kept as written
    assert s.root["object_id"][:].tolist() == list(range(9)) and s.root["valid"][:].all()
    # Every id int() would take, none an integer id: still names, not object_id 11, 12, ... (field_star style).
    d = tmp_path / "fields"
    fields = [f"{k // 3 + 1}_{k % 3 + 1}" for k in range(9)]
    write_tables(d, n_per_class=3, id_of=fields.__getitem__)
    assert main(ingest_args(d, d / "s.zarr")) == 0
    assert json.loads((d / "s.zarr" / "object_names.json").read_text()) == fields
    assert Store(d / "s.zarr").root["object_id"][:].tolist() == list(range(9))
    # Integer ids alone are still stored as integers, zero fraction and leading zeros read as the number.
    d = tmp_path / "ints"
    write_tables(d, n_per_class=3, id_of=lambda k: f"00{k + 1}.0" if k % 2 else str(k + 1))
    assert main(ingest_args(d, d / "s.zarr")) == 0
    assert Store(d / "s.zarr").root["object_id"][:].tolist() == list(range(1, 10))
    assert not (d / "s.zarr" / "object_names.json").exists()
