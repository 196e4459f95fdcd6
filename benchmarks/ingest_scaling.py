"""Ingestion scaling: wall time, objects/s and peak RSS for synthetic stores of growing size.

Each size runs in its own process (optionally under mpiexec) so peak RSS is that build's alone. Memory must
stay flat as N grows (streaming in bounded blocks); the last line extrapolates the time for the ASAS-SN
variable-star catalogue (~690,000 objects).

    python benchmarks/ingest_scaling.py [--sizes 20000 200000] [--ranks 2] [--generator 3000]
    python benchmarks/ingest_scaling.py --generator 3000 --sizes        # the generator alone

--generator N first times the synthetic generator alone in this process (SyntheticSource.get over N objects, after
one untimed get that builds the spectral templates): what an ingest rank would reach if preprocessing and writing
cost nothing, the baseline each ingest rate is printed against.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ASASSN_VARIABLES = 690_000
ROOT = Path(__file__).resolve().parents[1]


def run(n: int, ranks: int, out: Path, compression: str | None) -> dict:
    # The venv's `astrom3` entry point imports the tree the venv was installed from: a branch checkout sharing the
    # venv would time another tree's ingest. `-m` with this checkout first on PYTHONPATH times this one.
    cmd = [sys.executable, "-m", "astrom3_hpc.cli", "ingest", "synthetic", "-n", str(n), "--out", str(out),
           "--on-error", "skip", "--no-progress"]
    if compression:
        cmd += ["--compression", compression]
    if ranks > 1:
        cmd = ["mpiexec", "-n", str(ranks), *cmd]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}
    t0 = time.perf_counter()
    # GNU time reports the largest RSS of any process in the tree it waits for (per rank under mpiexec).
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"n": n, "wall_s": wall, "obj_per_s": n / wall, "peak_rss_mb": rss_kb / 1024,
            "store_mb": size / 2**20, "n_valid": summary["n_valid"]}


def generator_rate(n: int) -> float:
    """Objects per wall second of SyntheticSource.get alone, one process, one thread."""
    sys.path.insert(0, str(ROOT))
    from threadpoolctl import threadpool_limits

    from astrom3_hpc.data.synthetic import SyntheticSource

    src = SyntheticSource(n, seed=0)
    with threadpool_limits(1):
        src.get(0)  # builds the spectral templates (~0.4 s once per process): not per-object cost
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            src.get(i)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"generator alone: {n} objects in {wall:.2f} s: {n / wall:,.0f} objects/s wall, {n / cpu:,.0f} per CPU "
          f"second (load average {os.getloadavg()[0]:.2f})", flush=True)
    return n / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[20_000, 200_000])
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--compression", default=None, help="store layout option (default: ingest's default)")
    ap.add_argument("--dir", default=None, help="where to build (default: a temp dir, removed afterwards)")
    ap.add_argument("--generator", type=int, default=0, metavar="N",
                    help="also time the generator alone over N objects in this process (the baseline)")
    args = ap.parse_args()
    gen = generator_rate(args.generator) if args.generator else None
    if not args.sizes:
        return
    if not shutil.which("time") and not Path("/usr/bin/time").exists():
        raise SystemExit("needs GNU time (/usr/bin/time): apt-get install time")
    root = Path(args.dir or tempfile.mkdtemp(prefix="ingest-bench-"))
    rows = []
    for n in args.sizes:
        out = root / f"s{n}.zarr"
        rows.append(run(n, args.ranks, out, args.compression))
        shutil.rmtree(out, ignore_errors=True)
        r = rows[-1]
        vs = f"  {r['obj_per_s'] / gen:.2f}x the generator alone" if gen else ""
        print(f"n={n:>8}: {r['wall_s']:8.1f} s  {r['obj_per_s']:8.0f} obj/s  peak RSS {r['peak_rss_mb']:7.0f} MB  "
              f"store {r['store_mb']:8.0f} MB{vs}", flush=True)
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)
    a, b = rows[0], rows[-1]
    print(f"\nranks {args.ranks}, compression {args.compression or 'default'}; RSS ratio {b['n']}/{a['n']} objects: "
          f"{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x "
          f"for {b['n'] / a['n']:.0f}x the objects (flat is ~1x; target < 4 GB)")
    print(f"extrapolated ASAS-SN variable catalogue ({ASASSN_VARIABLES:,} objects): "
          f"{ASASSN_VARIABLES / b['obj_per_s'] / 60:.1f} min at {b['obj_per_s']:.0f} obj/s, "
          f"~{b['store_mb'] / b['n'] * ASASSN_VARIABLES / 1024:.1f} GB on disk")


if __name__ == "__main__":
    main()
