"""Text tables as users export them (data/text_files.py, data/sources/tables.py): a spreadsheet's byte-order mark,
tab- or semicolon-separated files, and a file that is not UTF-8, which is an error naming its line."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from astrom3_hpc.cli import main
from astrom3_hpc.data.split_files import read_split_file
from astrom3_hpc.data.sources.tables import open_table
from astrom3_hpc.data.store import Store
from astrom3_hpc.data.text_files import TextEncodingError, decoding_errors_named, first_bad_line, open_text
from lightcurve_tables import ingest_args, no_leftovers, write_splits, write_tables


def _rewrite(src: Path, dst: Path, delimiter: str = ",", bom: bool = False) -> None:
    """The same table with another separator and, optionally, a UTF-8 byte-order mark."""
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rt", newline="") as fh:
        text = fh.read().replace(",", delimiter)
    with (gzip.open if dst.suffix == ".gz" else open)(dst, "wt", encoding="utf-8-sig" if bom else "utf-8",
                                                       newline="") as fh:
        fh.write(text)


@pytest.mark.parametrize("delimiter", ["\t", ";"])
def test_tab_and_semicolon_tables_with_a_bom_make_the_csv_store(tmp_path, delimiter):
    truth = write_tables(tmp_path)
    write_splits(tmp_path, truth)
    a, b = tmp_path / "csv.zarr", tmp_path / "other.zarr"
    assert main(ingest_args(tmp_path, a, "--splits-from", str(tmp_path))) == 0
    other = tmp_path / "other"
    other.mkdir()
    _rewrite(tmp_path / "points.csv.gz", other / "points.csv.gz", delimiter, bom=True)
    _rewrite(tmp_path / "objects.csv", other / "objects.csv", delimiter, bom=True)
    for split in ("train", "val", "test"):  # split files as a spreadsheet saves them: with a byte-order mark
        p = other / "splits" / "full" / "42" / f"{split}.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        _rewrite(tmp_path / "splits" / "full" / "42" / f"{split}.csv", p, bom=True)
    assert main(ingest_args(other, b, "--splits-from", str(other))) == 0
    sa, sb = Store(a), Store(b)
    assert sb.class_names == sa.class_names
    for name in ("object_id", "label", "lc/values", "lc/period_search", "splits/seed42/full/test"):
        np.testing.assert_array_equal(sa.root[name][:], sb.root[name][:], err_msg=name)


def test_open_table_reads_header_and_rows_whatever_the_separator(tmp_path):
    for delimiter, name in ((",", "a.csv"), ("\t", "a.tsv"), (";", "a.txt")):
        p = tmp_path / name
        p.write_text(delimiter.join(["id", "t", "label"]) + "\n" + delimiter.join(["7", "1.5", "RR, c"
                                                                                   if delimiter != "," else "RR"])
                     + "\n\n" + delimiter.join(["8", "2.5", "EW"]) + "\n", encoding="utf-8-sig")
        with open_table(p) as t:
            assert t.header == ["id", "t", "label"]
            rows = list(t.rows)
        assert [pos for pos, _ in rows] == [2, 4]  # the blank line is skipped but counted
        assert rows[0][1][2] == ("RR, c" if delimiter != "," else "RR") and rows[1][1] == ["8", "2.5", "EW"]


def test_a_file_that_is_not_utf8_is_named_by_its_line(tmp_path, capsys):
    write_tables(tmp_path, n_per_class=3)
    text = (tmp_path / "objects.csv").read_text().splitlines()
    text[3] = text[3] + "é"  # a label saved as Latin-1
    (tmp_path / "objects.csv").write_bytes(("\n".join(text) + "\n").encode("latin-1"))
    out = tmp_path / "s.zarr"
    assert main(ingest_args(tmp_path, out)) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'objects.csv'}:4: not UTF-8 text (byte 0xe9" in err and "Traceback" not in err
    no_leftovers(tmp_path, out)
    # The same in a gzip file, past the first buffer the decoder reads, and in a split file.
    p = tmp_path / "big.csv.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(b"id\n" + b"".join(b"%d\n" % i for i in range(20000)) + b"x\xff\n")
    assert first_bad_line(p) == (20002, 2, 0xFF)
    with pytest.raises(TextEncodingError, match=r"big\.csv\.gz:20002: not UTF-8 text \(byte 0xff at column 2\)"):
        with open_table(p) as t:
            list(t.rows)
    split = tmp_path / "train.csv"
    split.write_bytes(b"id\n1\n\xe92\n")
    with pytest.raises(TextEncodingError, match=r"train\.csv:3:"):
        read_split_file(split)


def test_a_decode_error_from_elsewhere_is_not_blamed_on_a_good_file(tmp_path):
    p = tmp_path / "good.csv"
    p.write_text("id\n1\n")
    with pytest.raises(UnicodeDecodeError):
        with open_text(p) as fh, decoding_errors_named(p):
            fh.read()
            b"\xff".decode("utf-8")
