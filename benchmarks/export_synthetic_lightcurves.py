"""Export the synthetic survey's light curves as the long CSV tables `astrom3 ingest lightcurves` reads, so the
generic path (and its Lomb-Scargle periods) can be measured on it (docs/lightcurves_results.md).

    python benchmarks/export_synthetic_lightcurves.py 2000 OUT_DIR
    astrom3 ingest lightcurves --points OUT_DIR/points.csv.gz --objects OUT_DIR/objects.csv --flux-column flux \
        --out syn.zarr

objects.csv carries the generator's period in column `period` (not used unless --period-column period).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import sys
from pathlib import Path

# The checkout this file sits in, not whatever astrom3_hpc the venv has installed (another branch's tree).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from astrom3_hpc.core.constants import CLASS_NAMES  # noqa: E402
from astrom3_hpc.data.synthetic import SyntheticSource  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n_objects", type=int)
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = SyntheticSource(args.n_objects, seed=args.seed)
    with gzip.open(out / "points.csv.gz", "wt", newline="") as fp, open(out / "objects.csv", "w", newline="") as fo:
        wp, wo = csv.writer(fp), csv.writer(fo)
        wp.writerow(["id", "time", "flux", "err"])
        wo.writerow(["id", "label", "period"])
        for i in range(len(src)):
            o = src.get(i)
            if o.label < 0:
                continue
            wo.writerow([o.object_id, CLASS_NAMES[o.label], o.aux[1]])
            wp.writerows([o.object_id, f"{t:.6f}", f"{f:.6g}", f"{e:.4g}"] for t, f, e in o.lc)


if __name__ == "__main__":
    main()
