"""Parquet tables for `astrom3 ingest lightcurves`: the same store as the same rows in CSV, and the same kind of
errors, naming the file and the row (data/sources/tables.py)."""

from __future__ import annotations

import csv
import gzip
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from astrom3_hpc.cli import main
from astrom3_hpc.data.store import Store
from lightcurve_tables import ingest_args, no_leftovers, write_splits, write_tables


def _csv_to_parquet(src: Path, dst: Path, types: dict[str, pa.DataType], row_group: int) -> None:
    """The CSV's columns typed as a survey's Parquet would hold them; empty cells become nulls."""
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rt", newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    cols = {}
    for j, name in enumerate(header):
        cells = [r[j] if r[j] != "" else None for r in body]
        typ = types.get(name, pa.string())
        if pa.types.is_floating(typ):
            cells = [None if c is None else float(c) for c in cells]
        cols[name] = pa.array(cells, type=typ)
    pq.write_table(pa.table(cols), dst, row_group_size=row_group)


def _parquet_args(d: Path, out: Path, *extra: str) -> list[str]:
    args = ingest_args(d, out, *extra)
    args[args.index("--points") + 1] = str(d / "points.parquet")
    args[args.index("--objects") + 1] = str(d / "objects.parquet")
    return args


def _to_parquet(d: Path, time_type: pa.DataType = pa.float64()) -> None:
    # Small row groups: the reader's batches cross them.
    _csv_to_parquet(d / "points.csv.gz", d / "points.parquet",
                    {"hjd": time_type, "magnitude": pa.float64(), "magnitude_err": pa.float32()}, row_group=500)
    _csv_to_parquet(d / "objects.csv", d / "objects.parquet", {"P": pa.float64()}, row_group=7)


def test_parquet_tables_make_the_csv_store(tmp_path):
    truth = write_tables(tmp_path, n_per_class=14)
    write_splits(tmp_path, truth)
    _to_parquet(tmp_path)
    a, b = tmp_path / "csv.zarr", tmp_path / "pq.zarr"
    assert main(ingest_args(tmp_path, a, "--splits-from", str(tmp_path))) == 0
    assert main(_parquet_args(tmp_path, b, "--splits-from", str(tmp_path), "--period-column", "P")) == 0
    sa, sb = Store(a), Store(b)
    assert sb.attrs["provenance"]["source"]["points"].endswith("points.parquet")
    assert sb.class_names == sa.class_names
    assert (a / "object_names.json").read_text() == (b / "object_names.json").read_text()
    # Float32 errors are read as their decimals (0.02), as a CSV export would print them, not widened.
    for name in ("object_id", "label", "lc/values", "lc/period_search", "splits/seed42/full/train",
                 "splits/seed42/sub10/test"):
        np.testing.assert_array_equal(sa.root[name][:], sb.root[name][:], err_msg=name)
    # The Parquet store took the catalogue period column; the CSV one searched: the same periods to 1 %.
    pa_, pb = sa.root["aux"][:, 1], sb.root["aux"][:, 1]
    assert np.mean(np.abs(10 ** (pa_ - pb) - 1) < 0.01) > 0.9


def test_a_float32_time_column_too_coarse_for_the_periods_searched_is_refused(tmp_path, capsys):
    """Catches Julian Dates stored as float32 (steps of 0.25 d at 2.46e6) ingested without a word: every 0.3-day
    variable got an alias for its period. Float32 MJD (steps of 0.004 d at 57600) finds the float64 periods and
    is read."""
    write_tables(tmp_path, n_per_class=3)
    _to_parquet(tmp_path, time_type=pa.float32())
    out = tmp_path / "s.zarr"
    assert main(_parquet_args(tmp_path, out)) == 0, capsys.readouterr().err
    assert Store(out).n_objects == 9
    points = tmp_path / "points.csv.gz"
    with gzip.open(points, "rt", newline="") as fh:
        rows = list(csv.reader(fh))
    with gzip.open(points, "wt", newline="") as fh:
        csv.writer(fh).writerows([rows[0]] + [[r[0], repr(float(r[1]) + 2400000.5), *r[2:]] for r in rows[1:]])
    _to_parquet(tmp_path, time_type=pa.float32())
    assert main(_parquet_args(tmp_path, tmp_path / "jd.zarr")) == 2
    assert f"{tmp_path / 'points.parquet'}: time column 'hjd' is float32: at 245" in capsys.readouterr().err
    no_leftovers(tmp_path, tmp_path / "jd.zarr")
    assert main(_parquet_args(tmp_path, tmp_path / "jd.zarr", "--min-period", "1.5")) == 0, capsys.readouterr().err


def test_parquet_errors_name_file_row_and_column(tmp_path, capsys):
    write_tables(tmp_path, n_per_class=3, bad_time_of="OGLE-00002")
    _to_parquet(tmp_path, time_type=pa.string())  # a text time column holding "yesterday"
    out = tmp_path / "s.zarr"
    assert main(_parquet_args(tmp_path, out)) == 2
    err = capsys.readouterr().err
    assert "points.parquet" in err and "OGLE-00002" in err and "'hjd'" in err and "'yesterday'" in err
    assert "row " in err and "Traceback" not in err
    no_leftovers(tmp_path, out)
    # A label left empty: a null cell, named by its row.
    t = pq.read_table(tmp_path / "objects.parquet").to_pylist()
    t[4]["cls"] = None
    pq.write_table(pa.Table.from_pylist(t), tmp_path / "objects.parquet")
    assert main(_parquet_args(tmp_path, out)) == 2
    err = capsys.readouterr().err
    assert "objects.parquet row 5" in err and "OGLE-00004" in err and "--drop-unlabelled" in err
    # Not Parquet at all.
    (tmp_path / "objects.parquet").write_text("star,cls\nOGLE-00000,RR\n")
    assert main(_parquet_args(tmp_path, out)) == 2
    assert "objects.parquet: not a readable Parquet file" in capsys.readouterr().err
    no_leftovers(tmp_path, out)


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, capsys, monkeypatch):
    write_tables(tmp_path, n_per_class=3)
    _to_parquet(tmp_path)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were not installed
    out = tmp_path / "s.zarr"
    assert main(_parquet_args(tmp_path, out)) == 2
    assert "pip install 'astrom3-hpc[parquet]'" in capsys.readouterr().err
    no_leftovers(tmp_path, out)
