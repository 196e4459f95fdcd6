"""How separable are the classes of the synthetic generator in each modality alone?

Generates N objects with `SyntheticSource`, computes a handful of hand-made features per modality (numpy only),
and fits a multinomial logistic regression (numpy, full-batch gradient descent with L2) on a stratified 80/20
split, plus a nearest-centroid baseline. The point is a sanity check of the generator's class overlap, not a
strong classifier: AstroM3's encoders should beat these numbers.

    python benchmarks/generator_separability.py            # 5000 objects, seed 123
    python benchmarks/generator_separability.py -n 8000 --seed 7 --json out.json

Features
- light curve (photometry): log10 period, amplitude, Lafler-Kinman statistic, rfr_score (reported with and
  without it), skewness and kurtosis of the magnitudes, a 3-harmonic Fourier fit at the catalogue period
  (R21, R31, cos/sin phi21, fraction of variance explained), relative scatter of the fluxes.
- spectrum: line / continuum band indices (H-alpha, H-beta, H-delta, Ca II K, Ca II 8542, Mg b, Na D, G band,
  TiO 7054 and 6159, C2 5165, CN 7874) and three colour ratios (4500/6500, 8000/6500, 4000/5000).
- metadata: the 34 columns with the spec's transforms (absolute magnitudes from the parallax, parallax <= 0
  taken as 1 mas like the reference; cos l, sin b); missing values filled with the training mean.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astrom3_hpc.core.constants import ABS_MAG_COLUMNS, CLASS_NAMES, META_COLUMNS  # noqa: E402
from astrom3_hpc.data.synthetic import SyntheticSource  # noqa: E402

# --------------------------------------------------------------------------------------------- features


def lc_features(obj) -> list[float]:
    t, f = obj.lc[:, 0], obj.lc[:, 1]
    amp, period, lksl, rfr = obj.aux
    good = f > 0
    mag = -2.5 * np.log10(f[good]) if good.sum() > 10 else np.zeros(10)
    dm = mag - mag.mean()
    sd = dm.std() + 1e-9
    skew = float(np.mean(dm ** 3) / sd ** 3)
    kurt = float(np.mean(dm ** 4) / sd ** 4 - 3.0)
    # Fourier fit with 3 harmonics at the catalogue period.
    ph = 2 * np.pi * (t[good] / period % 1.0) if good.sum() > 10 else np.zeros(10)
    A = np.column_stack([np.ones_like(ph)] + [fn(k * ph) for k in (1, 2, 3) for fn in (np.cos, np.sin)])
    coef, *_ = np.linalg.lstsq(A, mag if len(mag) == len(ph) else np.zeros(len(ph)), rcond=None)
    a = [np.hypot(coef[1 + 2 * k], coef[2 + 2 * k]) for k in range(3)]
    phi = [np.arctan2(-coef[2 + 2 * k], coef[1 + 2 * k]) for k in range(3)]
    resid = mag - A @ coef
    explained = 1.0 - resid.var() / (mag.var() + 1e-12)
    phi21 = phi[1] - 2 * phi[0]
    rel_scatter = np.log10(np.std(f) / (abs(np.median(f)) + 1e-9) + 1e-6)
    return [np.log10(period), amp, lksl, rfr, skew, kurt, a[1] / (a[0] + 1e-9), a[2] / (a[0] + 1e-9),
            np.cos(phi21), np.sin(phi21), explained, rel_scatter]


LC_NAMES = ["log_period", "amplitude", "lksl", "rfr_score", "skew", "kurtosis", "R21", "R31", "cos_phi21",
            "sin_phi21", "fourier_r2", "log_rel_scatter"]

# (line window, [continuum windows]) in Angstrom.
_BANDS = {
    "Halpha": ((6553, 6573), [(6510, 6540), (6590, 6620)]),
    "Hbeta": ((4851, 4871), [(4820, 4845), (4880, 4905)]),
    "Hdelta": ((4091, 4112), [(4060, 4085), (4120, 4145)]),
    "CaK": ((3926, 3942), [(3900, 3920), (4010, 4030)]),
    "CaT8542": ((8532, 8552), [(8510, 8525), (8560, 8575)]),
    "Mgb": ((5160, 5190), [(5130, 5155), (5195, 5220)]),
    "NaD": ((5884, 5900), [(5860, 5878), (5905, 5925)]),
    "Gband": ((4290, 4318), [(4260, 4285), (4320, 4340)]),
    "TiO7054": ((7060, 7110), [(7000, 7045)]),
    "TiO6159": ((6165, 6210), [(6110, 6150)]),
    "C2_5165": ((5100, 5160), [(5170, 5230)]),
    "CN7874": ((7880, 7940), [(7820, 7865)]),
}
_COLOURS = {"c4500_6500": ((4450, 4550), (6450, 6550)), "c8000_6500": ((7950, 8050), (6450, 6550)),
            "c4000_5000": ((3980, 4080), (4950, 5050))}


def _mean_in(w, f, ok, lo, hi):
    m = ok & (w >= lo) & (w < hi)
    return float(f[m].mean()) if m.any() else np.nan


def spec_features(obj) -> list[float]:
    w, f, ok = obj.spec_wave, obj.spec_flux, obj.spec_ivar > 0
    out = []
    for (lo, hi), conts in _BANDS.values():
        line = _mean_in(w, f, ok, lo, hi)
        cont = np.nanmean([_mean_in(w, f, ok, a, b) for a, b in conts])
        out.append(line / cont if cont > 0 and np.isfinite(line) else np.nan)
    for (a, b), (c, d) in _COLOURS.values():
        x, y = _mean_in(w, f, ok, a, b), _mean_in(w, f, ok, c, d)
        out.append(np.log10(max(x, 1e-3 * abs(y) + 1e-9) / y) if y > 0 else np.nan)
    return out


SPEC_NAMES = list(_BANDS) + list(_COLOURS)

_ABS = np.array([META_COLUMNS.index(c) for c in ABS_MAG_COLUMNS])
_PLX, _L, _B = META_COLUMNS.index("parallax"), META_COLUMNS.index("l"), META_COLUMNS.index("b")


def meta_features(obj) -> list[float]:
    m = obj.meta.copy()
    plx = m[_PLX] if m[_PLX] > 0 else 1.0
    m[_ABS] = m[_ABS] - 10.0 + 5.0 * np.log10(plx)
    m[_L] = np.cos(np.deg2rad(m[_L]))
    m[_B] = np.sin(np.deg2rad(m[_B]))
    return m.tolist()


# ------------------------------------------------------------------------------------------- classifiers


def _standardise(xtr, xte):
    mu = np.nanmean(xtr, axis=0)
    xtr = np.where(np.isfinite(xtr), xtr, mu)
    xte = np.where(np.isfinite(xte), xte, mu)
    # Robust clipping: heavy tails (e.g. parallax-based absolute magnitudes) would dominate the gradient.
    lo, hi = np.percentile(xtr, 0.5, axis=0), np.percentile(xtr, 99.5, axis=0)
    xtr, xte = np.clip(xtr, lo, hi), np.clip(xte, lo, hi)
    sd = xtr.std(axis=0) + 1e-9
    mu = xtr.mean(axis=0)
    return (xtr - mu) / sd, (xte - mu) / sd


def logistic(xtr, ytr, xte, k, l2=1e-3, iters=1500, lr=0.5, quadratic=False):
    if quadratic:
        xtr = np.hstack([xtr, xtr ** 2])
        xte = np.hstack([xte, xte ** 2])
        xtr, xte = _standardise(xtr, xte)
    n, d = xtr.shape
    W = np.zeros((d, k))
    b = np.zeros(k)
    Y = np.eye(k)[ytr]
    # Adam on the mean cross-entropy.
    mW, vW, mb, vb = (np.zeros_like(W), np.zeros_like(W), np.zeros_like(b), np.zeros_like(b))
    for it in range(1, iters + 1):
        z = xtr @ W + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - Y) / n
        gW = xtr.T @ g + l2 * W
        gb = g.sum(axis=0)
        mW = 0.9 * mW + 0.1 * gW
        vW = 0.999 * vW + 0.001 * gW ** 2
        mb = 0.9 * mb + 0.1 * gb
        vb = 0.999 * vb + 0.001 * gb ** 2
        a = lr * 0.1 * np.sqrt(1 - 0.999 ** it) / (1 - 0.9 ** it)
        W -= a * mW / (np.sqrt(vW) + 1e-8)
        b -= a * mb / (np.sqrt(vb) + 1e-8)
    return np.argmax(xte @ W + b, axis=1)


def nearest_centroid(xtr, ytr, xte, k):
    cents = np.stack([xtr[ytr == c].mean(axis=0) if np.any(ytr == c) else np.full(xtr.shape[1], 1e9)
                      for c in range(k)])
    d = ((xte[:, None, :] - cents[None]) ** 2).sum(-1)
    return np.argmin(d, axis=1)


def stratified_split(y, frac, rng):
    te = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        te.extend(idx[: max(1, int(round(frac * len(idx))))])
    te = np.sort(np.array(te))
    tr = np.setdiff1d(np.arange(len(y)), te)
    return tr, te


def evaluate(X, y, k, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    tr, te = stratified_split(y, 0.2, rng)
    xtr, xte = _standardise(X[tr], X[te])
    res = {}
    for name, fn in (("logreg", lambda: logistic(xtr, y[tr], xte, k)),
                     ("logreg_quadratic", lambda: logistic(xtr, y[tr], xte, k, quadratic=True)),
                     ("nearest_centroid", lambda: nearest_centroid(xtr, y[tr], xte, k))):
        pred = fn()
        acc = float(np.mean(pred == y[te]))
        recall = {CLASS_NAMES[c]: float(np.mean(pred[y[te] == c] == c)) for c in range(k) if np.any(y[te] == c)}
        res[name] = {"accuracy": acc, "balanced_accuracy": float(np.mean(list(recall.values()))),
                     "recall": recall}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args(argv)

    src = SyntheticSource(args.n, seed=args.seed)
    t = time.perf_counter()
    objs = [src.get(i) for i in range(args.n)]
    gen_s = time.perf_counter() - t
    y = np.array([o.label for o in objs])
    F_lc = np.array([lc_features(o) for o in objs], dtype=float)
    F_sp = np.array([spec_features(o) for o in objs], dtype=float)
    F_me = np.array([meta_features(o) for o in objs], dtype=float)
    k = len(CLASS_NAMES)
    sets = {
        "photometry (light curve + aux)": F_lc,
        "photometry without rfr_score": np.delete(F_lc, LC_NAMES.index("rfr_score"), axis=1),
        "rfr_score alone": F_lc[:, [LC_NAMES.index("rfr_score")]],
        "spectra": F_sp,
        "metadata": F_me,
        "all three": np.hstack([F_lc, F_sp, F_me]),
    }
    out = {"n": args.n, "seed": args.seed, "generation_s": gen_s, "objects_per_s": args.n / gen_s,
           "majority_class_accuracy": float(np.mean(y == np.bincount(y).argmax())), "results": {}}
    print(f"generated {args.n} objects in {gen_s:.1f} s ({args.n / gen_s:.0f} objects/s)")
    print(f"majority-class accuracy {out['majority_class_accuracy']:.3f}")
    print(f"{'features':34s} {'logreg':>8s} {'quad':>8s} {'centroid':>9s}   (test accuracy, 20% stratified)")
    for name, X in sets.items():
        r = evaluate(X, y, k)
        out["results"][name] = r
        print(f"{name:34s} {r['logreg']['accuracy']:8.3f} {r['logreg_quadratic']['accuracy']:8.3f} "
              f"{r['nearest_centroid']['accuracy']:9.3f}")
    for name in ("photometry (light curve + aux)", "spectra", "metadata"):
        rec = out["results"][name]["logreg_quadratic"]["recall"]
        print(f"  recall, {name} (quadratic): " + " ".join(f"{c} {v:.2f}" for c, v in rec.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
