r"""Reading a long points table: the batched parser (astrom3_hpc/data/sources/points_table.py) against the
row-by-row parser it replaced, on the same generated file, each in its own process so peak RSS is its own.

Every MPI rank of `astrom3 ingest lightcurves` reads the whole points file, so this cost is paid per rank and does
not shrink with more ranks; the period searches, which do, are not part of it.

    python benchmarks/points_table.py [--objects 2000] [--points 500] [--bands 1] [--ranks 8]
                                      [--file POINTS --objects-file OBJ]

With --ranks R it also times what one rank of R does, in a plain child process (no mpiexec): the batched parser
keeping only the first 1/R of the objects' rows. With --parquet both parsers read the table written to Parquet
(pyarrow, float64 columns) instead. A --file with other column names names them, e.g. the ZTF DR3 sample's r band:

    python benchmarks/points_table.py --file ztf_vsx_lightcurves_long.csv.gz --objects-file ztf_vsx_objects.csv \
        --columns vsx_oid,mjd,mag,magerr,filter --band 2 --objects-id-column vsx_oid [--parquet --parquet-defaults]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# The checkout this file sits in, not whatever astrom3_hpc the venv has installed (another branch's tree).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_table(root: Path, n_objects: int, n_points: int, n_bands: int, seed: int = 0) -> tuple[Path, Path]:
    """A survey-like long table: 19-digit ids (Gaia-style), Julian dates, fluxes and errors as a CSV export
    prints them; with several bands, one column names the band and only the first is read."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(10 ** 18, 9 * 10 ** 18, n_objects)
    points, objects = root / "points.csv.gz", root / "objects.csv"
    with gzip.open(points, "wt", compresslevel=6) as fh:
        fh.write("id,time,flux,err" + (",band" if n_bands > 1 else "") + "\n")
        for oid in ids:
            t = np.sort(2455000 + rng.uniform(0, 2500, n_points * n_bands))
            f = 5 + rng.normal(0, 1, len(t))
            e = rng.uniform(0.01, 0.3, len(t))
            bands = rng.integers(0, n_bands, len(t))
            for ti, fi, ei, bi in zip(t, f, e, bands):
                fh.write(f"{oid},{ti:.6f},{fi:.5f},{ei:.4f}" + (f",b{bi}" if n_bands > 1 else "") + "\n")
    objects.write_text("id,label\n" + "".join(f"{oid},C{i % 5}\n" for i, oid in enumerate(ids)))
    return points, objects


def rowwise(path: str, keys: list[str], band: str | None, cols: list[str]
            ) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """The row-by-row parser points_table.py replaced (lists of Python floats, ids sorted as strings), kept
    here as the baseline."""
    from astrom3_hpc.data.sources.points_table import norm_id
    from astrom3_hpc.data.sources.tables import open_table

    wanted = set(keys)
    with open_table(path) as t:
        k_id, k_t, k_v, k_e = (t.header.index(c) for c in cols[:4])
        k_b = t.header.index(cols[4]) if band else None
        ids, vals = [], []
        for _, r in t.rows:
            key = norm_id(r[k_id])
            if key not in wanted or (k_b is not None and r[k_b].strip() != band):
                continue
            row = []
            for k in (k_t, k_v, k_e):
                cell = r[k].strip()
                row.append(float(cell) if cell else math.nan)
            row.append(0)
            ids.append(key)
            vals.append(row)
    a = np.asarray(vals, np.float64).reshape(-1, 4)
    id_arr = np.asarray(ids, object)
    order = np.argsort(id_arr, kind="stable")
    ids_sorted, a = id_arr[order], a[order]
    starts = np.flatnonzero(np.r_[True, ids_sorted[1:] != ids_sorted[:-1]])
    stops = np.r_[starts[1:], len(ids_sorted)]
    return a, {ids_sorted[s]: (int(s), int(e)) for s, e in zip(starts, stops)}


