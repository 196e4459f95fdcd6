"""Write tiny raw-input fixtures in the exact survey formats (for reader, ingest and end-to-end tests).

Plain functions, no pytest dependency; every writer takes a target path/dir and returns what it wrote:

- `make_asassn_rows` / `write_asassn_dat`: ASAS-SN V-band ``.dat`` (2 header rows, HJD MAG MAG_ERR FLUX FLUX_ERR).
- `make_lamost_spectrum` / `write_lamost_fits_image` (old single-HDU (5, N) float32 layout) /
  `write_lamost_fits_table` (DR5+ binary table in HDU 1, one row of arrays or one row per pixel).
  A ``.gz`` suffix writes gzip-compressed FITS, as the published ``spec-*.fits.gz`` files are.
- `write_astrom3_raw_layout(root, n_objects, seed)`: the AstroM3 raw layout read by
  `astrom3_hpc.data.sources.AstroM3RawSource` (split CSVs with the authors' 42 columns, ``photometry.zip`` or a
  ``photometry/`` directory of ``vardb_files/<name>.dat``, ``spectra/{split}/{class}/{spec_filename}``) and returns
  a dict with every object's expected values (what a correct reader returns).
- Corrupt variants: `write_truncated_copy`, `write_garbage`, `write_empty_dat`, `rewrite_zip`,
  `corrupt_light_curve`, `corrupt_spectrum`, `drop_csv_column`.
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from astrom3_hpc.core.constants import AUX_COLUMNS, CLASS_NAMES, META_COLUMNS

# Column order of the authors' spectra_and_v_{split}.csv (MeriDK/AstroM3 dev/notebooks/027-add-lb-cols.ipynb).
ASTROM3_CSV_COLUMNS: tuple[str, ...] = (
    "mean_vmag", "amplitude", "period", "phot_g_mean_mag", "e_phot_g_mean_mag", "lksl_statistic", "rfr_score",
    "phot_bp_mean_mag", "e_phot_bp_mean_mag", "phot_rp_mean_mag", "e_phot_rp_mean_mag", "bp_rp", "parallax",
    "parallax_error", "parallax_over_error", "pmra", "pmra_error", "pmdec", "pmdec_error", "j_mag", "e_j_mag",
    "h_mag", "e_h_mag", "k_mag", "e_k_mag", "w1_mag", "e_w1_mag", "w2_mag", "e_w2_mag", "w3_mag", "w4_mag", "j_k",
    "w1_w2", "w3_w4", "pm", "ruwe", "id", "target", "name", "spec_filename", "l", "b",
)
assert set(META_COLUMNS) | set(AUX_COLUMNS) <= set(ASTROM3_CSV_COLUMNS)

ZP_MJY = 3631e3
LAMOST_COEFF0 = 3.5682  # log10(3700 A)
LAMOST_COEFF1 = 1e-4

# Rough period ranges (days) and V amplitudes (mag) per class, only for plausible-looking fixtures.
_PERIODS = {"EW": (0.25, 0.6), "SR": (30.0, 300.0), "EA": (0.8, 6.0), "RRAB": (0.45, 0.75), "EB": (0.4, 2.0),
            "ROT": (1.0, 30.0), "RRC": (0.22, 0.42), "HADS": (0.05, 0.2), "M": (150.0, 500.0), "DSCT": (0.03, 0.15)}
_AMPS = {"EW": (0.2, 0.8), "SR": (0.2, 1.5), "EA": (0.2, 1.5), "RRAB": (0.5, 1.2), "EB": (0.2, 0.8),
         "ROT": (0.05, 0.3), "RRC": (0.2, 0.5), "HADS": (0.3, 0.8), "M": (2.0, 6.0), "DSCT": (0.02, 0.2)}


def _fmt(x: float) -> str:
    return "" if not np.isfinite(x) else repr(float(x))


# ----------------------------------------------------------------------------------------------------------------
# ASAS-SN .dat
# ----------------------------------------------------------------------------------------------------------------

def make_asassn_rows(rng: np.random.Generator, n: int = 150, period: float = 0.4, mean_mag: float = 13.5,
                     amplitude: float = 0.5, t0: float = 2457000.0, span_days: float = 1500.0) -> np.ndarray:
    """(n, 5) [HJD, MAG, MAG_ERR, FLUX, FLUX_ERR] rounded to the written precision (exact after a text round trip).

    Epochs come in yearly seasons (about 60 % duty cycle) over `span_days`; flux in mJy from `ZP_MJY`.
    """
    t = np.sort(t0 + rng.uniform(0, span_days, size=4 * n))
    t = t[((t - t0) % 365.25) < 220][:n]
    while t.size < n:  # very short spans: top up
        t = np.sort(np.r_[t, t0 + rng.uniform(0, 200, size=n - t.size)])
    phase = ((t - t0) / period) % 1.0
    shape = 0.5 * amplitude * (np.cos(2 * np.pi * phase) + 0.3 * np.cos(4 * np.pi * phase))
    mag_err = rng.uniform(0.01, 0.05, size=n)
    mag = mean_mag + shape + rng.normal(0, 1, size=n) * mag_err
    flux = ZP_MJY * 10 ** (-0.4 * mag)
    flux_err = flux * mag_err * math.log(10) / 2.5
    rows = np.stack([t, mag, mag_err, flux, flux_err], axis=1)
    return _round_as_written(rows)


_DAT_FMT = ("{:.5f}", "{:.3f}", "{:.3f}", "{:.5f}", "{:.5f}")


def _round_as_written(rows: np.ndarray) -> np.ndarray:
    out = np.empty_like(rows, dtype=np.float64)
    for j, f in enumerate(_DAT_FMT):
        out[:, j] = [float(f.format(v)) for v in rows[:, j]]
    return out


def asassn_dat_text(rows: np.ndarray, name: str = "ASASSN-V J000000.00+000000.0") -> str:
    """The text of an ASAS-SN .dat file: 2 header rows, then whitespace-separated columns."""
    lines = [f"# ASAS-SN Variable Stars Database V-band light curve of {name}",
             "#      HJD         MAG   MAG_ERR       FLUX   FLUX_ERR"]
    for r in rows:
        lines.append("  ".join(f.format(v) for f, v in zip(_DAT_FMT, r)))
    return "\n".join(lines) + "\n"


def write_asassn_dat(path: str | Path, rows: np.ndarray, name: str = "ASASSN-V J000000.00+000000.0") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(asassn_dat_text(rows, name))
    return path


def write_empty_dat(path: str | Path) -> Path:
    """A .dat with its 2 header rows and no data: readers must call it an empty light curve."""
    return write_asassn_dat(path, np.zeros((0, 5)))


# ----------------------------------------------------------------------------------------------------------------
# LAMOST FITS
# ----------------------------------------------------------------------------------------------------------------

def make_lamost_spectrum(rng: np.random.Generator, n_pix: int = 3909, coeff0: float = LAMOST_COEFF0,
                         coeff1: float = LAMOST_COEFF1, teff: float = 6000.0, snr: float = 40.0,
                         mask_frac: float = 0.02) -> dict[str, Any]:
    """A plausible LRS spectrum: float32 flux/ivar/normalised flux/masks; ivar = 0 on masked pixels."""
    wave = 10.0 ** (coeff0 + np.arange(n_pix) * coeff1)
    lam_m = wave * 1e-10
    bb = 1.0 / (lam_m ** 5 * (np.exp(1.4388e-2 / (lam_m * teff)) - 1.0))
    cont = 1000.0 * bb / bb.max()
    lines = np.ones(n_pix)
    for c, depth, width in ((4861.3, 0.4, 8.0), (6562.8, 0.5, 10.0), (5175.0, 0.15, 15.0), (3933.7, 0.5, 6.0),
                            (8542.0, 0.3, 5.0)):
        lines -= depth * np.exp(-0.5 * ((wave - c) / width) ** 2)
    model = cont * lines
    sigma = np.maximum(model / snr, 1e-3)
    flux = model + rng.normal(0, 1, size=n_pix) * sigma
    ivar = 1.0 / sigma ** 2
    mask = rng.uniform(size=n_pix) < mask_frac
    mask[:5] = True
    ivar[mask] = 0.0
    andmask = np.where(mask, 1 << 23, 0)
    ormask = andmask.copy()
    norm = flux / np.where(cont > 0, cont, 1.0)
    return {
        "coeff0": coeff0, "coeff1": coeff1, "n_pix": n_pix,
        "flux": flux.astype(np.float32), "ivar": ivar.astype(np.float32), "norm": norm.astype(np.float32),
        "andmask": andmask.astype(np.float32), "ormask": ormask.astype(np.float32),
        "wave": wave,  # float64, exactly what the image-layout reader computes
    }


def _lamost_header(spec: Mapping[str, Any], header: Mapping[str, Any] | None):
    from astropy.io import fits

    h = fits.Header()
    h["COEFF0"] = (float(spec["coeff0"]), "Central wavelength (log10) of first pixel")
    h["COEFF1"] = (float(spec["coeff1"]), "Log10 dispersion per pixel")
    h["CRVAL1"] = float(spec["coeff0"])
    h["CD1_1"] = float(spec["coeff1"])
    h["CLASS"] = "STAR"
    for k, v in (header or {}).items():
        h[k] = v
    return h


def write_lamost_fits_image(path: str | Path, spec: Mapping[str, Any], header: Mapping[str, Any] | None = None) -> Path:
    """Old layout: primary HDU (5, N) float32 [flux, ivar, normalised flux, andmask, ormask]."""
    from astropy.io import fits

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack([spec["flux"], spec["ivar"], spec["norm"], spec["andmask"], spec["ormask"]]).astype(np.float32)
    fits.PrimaryHDU(data=data, header=_lamost_header(spec, header)).writeto(path, overwrite=True)
    return path


def write_lamost_fits_table(path: str | Path, spec: Mapping[str, Any], per_pixel: bool = False,
                            header: Mapping[str, Any] | None = None) -> Path:
    """DR5+ layout: empty primary HDU + HDU 1 binary table FLUX, IVAR, WAVELENGTH, ANDMASK, ORMASK, NORMALIZATION
    (float32 like the survey's), one row holding arrays (default) or one row per pixel."""
    from astropy.io import fits

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(spec["n_pix"])
    arrays = {"FLUX": spec["flux"], "IVAR": spec["ivar"], "WAVELENGTH": np.asarray(spec["wave"], np.float32),
              "ANDMASK": spec["andmask"], "ORMASK": spec["ormask"], "NORMALIZATION": spec["norm"]}
    if per_pixel:
        cols = [fits.Column(name=k, format="E", array=np.asarray(v, np.float32)) for k, v in arrays.items()]
    else:
        cols = [fits.Column(name=k, format=f"{n}E", array=np.asarray(v, np.float32).reshape(1, n))
                for k, v in arrays.items()]
    table = fits.BinTableHDU.from_columns(cols, name="COADD")
    fits.HDUList([fits.PrimaryHDU(header=_lamost_header(spec, header)), table]).writeto(path, overwrite=True)
    return path


def expected_spectrum(spec: Mapping[str, Any], layout: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(wave, flux, ivar) float64 a correct reader returns for `spec` written in `layout` ("image"/"table")."""
    wave = np.asarray(spec["wave"], np.float64)
    if layout != "image":
        wave = wave.astype(np.float32).astype(np.float64)
    return wave, spec["flux"].astype(np.float64), spec["ivar"].astype(np.float64)


# ----------------------------------------------------------------------------------------------------------------
# The AstroM3 raw layout
# ----------------------------------------------------------------------------------------------------------------

def _asassn_name(ra: float, dec: float) -> str:
    h = ra / 15.0
    hh, mm = int(h), int((h % 1) * 60)
    ss = ((h * 60) % 1) * 60
    sign = "+" if dec >= 0 else "-"
    d = abs(dec)
    dd, dm = int(d), int((d % 1) * 60)
    ds = ((d * 60) % 1) * 60
    return f"ASASSN-V J{hh:02d}{mm:02d}{ss:05.2f}{sign}{dd:02d}{dm:02d}{ds:04.1f}"


def _metadata(rng: np.random.Generator, vmag: float) -> dict[str, float]:
    g = vmag - rng.uniform(0.0, 0.3)
    bp_rp = rng.uniform(0.3, 2.5)
    parallax = rng.uniform(0.2, 5.0)
    plx_err = rng.uniform(0.01, 0.1)
    pmra, pmdec = rng.normal(0, 10), rng.normal(0, 10)
    j = g - rng.uniform(0.8, 2.0)
    h = j - rng.uniform(0.1, 0.5)
    k = h - rng.uniform(0.0, 0.2)
    w1 = k - rng.uniform(-0.05, 0.2)
    w2 = w1 - rng.uniform(-0.1, 0.1)
    w3 = w2 - rng.uniform(0.0, 0.5)
    w4 = w3 - rng.uniform(0.0, 0.8)
    m = {
        "mean_vmag": vmag, "phot_g_mean_mag": g, "e_phot_g_mean_mag": rng.uniform(0.002, 0.02),
        "phot_bp_mean_mag": g + 0.4 * bp_rp, "e_phot_bp_mean_mag": rng.uniform(0.005, 0.05),
        "phot_rp_mean_mag": g - 0.6 * bp_rp, "e_phot_rp_mean_mag": rng.uniform(0.005, 0.05), "bp_rp": bp_rp,
        "parallax": parallax, "parallax_error": plx_err, "parallax_over_error": parallax / plx_err,
        "pmra": pmra, "pmra_error": rng.uniform(0.01, 0.1), "pmdec": pmdec, "pmdec_error": rng.uniform(0.01, 0.1),
        "j_mag": j, "e_j_mag": rng.uniform(0.02, 0.05), "h_mag": h, "e_h_mag": rng.uniform(0.02, 0.05),
        "k_mag": k, "e_k_mag": rng.uniform(0.02, 0.05), "w1_mag": w1, "e_w1_mag": rng.uniform(0.02, 0.05),
        "w2_mag": w2, "e_w2_mag": rng.uniform(0.02, 0.05), "w3_mag": w3, "w4_mag": w4,
        "j_k": j - k, "w1_w2": w1 - w2, "w3_w4": w3 - w4, "pm": math.hypot(pmra, pmdec),
        "ruwe": rng.uniform(0.8, 1.6), "l": rng.uniform(0, 360), "b": rng.uniform(-80, 80),
    }
    return {k: float(np.round(v, 6)) for k, v in m.items()}


def _split_assignment(rng: np.random.Generator, n: int) -> list[str]:
    n_val = max(1, int(round(0.1 * n))) if n >= 3 else 0
    n_test = max(1, int(round(0.1 * n))) if n >= 3 else 0
    order = rng.permutation(n)
    splits = ["train"] * n
    for k in order[:n_val]:
        splits[k] = "val"
    for k in order[n_val:n_val + n_test]:
        splits[k] = "test"
    return splits


def write_astrom3_raw_layout(root: str | Path, n_objects: int = 20, seed: int = 0, *, lc_container: str = "zip",
                             spectra_layout: str = "mixed", subset: str = "full", split_seed: int = 42,
                             lc_points: tuple[int, int] = (60, 240), with_nan_meta: bool = True) -> dict[str, Any]:
    """Write the AstroM3 raw layout under `root` (see data/sources/astrom3_raw.py for the layout) and describe it.

    Classes cycle through constants.CLASS_NAMES (n_objects=20 -> 2 objects per class). `lc_container`: "zip"
    (``photometry.zip`` with ``vardb_files/<name>.dat`` members) or "dir" (``photometry/vardb_files/``).
    `spectra_layout`: "image", "table" (DR5+ single-row table) or "mixed" (alternating image .fits.gz / table
    .fits / per-pixel table .fits). With `with_nan_meta` the first object has empty w4_mag and e_w2_mag cells.

    Returns a dict: root, subset, seed, split_files {split: Path}, photometry (Path), lc_container, spectra_dir,
    columns (CSV header), objects (list, CSV order within split files in train/val/test order), each object a dict:
    object_id (int), id (CSV string), name, target, label, split, lc ((n, 3) HJD, FLUX, FLUX_ERR as a reader
    returns them), lc_rows ((n, 5) as written), lc_member (relative path in the container), spec_path, spec_layout,
    wave / flux / ivar (float64 as a reader returns them), meta (34,) and aux (4,) float64 in constants order.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = set()
    objects: list[dict[str, Any]] = []
    splits = _split_assignment(rng, n_objects)
    for i in range(n_objects):
        target = CLASS_NAMES[i % len(CLASS_NAMES)]
        while True:
            oid = int(rng.integers(10 ** 15, 6 * 10 ** 18))
            if oid not in ids:
                ids.add(oid)
                break
        ra, dec = rng.uniform(0, 360), rng.uniform(-30, 70)
        name = _asassn_name(ra, dec)
        period = float(np.round(rng.uniform(*_PERIODS[target]), 6))
        amp = float(np.round(rng.uniform(*_AMPS[target]), 2))
        vmag = float(np.round(rng.uniform(10.0, 16.0), 2))
        n_pts = int(rng.integers(*lc_points))
        rows = make_asassn_rows(rng, n=n_pts, period=period, mean_mag=vmag, amplitude=amp)
        meta = _metadata(rng, vmag)
        if with_nan_meta and i == 0:
            meta["w4_mag"] = math.nan
            meta["e_w2_mag"] = math.nan
        aux = {"amplitude": amp, "period": period, "lksl_statistic": float(np.round(rng.uniform(0, 1), 2)),
               "rfr_score": float(np.round(rng.uniform(0.4, 1.0), 2))}
        if spectra_layout == "mixed":
            layout = ("image", "table", "table_pixel")[i % 3]
        else:
            layout = spectra_layout
        ext = ".fits.gz" if layout == "image" else ".fits"
        spec_filename = (f"spec-{int(rng.integers(55800, 59300))}-HD{int(rng.integers(0, 240000)):06d}"
                         f"N{int(rng.integers(0, 900000)):06d}B01_sp{int(rng.integers(1, 17)):02d}-"
                         f"{int(rng.integers(1, 251)):03d}{ext}")
        objects.append({"object_id": oid, "id": f"EDR3 {oid}", "name": name, "target": target,
                        "label": CLASS_NAMES.index(target), "split": splits[i], "lc_rows": rows,
                        "lc": rows[:, [0, 3, 4]].copy(), "lc_member": f"vardb_files/{name.replace(' ', '')}.dat",
                        "meta_dict": meta, "aux_dict": aux, "spec_filename": spec_filename, "spec_layout": layout,
                        "teff": float(rng.uniform(3500, 9000)), "ra": ra, "dec": dec})

    # Light curves.
    if lc_container == "zip":
        photometry = root / "photometry.zip"
        with zipfile.ZipFile(photometry, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for o in objects:
                zf.writestr(o["lc_member"], asassn_dat_text(o["lc_rows"], o["name"]))
    elif lc_container == "dir":
        photometry = root / "photometry"
        for o in objects:
            write_asassn_dat(photometry / o["lc_member"], o["lc_rows"], o["name"])
    else:
        raise ValueError(f"lc_container must be 'zip' or 'dir', not {lc_container!r}")

    # Spectra.
    spectra_dir = root / "spectra"
    for o in objects:
        spec = make_lamost_spectrum(rng, teff=o["teff"], snr=float(rng.uniform(10, 80)))
        path = spectra_dir / o["split"] / o["target"] / o["spec_filename"]
        hdr = {"OBJNAME": str(o["object_id"] % 10 ** 15), "RA": o["ra"], "DEC": o["dec"]}
        if o["spec_layout"] == "image":
            write_lamost_fits_image(path, spec, hdr)
        else:
            write_lamost_fits_table(path, spec, per_pixel=o["spec_layout"] == "table_pixel", header=hdr)
        o["spec_path"] = path
        o["wave"], o["flux"], o["ivar"] = expected_spectrum(spec, "image" if o["spec_layout"] == "image" else "table")

    # Catalogues.
    split_dir = root / "splits" / subset / str(split_seed)
    split_dir.mkdir(parents=True, exist_ok=True)
    split_files = {}
    ordered: list[dict[str, Any]] = []
    for split in ("train", "val", "test"):
        path = split_dir / f"{split}.csv"
        split_files[split] = path
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(ASTROM3_CSV_COLUMNS)
            for o in objects:
                if o["split"] != split:
                    continue
                vals = {**o["meta_dict"], **o["aux_dict"], "id": o["id"], "target": o["target"], "name": o["name"],
                        "spec_filename": o["spec_filename"]}
                w.writerow([vals[c] if isinstance(vals[c], str) else _fmt(vals[c]) for c in ASTROM3_CSV_COLUMNS])
                ordered.append(o)
    for o in ordered:
        o["meta"] = np.array([o["meta_dict"][c] for c in META_COLUMNS], dtype=np.float64)
        o["aux"] = np.array([o["aux_dict"][c] for c in AUX_COLUMNS], dtype=np.float64)
    return {"root": root, "subset": subset, "seed": split_seed, "split_files": split_files,
            "photometry": photometry, "lc_container": lc_container, "spectra_dir": spectra_dir,
            "columns": ASTROM3_CSV_COLUMNS, "objects": ordered, "n_objects": len(ordered)}


# ----------------------------------------------------------------------------------------------------------------
# Corrupt variants
# ----------------------------------------------------------------------------------------------------------------

def write_truncated_copy(src: str | Path, dst: str | Path | None = None, keep_fraction: float = 0.5) -> Path:
    """Copy the first `keep_fraction` of `src` to `dst` (default: over `src`)."""
    data = Path(src).read_bytes()
    dst = Path(dst) if dst is not None else Path(src)
    dst.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    return dst


def write_garbage(path: str | Path, text: str = "this is not a FITS file\n") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((text * 20).encode())
    return path


def rewrite_zip(zip_path: str | Path, replace: Mapping[str, bytes | None]) -> Path:
    """Rewrite a zip with members replaced (bytes) or removed (None)."""
    zip_path = Path(zip_path)
    buf = io.BytesIO()
    with zipfile.ZipFile(zip_path, "r") as src, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename in replace:
                continue
            dst.writestr(info, src.read(info.filename))
        for name, data in replace.items():
            if data is not None:
                dst.writestr(name, data)
    zip_path.write_bytes(buf.getvalue())
    return zip_path


def corrupt_light_curve(layout: Mapping[str, Any], index: int, mode: str = "missing") -> dict[str, Any]:
    """Break object `index`'s light curve in a layout from `write_astrom3_raw_layout`.

    mode: "missing" (remove it), "empty" (header rows only), "garbage" (non-numeric rows). Returns the object.
    """
    o = layout["objects"][index]
    payload = {"missing": None, "empty": asassn_dat_text(np.zeros((0, 5)), o["name"]).encode(),
               "garbage": b"# header\n# header\nnot numbers at all\nx y z\n"}[mode]
    if layout["lc_container"] == "zip":
        rewrite_zip(layout["photometry"], {o["lc_member"]: payload})
    else:
        p = Path(layout["photometry"]) / o["lc_member"]
        if payload is None:
            p.unlink()
        else:
            p.write_bytes(payload)
    return o


def corrupt_spectrum(layout: Mapping[str, Any], index: int, mode: str = "garbage") -> dict[str, Any]:
    """Break object `index`'s spectrum: "garbage" (not FITS), "truncated" (first half), "missing"."""
    o = layout["objects"][index]
    p = Path(o["spec_path"])
    if mode == "garbage":
        write_garbage(p)
    elif mode == "truncated":
        write_truncated_copy(p)
    elif mode == "missing":
        p.unlink()
    else:
        raise ValueError(mode)
    return o


def drop_csv_column(csv_path: str | Path, column: str) -> Path:
    """Remove one column from a CSV (header and rows)."""
    csv_path = Path(csv_path)
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    k = rows[0].index(column)
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([r[:k] + r[k + 1:] for r in rows])
    return csv_path


def write_split_files(layout: Mapping[str, Any], subset: str, seed: int, ids: Mapping[str, Any],
                      root: str | Path | None = None) -> dict[str, Path]:
    """Write ``{root}/{subset}/{seed}/{split}.csv`` (root: the layout's ``splits/``) with the catalogue rows of the
    given object ids per split, in the authors' 42-column format; an id the layout lacks gets an otherwise empty row.
    Returns {split: path}."""
    rows: dict[int, list[str]] = {}
    for path in layout["split_files"].values():
        with open(path, newline="", encoding="utf-8") as fh:
            rd = csv.reader(fh)
            header = next(rd)
            i_id = header.index("id")
            for r in rd:
                rows[int(r[i_id].split()[-1])] = r
    d = Path(root if root is not None else Path(layout["root"]) / "splits") / subset / str(seed)
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, members in ids.items():
        out[split] = d / f"{split}.csv"
        with open(out[split], "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(ASTROM3_CSV_COLUMNS)
            for oid in members:
                oid = int(oid)
                w.writerow(rows.get(oid, [f"EDR3 {oid}" if c == "id" else "" for c in ASTROM3_CSV_COLUMNS]))
    return out


def assert_names(exc: Exception, object_id, *fragments: str) -> None:
    msg = str(exc)
    assert str(object_id) in msg, msg
    for f in fragments:
        assert f in msg, msg
