"""`astrom3 ingest SOURCE`: one subcommand per source, each with its own options (so `--help` lists only what
that source reads, and another source's option is an error naming the sources that take it), and the options
every source shares (output, bad input, store layout)."""

from __future__ import annotations

import argparse
import sys

from ..core.argtypes import non_negative_int
from ..data import periods
from .runner import print_json

SOURCES = {
    "synthetic": "the embedded generator (the default dataset; no files needed)",
    "astrom3-raw": "the published AstroM3 raw layout: split CSVs, light-curve zip or directory, LAMOST FITS",
    "ztf-vsx": "ZTF DR3 light curves of VSX variables (light curves only)",
    "stripe82": "Stripe 82 RR Lyrae light curves (light curves only)",
    "lamost": "LAMOST spectra (spectra only)",
    "lightcurves": "any survey's long tables (CSV, TSV or Parquet): --points, --objects (docs/lightcurves.md)",
}
WITH_META = ("synthetic", "astrom3-raw")  # the sources that carry metadata (--meta-nan)
WITH_SPECTRA = ("synthetic", "astrom3-raw", "lamost")  # and spectra (--error-channel)


class _SourceParser(argparse.ArgumentParser):
    """The parser of one source. argparse would call an option of another source merely unrecognized (or first
    complain of a missing one); this says whose it is. `options_of` (option string -> the sources taking it) is
    shared by the sources' parsers and filled as they are built."""
    options_of: dict[str, list[str]]
    source: str

    def parse_known_args(self, args=None, namespace=None):
        # Before parsing: a missing required option would otherwise be reported first, and the user who gave
        # `--root` to `ingest lightcurves` would learn only that --points is required.
        for a in args if args is not None else sys.argv[1:]:
            option = a.split("=", 1)[0]
            if option in self.options_of and option not in self._option_string_actions:
                self.error(f"{option} is an option of `ingest {' / '.join(self.options_of[option])}`, "
                           f"not of `ingest {self.source}`")
        return super().parse_known_args(args, namespace)


def add_parser(sub) -> None:
    p = sub.add_parser("ingest", help="build a trimodal Zarr store (synthetic or real survey files)",
                       description="Preprocess raw objects once and write a versioned Zarr v3 store with splits "
                                   "and z-score statistics for every split seed. Runs in parallel under "
                                   "`mpiexec -n N astrom3 ingest SOURCE ...`. The store appears only when "
                                   "complete. `astrom3 ingest SOURCE --help` lists a source's options.")
    sources = p.add_subparsers(dest="source", metavar="SOURCE", required=True, parser_class=_SourceParser)
    options_of: dict[str, list[str]] = {}
    for name, summary in SOURCES.items():
        s = sources.add_parser(name, help=summary, description=f"ingest {name}: {summary}.")
        s.source = name
        s.options_of = options_of
        _SOURCE_ARGS[name](s)  # first: `--help` leads with what is particular to the source
        _add_common(s, name)
        for opt in s._option_string_actions:
            options_of.setdefault(opt, []).append(name)
        s.set_defaults(func=cmd_ingest)


def _add_common(p: argparse.ArgumentParser, source: str) -> None:
    """The options every source takes, plus --meta-nan and --error-channel for the sources with metadata and
    spectra (the others read as if given their defaults)."""
    c = p.add_argument_group("output, splits, bad input")
    c.add_argument("--out", required=True, help="store path to create (e.g. data/synthetic.zarr)")
    c.add_argument("--splits-from", metavar="DIR",
                   help="split files DIR/{subset}/{seed}/{train,val,test}.csv (or DIR/splits/...) to keep "
                        "(astrom3-raw: ROOT/splits by default); absent (subset, seed) pairs are generated "
                        "(lightcurves: ids as in --id-column; only the given seeds are stored)")
    c.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                   help="fail at the first bad object, or skip it and list it in skipped.json")
    c.add_argument("--overwrite", action="store_true", help="replace an existing store")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(meta_nan="fail", error_channel="ivar")
    if source in WITH_META:
        c.add_argument("--meta-nan", choices=["fail", "skip", "impute"], default="fail",
                       help="NaN metadata: fail (default, names object and column), skip the object, or impute "
                            "the split seed's train median (a presence mask is stored; see docs/store.md)")
    if source in WITH_SPECTRA:
        c.add_argument("--error-channel", choices=["ivar", "sigma"], default="ivar",
                       help="spectrum error channel: ivar (default; what the reference feeds, the inverse "
                            "variance) or sigma (the corrected channel, 1/sqrt(ivar)); recorded in the store "
                            "(astrom3 info)")
    g = p.add_argument_group("store layout (see docs/store.md)")
    g.add_argument("--chunk-objects", type=int, default=64, help="objects per spectra chunk (default 64, ~2 MB)")
    g.add_argument("--table-chunk", type=int, default=8192, help="objects per chunk of the small tables")
    g.add_argument("--lc-chunk", type=int, default=32768, help="light-curve points per chunk")
    g.add_argument("--shard-chunks", type=non_negative_int, default=0,
                   help="spectra chunks per shard file (0: no sharding)")
    # store.COMPRESSIONS and Layout's default, spelled out so `--help` need not import zarr (a test ties them).
    g.add_argument("--compression", choices=["none", "lz4hc", "lz4"], default="none",
                   help="spectra and light-curve points: none (default: the loader copies rows straight from "
                        "the page cache, one copy per node), lz4hc (half the disk, ~2.5x slower to load, "
                        "ingestion ~1.5x slower) or lz4 (like lz4hc, but ingests as fast as none and loads "
                        "~1.25x slower than lz4hc)")