def child(mode: str, points: str, objects: str, band: str | None, ranks: int, cols: list[str],
          objects_id: str | None) -> None:
    from astrom3_hpc.data.sources.points_table import norm_id, read_points
    from astrom3_hpc.data.sources.tables import open_table

    with open_table(objects) as t:
        k = t.header.index(objects_id) if objects_id else 0
        keys = list(dict.fromkeys(norm_id(r[k]) for _, r in t.rows))  # an object listed twice is read once
    t0 = time.perf_counter()
    only = (0, -(-len(keys) // ranks)) if mode == "one-rank" else None
    if mode == "rowwise":
        values, groups = rowwise(points, keys, band, cols)
    else:
        p = read_points(points, id_column=cols[0], numeric_columns=tuple(cols[1:4]),
                        band_column=cols[4] if band else None, keys=keys, bands=(band,) if band else (), only=only)
        values, groups = p.values, p.groups
    if only:
        keys = keys[only[0]:only[1]]
    wall = time.perf_counter() - t0
    digest = hashlib.sha1()
    for k in keys:  # per object, so the two parsers' different group order does not matter
        s, e = groups.get(k, (0, 0))
        digest.update(values[s:e, :3].tobytes())
    print(json.dumps({"mode": mode, "wall_s": wall, "rows": len(values), "digest": digest.hexdigest(),
                      "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's own peak RSS. Linux's ru_maxrss survives exec, so a child of this benchmark's parent (which
    holds the whole generated table) would report at least the parent's RSS at the fork; VmHWM belongs to the
    process's own address space, which exec starts afresh."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=2000, help="objects in the generated table")
    ap.add_argument("--points", type=int, default=500, help="points per object and band")
    ap.add_argument("--bands", type=int, default=1, help="bands in the table (only the first is read)")
    ap.add_argument("--file", default=None, help="an existing points table (columns: --columns)")
    ap.add_argument("--objects-file", default=None, help="its objects table (ids: --objects-id-column)")
    ap.add_argument("--columns", default="id,time,flux,err,band",
                    help="the points table's id, time, value, error and (with --band or --bands > 1) band columns")
    ap.add_argument("--band", default=None, help="the band value to read (default: b0 with --bands > 1, else all rows)")
    ap.add_argument("--objects-id-column", default=None, help="the objects table's id column (default: the first)")
    ap.add_argument("--ranks", type=int, default=1, help="also time one rank's share of R ranks")
    ap.add_argument("--parquet", action="store_true", help="read the table as Parquet (needs pyarrow)")
    ap.add_argument("--parquet-defaults", action="store_true",
                    help="write that Parquet with pyarrow's inferred types (integer ids stay integers) instead of "
                         "string ids")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    band = args.band or ("b0" if args.bands > 1 else None)
    cols = args.columns.split(",")
    if len(cols) < 4 + bool(band):
        ap.error(f"--columns {args.columns}: needs id, time, value, error" + (" and band" if band else ""))
    if bool(args.file) != bool(args.objects_file):
        ap.error("--file and --objects-file go together")
    if args.child:
        child(args.child, args.file, args.objects_file, band, args.ranks, cols, args.objects_id_column)
        return
    with tempfile.TemporaryDirectory(prefix="points-bench-") as tmp:
        if args.file:
            points, objects = Path(args.file), Path(args.objects_file)
        else:
            t0 = time.perf_counter()
            points, objects = write_table(Path(tmp), args.objects, args.points, args.bands)
            print(f"wrote {points.stat().st_size / 2**20:.0f} MB gzip in {time.perf_counter() - t0:.0f} s")
        if args.parquet:
            import pyarrow as pa
            import pyarrow.csv as pa_csv
            import pyarrow.parquet as pq

            types = {} if args.parquet_defaults else {cols[0]: pa.string()}
            table = pa_csv.read_csv(points, convert_options=pa_csv.ConvertOptions(column_types=types))
            points = Path(tmp) / "points.parquet"
            pq.write_table(table, points)
            print(f"as Parquet: {points.stat().st_size / 2**20:.0f} MB")
        res = {}
        for mode in ("rowwise", "batched") + (("one-rank",) if args.ranks > 1 else ()):
            extra = ["--band", band] if band else []
            extra += ["--objects-id-column", args.objects_id_column] if args.objects_id_column else []
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--file", str(points),
                                  "--objects-file", str(objects), "--bands", str(args.bands), "--ranks",
                                  str(args.ranks), "--columns", args.columns, *extra],
                                 capture_output=True, text=True, check=True)
            res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            r = res[mode]
            print(f"{mode:8s} {r['rows']:>10,d} rows  {r['wall_s']:6.2f} s  {r['rows'] / r['wall_s'] / 1e6:5.2f} M "
                  f"rows/s  peak RSS {r['peak_rss_mb']:6.0f} MB")
    a, b = res["rowwise"], res["batched"]
    if a["digest"] != b["digest"] or a["rows"] != b["rows"]:
        raise SystemExit("the two parsers disagree: the batched parser is wrong")
    print(f"batched / row-by-row: {a['wall_s'] / b['wall_s']:.2f}x faster, peak RSS "
          f"{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x; same rows, same values per object")
    if "one-rank" in res:
        c = res["one-rank"]
        print(f"one rank of {args.ranks} / row-by-row: {a['wall_s'] / c['wall_s']:.2f}x faster, peak RSS "
              f"{c['peak_rss_mb'] / a['peak_rss_mb']:.2f}x (its {c['rows']:,d} rows)")


if __name__ == "__main__":
    main()
