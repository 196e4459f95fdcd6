"""`ingest lightcurves` on what catalogue exports really hold: missing classes spelled NA or nan, a class map naming
a label twice, an unquoted separator inside a cell, split files that leave objects out. Each was ingested without a
word, its objects mislabelled or in no split."""

from __future__ import annotations

import csv
import gzip
import json
import logging
from pathlib import Path

import pytest

from lightcurve_tables import ingest_args, no_leftovers, write_splits, write_tables

from astrom3_hpc.cli import main
from astrom3_hpc.data.sources.tables import TableError, open_table, read_header
from astrom3_hpc.data.store import Store


def _relabel(d: Path, labels: dict[str, str]) -> None:
    """objects.csv with the class of the given ids replaced."""
    rows = list(csv.reader(open(d / "objects.csv", newline="")))
    with open(d / "objects.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([rows[0]] + [[r[0], labels.get(r[0], r[1]), *r[2:]] for r in rows[1:]])


def test_na_nan_and_null_labels_are_missing_classes_not_classes(tmp_path, capsys):
    write_tables(tmp_path, n_per_class=3)
    _relabel(tmp_path, {"OGLE-00000": "NA", "OGLE-00003": "nan", "OGLE-00006": "null"})
    out = tmp_path / "s.zarr"
    assert main(ingest_args(tmp_path, out)) == 2
    assert "objects.csv:2: object OGLE-00000: no class (label 'NA'); pass --drop-unlabelled" in capsys.readouterr().err
    no_leftovers(tmp_path, out)
    assert main(ingest_args(tmp_path, out, "--drop-unlabelled")) == 0
    s = Store(out)
    assert s.class_names == ("HADS_or_DSCT", "M_or_SR", "RRab-like") and s.n_objects == 6
    # A class map that names such a spelling makes it a class: the user said so.
    cmap = tmp_path / "map.csv"
    cmap.write_text("label,class\nNA,LPV\nnan,\nnull,\nM_or_SR,LPV\nHADS_or_DSCT,DSCT\nRRab-like,RRAB\n")
    assert main(ingest_args(tmp_path, out, "--class-map", str(cmap), "--overwrite")) == 0
    s = Store(out)
    assert s.class_names == ("DSCT", "LPV", "RRAB") and s.n_objects == 7
    assert s.attrs["provenance"]["source"]["left_out_by_class_map"] == {"nan": 1, "null": 1}


def test_a_label_mapped_twice_to_different_classes_is_refused(tmp_path, capsys):
    write_tables(tmp_path, n_per_class=3)
    out = tmp_path / "s.zarr"
    table = tmp_path / "map.csv"
    table.write_text("label,class\nM_or_SR,LPV\nHADS_or_DSCT,DSCT\nRRab-like,RRAB\nM_or_SR ,LPV\nRRab-like ,EW\n")
    doc = tmp_path / "map.json"
    doc.write_text('{"M_or_SR": "LPV", "HADS_or_DSCT": "DSCT", "RRab-like": "RRAB", "RRab-like": "EW"}')
    for cmap in (table, doc):
        assert main(ingest_args(tmp_path, out, "--class-map", str(cmap))) == 2, cmap
        assert f"{cmap}: label 'RRab-like' is mapped twice, to 'RRAB' and to 'EW'" in capsys.readouterr().err
        no_leftovers(tmp_path, out)
    # A JSON map saved with a byte-order mark is read; one that is not JSON is named.
    doc.write_text('\ufeff{"M_or_SR": "LPV", "HADS_or_DSCT": "DSCT", "RRab-like": "RRAB"}', encoding="utf-8")
    assert main(ingest_args(tmp_path, out, "--class-map", str(doc))) == 0, capsys.readouterr().err
    assert Store(out).class_names == ("DSCT", "LPV", "RRAB")
    # A JSON array is no map, even one of pairs (read for pairs while repeats were being looked for).
    doc.write_text('[["M_or_SR", "LPV"], ["HADS_or_DSCT", "DSCT"], ["RRab-like", "RRAB"]]')
    assert main(ingest_args(tmp_path, tmp_path / "t.zarr", "--class-map", str(doc))) == 2
    assert f"{doc}: a class map must be a JSON object {{label: class}}" in capsys.readouterr().err
    doc.write_text('{"M_or_SR": "LPV" "HADS_or_DSCT": "DSCT"}')
    assert main(ingest_args(tmp_path, tmp_path / "t.zarr", "--class-map", str(doc))) == 2
    assert f"{doc}: the class map is not valid UTF-8 JSON (Expecting ','" in capsys.readouterr().err


def test_an_unquoted_separator_in_a_cell_is_an_error_naming_the_line(tmp_path, capsys):
    write_tables(tmp_path, n_per_class=3)
    text = (tmp_path / "objects.csv").read_text().splitlines()
    out = tmp_path / "s.zarr"
    # A trailing separator (empty cells past the header) is what some exports write: read as before.
    (tmp_path / "objects.csv").write_text("\n".join([text[0]] + [r + "," for r in text[1:]]) + "\n")
    assert main(ingest_args(tmp_path, out)) == 0, capsys.readouterr().err
    assert Store(out).n_objects == 9
    # "OGLE-00004, in M13" split in two: its label column read " in M13"'s neighbour.
    text[5] = text[5].replace("OGLE-00004,", "OGLE-00004,note, in M13,")
    (tmp_path / "objects.csv").write_text("\n".join(text) + "\n")
    assert main(ingest_args(tmp_path, tmp_path / "t.zarr")) == 2
    assert "objects.csv:6: 5 cells, but the header has 3: a cell holding the separator must be quoted" \
        in capsys.readouterr().err
    no_leftovers(tmp_path, tmp_path / "t.zarr")


def test_split_files_must_place_every_labelled_object(tmp_path, capsys):
    truth = write_tables(tmp_path, n_per_class=14)
    write_splits(tmp_path, truth)
    out = tmp_path / "s.zarr"
    test_file = tmp_path / "splits" / "full" / "42" / "test.csv"
    lines = test_file.read_text().splitlines()
    test_file.write_text("\n".join(lines[:-2]) + "\n")  # two labelled objects in no split file
    left = [line.split(",")[0] for line in lines[-2:]]
    assert main(ingest_args(tmp_path, out, "--splits-from", str(tmp_path))) == 2
    err = capsys.readouterr().err
    assert "2 labelled object(s) of" in err and "are in none of the split files full/42/{train,val,test}.csv" in err
    assert all(k in err for k in left)
    no_leftovers(tmp_path, out)
    assert main(ingest_args(tmp_path, out, "--splits-from", str(tmp_path), "--on-error", "skip")) == 0
    src = Store(out).attrs["provenance"]["source"]
    assert src["n_unsplit_ids"] == 2 and sorted(src["unsplit_ids"]) == sorted(left)
    # An object the class map leaves out is still in the published files: passed over, not "not in the catalogue".
    test_file.write_text("\n".join(lines) + "\n")
    cmap = tmp_path / "map.json"
    cmap.write_text(json.dumps({"M_or_SR": "LPV", "HADS_or_DSCT": "", "RRab-like": "RRAB"}))
    assert main(ingest_args(tmp_path, out, "--splits-from", str(tmp_path), "--class-map", str(cmap),
                            "--overwrite")) == 0, capsys.readouterr().err
    s = Store(out)
    assert s.class_names == ("LPV", "RRAB") and s.n_objects == 28
    assert sum(len(s.split(42, "full", k)) for k in ("train", "val", "test")) == 28


def test_an_unbalanced_quote_is_an_error_naming_the_line_it_opens(tmp_path, capsys):
    """A quote opened and never closed took every line up to the next quote into one cell: the objects there
    vanished into one object's label, exit 0."""
    write_tables(tmp_path, n_per_class=3)
    good = (tmp_path / "objects.csv").read_text()
    lines = good.splitlines()
    lines[2] = lines[2].replace(",", ',"', 1)
    (tmp_path / "objects.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "s.zarr"
    assert main(ingest_args(tmp_path, out, "--drop-unlabelled")) == 2
    assert f"objects.csv:3: a quoted cell runs on to line {len(lines)}: an unbalanced quote" in capsys.readouterr().err
    no_leftovers(tmp_path, out)
    (tmp_path / "objects.csv").write_text(good)
    with gzip.open(tmp_path / "points.csv.gz", "rt") as fh:
        points = fh.read().splitlines()
    points[9] = points[9].replace(",", ',"', 1)
    with gzip.open(tmp_path / "points.csv.gz", "wt") as fh:
        fh.write("\n".join(points) + "\n")
    assert main(ingest_args(tmp_path, out, "--on-error", "skip")) == 2  # the whole file, not one object's rows
    assert "points.csv.gz:10: a quoted cell runs on to line" in capsys.readouterr().err
    no_leftovers(tmp_path, out)
    # Past csv's field limit the quote is csv's error, named at the line it opens; a TSV header may hold a comma.
    big = tmp_path / "big.csv"
    big.write_text('id,class\nA,EW\nB,"RRAB\n' + "".join(f"C{i},EW{'x' * 40}\n" for i in range(4000)))
    with pytest.raises(TableError, match=r"big\.csv:3: field larger than field limit .*an unbalanced quote"):
        with open_table(big) as t:
            list(t.rows)
    tsv = tmp_path / "o.tsv"
    tsv.write_text("id\tclass\tnotes, free\nA\tEW\tx, y\n")
    assert read_header(tsv) == ["id", "class", "notes, free"]


def test_class_maps_name_the_labels_they_miss_and_labels_compare_composed(tmp_path, capsys, caplog):
    """A class map with a typo ("m_or_sr" for "M_or_SR") under --drop-unlabelled or --keep-unlabelled took a whole
    class out of training without a word; a map saved as .JSON was read as a CSV table (an empty map); an accent
    typed as a combining mark made a class of its own."""
    write_tables(tmp_path, n_per_class=3)
    _relabel(tmp_path, {"OGLE-00000": "Ce\u0301P", "OGLE-00001": "C\u00e9P"})
    cmap = tmp_path / "map.JSON"
    cmap.write_text('{"HADS_or_DSCT": "DSCT", "m_or_sr": "LPV", "RRab-like": "RRAB", "C\u00e9P": "CEP"}')
    out = tmp_path / "s.zarr"
    assert main(ingest_args(tmp_path, out, "--class-map", str(cmap))) == 2
    assert "label 'M_or_SR' is not in the class map " + str(cmap) + " (it names 'm_or_sr')" in capsys.readouterr().err
    with caplog.at_level(logging.WARNING, logger="astrom3"):
        assert main(ingest_args(tmp_path, out, "--class-map", str(cmap), "--drop-unlabelled")) == 0
    assert "the class map does not name label 'M_or_SR' (1 object; the map names 'm_or_sr'): left out " \
           "(--drop-unlabelled)" in caplog.text
    s = Store(out)
    assert s.class_names == ("CEP", "DSCT", "RRAB") and s.n_objects == 8  # the two spellings of CéP: one class
    assert s.attrs["provenance"]["source"]["unmapped_by_class_map"] == {"M_or_SR": 1}
