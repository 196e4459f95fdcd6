"""Several bands merged into one light curve per object (`astrom3 ingest lightcurves --band r,g`): the merge
rule on numbers, the ingest on a two-band table, the errors, and real ZTF g+r curves."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from conftest import REALDATA
from lightcurve_tables import ingest_args, write_tables

from astrom3_hpc.cli import main
from astrom3_hpc.data.sources.lightcurves import merge_bands


def _rows(t, v, e, band):
    return np.stack([t, v, e, np.full(len(t), band, float)], axis=1)


def test_merge_shifts_magnitudes_and_scales_fluxes_to_the_first_band():
    rng = np.random.default_rng(0)
    t1, t2 = np.sort(rng.uniform(0, 100, 40)), np.sort(rng.uniform(0, 100, 30))
    shape = lambda t: 0.3 * np.sin(2 * np.pi * t / 0.61)  # noqa: E731
    mags = np.concatenate([_rows(t1, 15 + shape(t1), np.full(40, .02), 0),
                           _rows(t2, 15.8 + shape(t2), np.full(30, .03), 1),
                           _rows(t2[:4], np.full(4, 99.0), np.full(4, .1), 2)])  # 4 points: left out
    m = merge_bands(mags[rng.permutation(len(mags))], magnitudes=True)
    assert len(m) == 70 and np.all(np.diff(m[:, 0]) >= 0)
    # Band 1 lands on band 0's level, errors untouched (an offset in magnitude).
    assert np.median(m[m[:, 3] == 1, 1]) == pytest.approx(np.median(m[m[:, 3] == 0, 1]))
    np.testing.assert_allclose(m[m[:, 3] == 1, 2], 0.03)
    # One offset per band: the shape is kept exactly; the offset is the medians' difference, which a different
    # sampling of the cycle moves a little (a few hundredths here).
    resid = m[:, 1] - 15 - shape(m[:, 0])
    for b in (0, 1):
        assert np.ptp(resid[m[:, 3] == b]) < 1e-9
    assert abs(resid[m[:, 3] == 1][0]) < 0.1

    # Fluxes: a colour is a ratio, so the second band is scaled, errors with it; relative amplitude kept.
    flux = np.concatenate([_rows(t1, 10 * (1 + shape(t1)), np.full(40, .1), 0),
                           _rows(t2, 4 * (1 + shape(t2)), np.full(30, .1), 1)])
    f = merge_bands(flux, magnitudes=False)
    b1 = f[:, 3] == 1
    level = f[:, 1] / (1 + shape(f[:, 0]))  # one scale per band: the relative shape is kept exactly
    assert np.ptp(level[b1]) < 1e-9 and np.ptp(level[~b1]) < 1e-9
    assert level[b1][0] == pytest.approx(level[~b1][0], rel=0.1)
    assert np.all(f[b1, 2] > 0.2)  # 0.1 scaled by about 10 / 4
    # The reference is the first listed band the object has: without band 0, band 1 stays as it is.
    only1 = merge_bands(mags[mags[:, 3] == 1], magnitudes=True)
    np.testing.assert_array_equal(only1[:, 1], mags[mags[:, 3] == 1, 1][np.argsort(t2, kind="stable")])
    assert len(merge_bands(mags[mags[:, 3] == 2], magnitudes=True)) == 0


def _two_band_tables(d: Path) -> dict:
    """The test tables with V and I observed on alternate epochs (as ZTF takes g and r on different nights) and
    band I 0.7 mag fainter."""
    truth = write_tables(d, n_per_class=4)
    with gzip.open(d / "points.csv.gz", "rt", newline="") as f:
        header, *rows = list(csv.reader(f))
    kept, epoch = [header], {}
    for r in rows:
        k = epoch[(r[0], r[2])] = epoch.get((r[0], r[2]), -1) + 1
        if (r[2] == "V") == (k % 2 == 0):
            kept.append(r[:3] + [f"{float(r[3]) + 0.7:.4f}" if r[2] == "I" else r[3]] + r[4:])
    with gzip.open(d / "points.csv.gz", "wt", newline="") as f:
        csv.writer(f).writerows(kept)
    return truth


def test_ingest_merges_bands_into_one_curve(tmp_path):
    from astrom3_hpc.data.store import Store

    truth = _two_band_tables(tmp_path)
    one, both = tmp_path / "v.zarr", tmp_path / "vi.zarr"
    assert main(ingest_args(tmp_path, one)) == 0
    args = ingest_args(tmp_path, both)
    args[args.index("--band") + 1] = "V,I"
    assert main(args) == 0
    sv, svi = Store(one), Store(both)
    assert np.all(svi.root["lc/length"][:] == 2 * sv.root["lc/length"][:])  # 75 V + 75 I epochs each
    src = svi.attrs["provenance"]["source"]
    assert src["band"] == "V,I" and "band V's median" in src["band_merge"]
    # The 0.7 mag colour is taken out: each object's merged flux sits at its V level (the bands side by side
    # would put half the points at half the flux).
    from astrom3_hpc.data.sources.lightcurves import LightCurveTableSource, TableOptions

    opt = dict(points=str(tmp_path / "points.csv.gz"), objects=str(tmp_path / "objects.csv"), id_column="star",
               time_column="hjd", mag_column="magnitude", err_column="magnitude_err", band_column="band",
               label_column="cls")
    v, vi = LightCurveTableSource(TableOptions(**opt, band="V")), LightCurveTableSource(TableOptions(**opt, band="V,I"))
    for i in range(len(v)):
        a, b = v.get(i).lc, vi.get(i).lc
        assert len(b) == 2 * len(a) and np.all(np.diff(b[:, 0]) >= 0)
        assert np.median(b[:, 1]) == pytest.approx(np.median(a[:, 1]), rel=0.1)
    # The merged curve still gives the period.
    ps = svi.root["lc/period_search"][:, 0]
    names = [f"OGLE-{k:05d}" for k in range(len(truth))]
    true_p = np.array([truth[n][1] for n in names])
    assert np.mean(np.abs(ps / true_p - 1) < 0.01) > 0.9


def test_band_list_errors_name_the_option(tmp_path, capsys):
    write_tables(tmp_path, n_per_class=2)
    out = tmp_path / "s.zarr"
    for bands, want in (("V,V", "distinct bands"), ("V,", "distinct bands")):
        args = ingest_args(tmp_path, out)
        args[args.index("--band") + 1] = bands
        assert main(args) == 2
        assert want in capsys.readouterr().err and not out.exists()
    args = ingest_args(tmp_path, out)
    i = args.index("--band-column")
    del args[i:i + 2]
    args[args.index("--band") + 1] = "V,I"
    assert main(args) == 2
    assert "--band-column" in capsys.readouterr().err and not out.exists()
    # Several bands in the column and no --band: the message says how to merge them.
    args = ingest_args(tmp_path, out)
    i = args.index("--band")
    del args[i:i + 2]
    assert main(args) == 2
    assert "--band I,V" in capsys.readouterr().err and not out.exists()


def test_real_ztf_g_and_r_merged(tmp_path):
    """Ten ZTF DR3 RR Lyrae: g and r are observed on different nights, so the merged curve has both bands'
    epochs, and its Lomb-Scargle period is the catalogue's."""
    from astrom3_hpc.data.store import Store

    src = REALDATA / "ztf_vsx"
    with open(src / "ztf_vsx_objects.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["Type"] in ("RRAB", "RRC") and r["period"]][:10]
    keep = {r["vsx_oid"] for r in rows}
    with open(tmp_path / "objects.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    counts: dict[tuple[str, str], int] = {}
    with gzip.open(src / "ztf_vsx_lightcurves_long.csv.gz", "rt") as fi, open(tmp_path / "points.csv", "w") as fo:
        fo.write(fi.readline())
        for line in fi:
            cells = line.split(",", 2)
            if cells[0] in keep:
                fo.write(line)
                counts[(cells[0], cells[1])] = counts.get((cells[0], cells[1]), 0) + 1
    out = tmp_path / "ztf.zarr"
    assert main(["ingest", "lightcurves", "--points", str(tmp_path / "points.csv"), "--objects",
                 str(tmp_path / "objects.csv"), "--id-column", "vsx_oid", "--time-column", "mjd", "--mag-column",
                 "mag", "--err-column", "magerr", "--band-column", "filter", "--band", "2,1", "--label-column",
                 "Type", "--out", str(out), "--no-progress"]) == 0
    s = Store(out)
    ids = s.root["object_id"][:]
    length = s.root["lc/length"][:]
    gr = np.array([counts.get((str(o), "1"), 0) + counts.get((str(o), "2"), 0) for o in ids])
    # Every g and r epoch is in (a few non-finite or sentinel rows may go), more than r alone.
    assert np.all(length <= gr) and np.all(length >= 0.95 * gr)
    assert np.all(length > np.array([counts.get((str(o), "2"), 0) for o in ids]))
    cat = {int(r["vsx_oid"]): float(r["period"]) for r in rows}
    ratio = s.root["lc/period_search"][:, 0] / np.array([cat[int(o)] for o in ids])
    assert np.mean(np.abs(ratio - 1) < 0.01) >= 0.9