def _synthetic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--n-objects", type=int, default=21440, help="number of objects (default 21440)")
    p.add_argument("--seed", type=int, default=0, help="generator seed")
    p.add_argument("--unseen-fraction", type=float, default=0.0,
                   help="fraction of objects from classes absent in training (label -1)")
    p.add_argument("--mislabel-fraction", type=float, default=0.0, help="fraction of wrong labels")
    p.add_argument("--missing-rate", type=float, default=0.0,
                   help="fraction of objects given one NaN metadata value, to exercise --meta-nan (default 0 "
                        "here; the Python generator's default is 0.003)")


def _root_arg(holds: str):
    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("--root", required=True, metavar="DIR", help=f"input directory, holding {holds}")
    return add


def _astrom3_raw_args(p: argparse.ArgumentParser) -> None:
    _root_arg("splits/, the light curves and spectra/ (or the paths below)")(p)
    g = p.add_argument_group("the authors' research layout (paths relative to --root)")
    g.add_argument("--catalogue", action="append", default=[], metavar="SPLIT=CSV",
                   help="catalogue CSV per split, e.g. train=preprocessed_data/full_lb/spectra_and_v_train.csv "
                        "(repeatable; default splits/full/42/{train,val,test}.csv)")
    g.add_argument("--photometry", metavar="PATH", help="light-curve zip or directory (default: the first of "
                   "photometry.zip, photometry/, asassnvarlc_vband_complete.zip, vardb_files/)")
    g.add_argument("--spectra-dir", metavar="DIR", help="LAMOST FITS directory, flat or {split}/{class}/ "
                                                        "(default ROOT/spectra)")


def _lightcurve_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("long tables: UTF-8 text separated by commas, tabs or semicolons (optionally .gz), "
                             "or Parquet (pip install 'astrom3-hpc[parquet]'; see docs/lightcurves.md)")
    g.add_argument("--points", required=True, help="points table (.csv, .tsv, .gz or .parquet): one row per epoch")
    g.add_argument("--objects", required=True,
                   help="objects table (.csv, .tsv, .gz or .parquet): one row per object, with its class")
    g.add_argument("--id-column", default="id", help="object id column, in both tables and the split files "
                                                     "(default id)")
    g.add_argument("--time-column", default="time", help="time in days, e.g. MJD (default time)")
    g.add_argument("--mag-column", help="magnitudes (converted to flux: 3631e3 * 10**(-0.4 mag) mJy)")
    g.add_argument("--flux-column", help="fluxes, any linear unit (instead of --mag-column)")
    g.add_argument("--err-column", default="err", help="magnitude or flux error column (default err)")
    g.add_argument("--band-column", help="band column in the points table")
    g.add_argument("--band", help="the band to keep (required when the band column has several); several, "
                                  "comma-separated (--band r,g), are merged into one curve per object, each band "
                                  "shifted to the first one's median")
    g.add_argument("--label-column", default="label", help="class column in the objects table; any names")
    g.add_argument("--class-map", help="JSON {label: class} or CSV label,class (with that header line); an "
                                       "empty class leaves the object out")
    g.add_argument("--drop-unlabelled", action="store_true",
                   help="leave out objects with no class (default: error naming them)")
    g.add_argument("--keep-unlabelled", action="store_true",
                   help="keep objects with no class (label -1, in no split): every fine-tune and baseline run "
                        "classifies them into predictions_unlabelled.csv")
    g.add_argument("--period-column", help="catalogue period (days) in the objects table; default (and empty "
                                           "cells): the Lomb-Scargle period")
    g.add_argument("--split-column", help="train/val/test column in the objects table (stored as seed 42); "
                                          "or --splits-from DIR (only the seeds given there are stored; "
                                          "--on-error skip ignores ids that are not in the objects file)")
    g.add_argument("--min-period", type=float, default=periods.MIN_PERIOD_DAYS, metavar="DAYS",
                   help=f"shortest Lomb-Scargle period searched (default {periods.MIN_PERIOD_DAYS}); the search "
                        "time grows as 1/DAYS. Delta Scuti stars reach 0.02 d")
    g.add_argument("--period-backend", choices=["auto", "nifty", "astropy"], default="auto",
                   help="Lomb-Scargle implementation (auto: nifty-ls when installed)")


