"""Small long-format survey tables for the light-curve tests: arbitrary class names, two bands, magnitudes, the
authors' split layout; the `astrom3 ingest lightcurves` arguments that read them; a store ingested from them; and
checks that a refused ingest left nothing behind."""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import numpy as np

from astrom3_hpc.cli import main
from astrom3_hpc.data.store import Store

# Arbitrary class names, as another survey spells them (the examples).
CLASSES = {"M_or_SR": (40.0, 0.8), "HADS_or_DSCT": (0.07, 0.15), "RRab-like": (0.55, 0.6)}


def write_tables(d: Path, n_per_class: int = 14, seed: int = 0, drop_points_of: str | None = None,
                  bad_time_of: str | None = None, extra_object: tuple[str, str] | None = None,
                  id_of=lambda k: f"OGLE-{k:05d}", unlabelled_per_class: int = 0) -> dict:
    """A long points table (gzip CSV, two bands, magnitudes) and an objects table; returns id -> (class, period).
    `unlabelled_per_class` more objects of each class are written with an empty class."""
    rng = np.random.default_rng(seed)
    truth = {}
    d.mkdir(parents=True, exist_ok=True)
    with gzip.open(d / "points.csv.gz", "wt", newline="") as fp, open(d / "objects.csv", "w", newline="") as fo:
        wp, wo = csv.writer(fp), csv.writer(fo)
        wp.writerow(["star", "hjd", "band", "magnitude", "magnitude_err"])
        wo.writerow(["star", "cls", "P"])
        k = 0
        for cls, (period, amp) in CLASSES.items():
            for j in range(n_per_class + unlabelled_per_class):
                oid = id_of(k)
                p = period * rng.uniform(0.9, 1.1)
                truth[oid] = (cls, p)
                wo.writerow([oid, cls if j < n_per_class else "", f"{p:.6f}"])
                k += 1
                if oid == drop_points_of:
                    continue
                t = np.sort(rng.uniform(0, 600, 150)) + 57000
                ph = 2 * np.pi * (t / p + rng.uniform())
                shape = np.sin(ph) + (0.4 * np.sin(2 * ph) if cls == "RRab-like" else 0)
                for band in ("V", "I"):
                    mag = 15 + amp * shape + rng.normal(0, 0.02, len(t))
                    for i, (ti, mi) in enumerate(zip(t, mag)):
                        tcell = "yesterday" if (oid == bad_time_of and i == 7) else f"{ti:.6f}"
                        wp.writerow([oid, tcell, band, f"{mi:.4f}", "0.02"])
        if extra_object:
            wo.writerow([extra_object[0], extra_object[1], ""])
    return truth


def write_splits(d: Path, truth: dict, unknown: str | None = None) -> Path:
    ids = sorted(truth)
    rng = np.random.default_rng(1)
    perm = [ids[i] for i in rng.permutation(len(ids))]
    parts = {"train": perm[:28], "val": perm[28:35], "test": perm[35:]}
    if unknown:
        parts["test"] = parts["test"] + [unknown]
    for split, members in parts.items():
        p = d / "splits" / "full" / "42" / f"{split}.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("id,target\n" + "".join(f"{m},{truth.get(m, ('?',))[0]}\n" for m in members))
    return d


def ingest_args(d: Path, out: Path, *extra: str) -> list[str]:
    return ["ingest", "lightcurves", "--points", str(d / "points.csv.gz"), "--objects", str(d / "objects.csv"),
            "--id-column", "star", "--time-column", "hjd", "--mag-column", "magnitude", "--err-column",
            "magnitude_err", "--band-column", "band", "--band", "V", "--label-column", "cls", "--out", str(out),
            "--no-progress", "--chunk-objects", "8", "--table-chunk", "16", "--lc-chunk", "2048", *extra]


def lc_store(d: Path, seed: int = 0, n_per_class: int = 14) -> Path:
    """The tables written under `d` and ingested with their split files: a store of three arbitrary classes."""
    truth = write_tables(d, n_per_class=n_per_class, seed=seed)
    write_splits(d, truth)
    out = d / "lc.zarr"
    assert main(ingest_args(d, out, "--splits-from", str(d))) == 0
    return out


def private_copy(store: Path, tmp_path: Path) -> tuple[Path, Store]:
    """A copy of a module's store for a test that writes its cache (the module's store stays without one)."""
    store_dir = tmp_path / "s.zarr"
    shutil.copytree(store, store_dir)
    return store_dir, Store(store_dir)


def no_leftovers(d: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in d.iterdir() if p.name.startswith(f".{out.name}.tmp-")]


def fails_then_skips(args: list[str], d: Path, out: Path, capsys) -> str:
    """Ingest `args` fails (exit 2, nothing written) and then, with --on-error skip, succeeds; the failure's stderr."""
    assert main(args) == 2
    err = capsys.readouterr().err
    no_leftovers(d, out)
    assert main([*args, "--on-error", "skip"]) == 0
    return err
