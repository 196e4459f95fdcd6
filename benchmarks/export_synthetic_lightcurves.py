r"""Export the synthetic survey's light curves as the long CSV tables `astrom3 ingest lightcurves` reads, so the
generic path (and its Lomb-Scargle periods) can be measured on it (docs/lightcurves_results.md).

    python benchmarks/export_synthetic_lightcurves.py 2000 OUT_DIR
    astrom3 ingest lightcurves --points OUT_DIR/points.csv.gz --objects OUT_DIR/objects.csv --flux-column flux \
        --out syn.zarr

objects.csv carries the generator's period in column `period` (not used unless --period-column period). Both
tables are written under temporary names and renamed into place together at the end: an interrupted export
leaves no table behind that looks complete.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import sys
from contextlib import ExitStack
from pathlib import Path

# The checkout this file sits in, not whatever astrom3_hpc the venv has installed (another branch's tree).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from astrom3_hpc.core.atomic import atomic_path, finishing  # noqa: E402
from astrom3_hpc.core.constants import CLASS_NAMES  # noqa: E402
from astrom3_hpc.data.synthetic import SyntheticSource  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n_objects", type=int)
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = SyntheticSource(args.n_objects, seed=args.seed)
    with ExitStack() as stack:
        # An export stopped part-way (Ctrl-C) used to leave a points table and objects table of the first few hundred
        # objects under the final names, which ingested with exit 0 as if they were the survey.
        points = stack.enter_context(atomic_path(out / "points.csv.gz"))
        objects = stack.enter_context(atomic_path(out / "objects.csv"))
        with gzip.open(points, "wt", newline="") as fp, open(objects, "w", newline="") as fo:
            wp, wo = csv.writer(fp), csv.writer(fo)
            wp.writerow(["id", "time", "flux", "err"])
            wo.writerow(["id", "label", "period"])
            written = 0
            for i in range(len(src)):
                o = src.get(i)
                if o.label < 0:
                    continue
                wo.writerow([o.object_id, CLASS_NAMES[o.label], o.aux[1]])
                written += 1
                wp.writerows([o.object_id, f"{t:.6f}", f"{f:.6g}", f"{e:.4g}"] for t, f, e in o.lc)
        with finishing(f"the tables in {out}"):  # both renames, or a signal between them would pair new with old
            stack.close()
    print(f"{out / 'points.csv.gz'}, {out / 'objects.csv'}: {written} objects")


if __name__ == "__main__":
    main()