_SOURCE_ARGS = {
    "synthetic": _synthetic_args, "astrom3-raw": _astrom3_raw_args, "lightcurves": _lightcurve_args,
    "ztf-vsx": _root_arg("ztf_vsx_objects.csv and ztf_vsx_lightcurves_long.csv.gz"),
    "stripe82": _root_arg("sesar2010_rrlyrae_lightcurves.csv.gz and periods.csv (the classes)"),
    "lamost": _root_arg("the FITS spectra (or fits/ and lamost_dr1_sample_index.csv)")}


def make_source(args):
    # Imported here: the readers pull in zarr and scipy, which `astrom3 --help` should not wait for.
    if args.source == "synthetic":
        from ..data.synthetic import SyntheticSource

        return SyntheticSource(args.n_objects, seed=args.seed, unseen_fraction=args.unseen_fraction,
                               mislabel_fraction=args.mislabel_fraction, missing_rate=args.missing_rate)
    if args.source == "lightcurves":
        return _lightcurve_source(args)
    from ..data import sources as readers

    if args.source == "astrom3-raw":
        files = dict(c.split("=", 1) for c in args.catalogue if "=" in c)
        if len(files) != len(args.catalogue):
            raise ValueError("--catalogue takes SPLIT=CSV, e.g. train=spectra_and_v_train.csv")
        return readers.AstroM3RawSource(args.root, files or None, photometry=args.photometry,
                                        spectra_dir=args.spectra_dir)
    if args.source == "ztf-vsx":
        return readers.ZTFVSXSource(args.root)
    if args.source == "stripe82":
        return readers.Stripe82RRLyraeSource(args.root)
    return readers.LamostSampleSource(args.root)


def _lightcurve_source(args):
    from ..data.sources.lightcurves import LightCurveTableSource, TableOptions

    return LightCurveTableSource(TableOptions(
        points=args.points, objects=args.objects, id_column=args.id_column, time_column=args.time_column,
        mag_column=args.mag_column, flux_column=args.flux_column, err_column=args.err_column,
        band_column=args.band_column, band=args.band, label_column=args.label_column, class_map=args.class_map,
        drop_unlabelled=args.drop_unlabelled,
        keep_unlabelled=args.keep_unlabelled, period_column=args.period_column, splits_from=args.splits_from,
        split_column=args.split_column, skip_bad_split_ids=args.on_error == "skip",
        period_backend=args.period_backend, min_period=args.min_period))


def cmd_ingest(args) -> int:
    from ..data.ingest import IngestOptions, ingest

    source = make_source(args)
    # lightcurves reads --splits-from itself (ids as in its objects file) and keeps only the seeds given there.
    splits_from = None if args.source == "lightcurves" else args.splits_from
    opts = IngestOptions(on_error=args.on_error, error_channel=args.error_channel, overwrite=args.overwrite,
                         meta_nan=args.meta_nan, splits_from=splits_from,
                         progress=not args.no_progress,
                         layout_kw=dict(chunk_objects=args.chunk_objects, table_chunk=args.table_chunk,
                                        lc_chunk=args.lc_chunk, shard_chunks=args.shard_chunks,
                                        compression=args.compression))
    summary = ingest(source, args.out, opts)
    if summary and _is_rank0():
        print_json(summary)
    return 0


def _is_rank0() -> bool:
    import os

    for k in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "RANK"):
        if k in os.environ:
            return os.environ[k] == "0"
    return True
