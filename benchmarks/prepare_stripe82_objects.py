r"""Write the objects table `astrom3 ingest lightcurves` needs for the Stripe 82 RR Lyrae sample (Sesar et al.
2010, /work/shared/realdata/sesar2010_rrlyrae): its periods.csv names the id `Num` where the light-curve table
says `num`, and carries the catalogue period, which a photometry-only run must not see. The output keeps only
the id and the type (ab/c), so the store's periods are Lomb-Scargle ones (docs/lightcurves_results.md).

    python benchmarks/prepare_stripe82_objects.py /work/shared/realdata/sesar2010_rrlyrae/periods.csv OUT.csv
    astrom3 ingest lightcurves --points .../sesar2010_rrlyrae_lightcurves.csv.gz --objects OUT.csv \
        --id-column num --time-column time --mag-column mag --err-column magerr --band-column band --band r \
        --label-column type --out s82.zarr
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

# The checkout this file sits in, not whatever astrom3_hpc the venv has installed (another branch's tree).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from astrom3_hpc.core.atomic import atomic_path  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("periods_csv", help="periods.csv of the sample (columns Num, Type, Per)")
    ap.add_argument("out_csv")
    args = ap.parse_args()
    try:
        with open(args.periods_csv, newline="") as f:
            rows = [(r["Num"].strip(), r["Type"].strip()) for r in csv.DictReader(f)]
    except OSError as e:
        ap.exit(2, f"prepare_stripe82_objects.py: {args.periods_csv}: {e.strerror}\n")
    with atomic_path(args.out_csv) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["num", "type"])
        w.writerows(rows)
    print(f"{args.out_csv}: {len(rows)} objects, types {sorted({t for _, t in rows})}")


if __name__ == "__main__":
    main()
