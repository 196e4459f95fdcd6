"""`astrom3 ingest lightcurves` options and their translation into the source (astrom3_hpc/data/sources/
lightcurves.py). The split directory is ingest's common `--splits-from`, read here with the objects' id column."""

from __future__ import annotations

import argparse

from ..data import periods


def add_arguments(p: argparse.ArgumentParser) -> list[argparse.Action]:
    """Registered on the ingest parser; returns the options, which only `ingest lightcurves` takes."""
    g = p.add_argument_group("lightcurves: long tables of any survey, UTF-8 text separated by commas, tabs or "
                                  "semicolons (optionally .gz), or Parquet (pip install 'astrom3-hpc[parquet]'; "
                                  "see docs/lightcurves.md)")
    actions: list[argparse.Action] = []

    def add(*names: str, **kw) -> None:
        actions.append(g.add_argument(*names, **kw))

    add("--points", help="points table (.csv, .tsv, .gz or .parquet): one row per epoch")
    add("--objects", help="objects table (.csv, .tsv, .gz or .parquet): one row per object, "
                          "with its class")
    add("--id-column", default="id", help="object id column, in both tables and the split files "
                                          "(default id)")
    add("--time-column", default="time", help="time in days, e.g. MJD (default time)")
    add("--mag-column", help="magnitudes (converted to flux: 3631e3 * 10**(-0.4 mag) mJy)")
    add("--flux-column", help="fluxes, any linear unit (instead of --mag-column)")
    add("--err-column", default="err", help="magnitude or flux error column (default err)")
    add("--band-column", help="band column in the points table")
    add("--band", help="the band to keep (required when the band column has several); several, "
                       "comma-separated (--band r,g), are merged into one curve per object, each band "
                       "shifted to the first one's median")
    add("--label-column", default="label", help="class column in the objects table; any names")
    add("--class-map", help="JSON {label: class} or CSV label,class; an empty class leaves the "
                            "object out")
    add("--drop-unlabelled", action="store_true",
        help="leave out objects with no class (default: error naming them)")
    add("--keep-unlabelled", action="store_true",
        help="keep objects with no class (label -1, in no split): every fine-tune and baseline run "
             "classifies them into predictions_unlabelled.csv")
    add("--period-column", help="catalogue period (days) in the objects table; default (and empty "
                                "cells): the Lomb-Scargle period")
    add("--split-column", help="train/val/test column in the objects table (stored as seed 42); "
                               "or --splits-from DIR (only the seeds given there are stored; "
                               "--on-error skip ignores ids that are not in the objects file)")
    add("--min-period", type=float, default=periods.MIN_PERIOD_DAYS, metavar="DAYS",
        help=f"shortest Lomb-Scargle period searched (default {periods.MIN_PERIOD_DAYS}); the search "
             "time grows as 1/DAYS. Delta Scuti stars reach 0.02 d")
    add("--period-backend", choices=["auto", "nifty", "astropy"], default="auto",
        help="Lomb-Scargle implementation (auto: nifty-ls when installed)")
    return actions


def source_from_args(args: argparse.Namespace):
    # Imported here: the readers pull in zarr and scipy, which `astrom3 --help` should not wait for.
    from ..data.sources.lightcurves import LightCurveTableSource, TableError, TableOptions

    if not args.points or not args.objects:
        raise TableError("astrom3 ingest lightcurves needs --points and --objects")
    return LightCurveTableSource(TableOptions(
        points=args.points, objects=args.objects, id_column=args.id_column, time_column=args.time_column,
        mag_column=args.mag_column, flux_column=args.flux_column, err_column=args.err_column,
        band_column=args.band_column, band=args.band, label_column=args.label_column, class_map=args.class_map,
        drop_unlabelled=args.drop_unlabelled,
        keep_unlabelled=args.keep_unlabelled, period_column=args.period_column, splits_from=args.splits_from,
        split_column=args.split_column, skip_bad_split_ids=args.on_error == "skip",
        period_backend=args.period_backend, min_period=args.min_period))
