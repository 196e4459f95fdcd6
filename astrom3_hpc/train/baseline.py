"""`astrom3 baseline STORE`: the classical light-curve classifier, on the same store, splits and metrics as
fine-tuning, so result tables show it beside the networks (docs/lightcurves.md).

Features (numpy, per object, from the store's light curve alone): the Lomb-Scargle period search (best and
second period and powers; stored at ingestion or computed here), a 3-harmonic Fourier fit at the best period and
at twice it (amplitudes, R21, R31, phi21, phi31, explained variance), and light-curve statistics (amplitude,
percentile ranges, skew, kurtosis, Lafler-Kinman at both periods, von Neumann ratio, noise level). Classifier:
scikit-learn's HistGradientBoosting with balanced class weights. Writes metrics.json (the fine-tune format with
init "baseline"), predictions.csv and confusion_test.png.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.constants import AUX_COLUMNS
from ..data.preprocess import DAYS_PER_YEAR, lafler_kinman
from ..data.store import Store
from .rundir import RunLog

log = logging.getLogger("astrom3")

N_HARMONICS = 3
FEATURE_NAMES = (
    "log_period", "ls_power", "log_period2", "ls_power2", "period_ratio",
    *[f"{p}{k}" for p in ("A", "B") for k in ("1", "2", "3", "_r21", "_r31", "_phi21", "_phi31", "_expl")],
    "log_mad", "amplitude", "p5_95", "p10_90", "p25_75", "skew", "kurtosis", "lksl", "lksl2", "eta",
    "beyond1std", "noise", "log_span", "log_n",
)


def fourier_features(t: np.ndarray, y: np.ndarray, period: float) -> list[float]:
    """Least-squares 3-harmonic fit at `period`: A1..A3, R21, R31, phi21, phi31 (in [0, 2 pi)), explained
    variance."""
    ph = 2 * np.pi * t / period
    cols = [np.ones_like(t)]
    for k in range(1, N_HARMONICS + 1):
        cols += [np.cos(k * ph), np.sin(k * ph)]
    X = np.stack(cols, axis=1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    a = np.hypot(coef[1::2], coef[2::2])
    phi = np.arctan2(-coef[2::2], coef[1::2])
    var = float(np.var(y))
    expl = 1.0 - float(np.var(y - X @ coef)) / var if var > 0 else 0.0
    a1 = a[0] if a[0] > 0 else 1e-12
    return [*a.tolist(), a[1] / a1, a[2] / a1, float((phi[1] - 2 * phi[0]) % (2 * np.pi)),
            float((phi[2] - 3 * phi[0]) % (2 * np.pi)), expl]


def object_features(t: np.ndarray, y: np.ndarray, err: np.ndarray, search: np.ndarray, log_mad: float,
                    amplitude: float) -> np.ndarray:
    """One feature row (FEATURE_NAMES order). t in days; y, err in the store's MAD units."""
    p1, pow1, p2, pow2 = (float(x) for x in search)
    q = np.percentile(y, [5, 10, 25, 75, 90, 95])
    sd = float(np.std(y)) or 1.0
    z = (y - y.mean()) / sd
    order = np.argsort(t)
    dy = np.diff(y[order])
    eta = float(np.mean(dy ** 2) / sd ** 2) if len(dy) else 0.0
    span = float(np.ptp(t))
    return np.array([
        np.log10(p1), pow1, np.log10(p2), pow2, p2 / p1,
        *fourier_features(t, y, p1), *fourier_features(t, y, 2 * p1),
        log_mad, amplitude, q[5] - q[0], q[4] - q[1], q[3] - q[2], float(np.mean(z ** 3)), float(np.mean(z ** 4)) - 3,
        lafler_kinman(t, y, p1), lafler_kinman(t, y, 2 * p1), eta, float(np.mean(np.abs(z) > 1)),
        float(np.median(err)), np.log10(max(span, 1e-3)), np.log10(len(t)),
    ], dtype=np.float64)


def store_features(store: Store, rows: np.ndarray, period_source: str = "ls") -> np.ndarray:
    """Feature matrix for store rows. period_source "ls": the Lomb-Scargle search (stored at ingestion, else
    computed now); "store": the store's aux period (a catalogue period where the source had one) with the
    stored search's powers."""
    from ..data import periods

    r = store.root
    offsets = store.offsets
    values = r["lc/values"]
    stats = r["lc/stats"][:]
    aux = r["aux"][:].astype(np.float64)
    search = r["lc/period_search"][:].astype(np.float64) if "lc/period_search" in r else \
        np.full((store.n_objects, 4), np.nan)
    k_amp, k_per = AUX_COLUMNS.index("amplitude"), AUX_COLUMNS.index("period")
    out = np.empty((len(rows), len(FEATURE_NAMES)))
    for i, row in enumerate(rows):
        pts = values[int(offsets[row]):int(offsets[row + 1])].astype(np.float64)
        t = pts[:, 0] * float(stats[row, 1]) * DAYS_PER_YEAR
        s = search[row]
        if not np.all(np.isfinite(s)):
            s = periods.search(t, pts[:, 1], pts[:, 2]).as_array().astype(np.float64)
        if period_source == "store":
            s = s.copy()
            s[0] = 10.0 ** aux[row, k_per]
        out[i] = object_features(t, pts[:, 1], pts[:, 2], s, float(stats[row, 0]), float(aux[row, k_amp]))
    return out


def run_baseline(store_path: str, run_dir: str, seed: int = 42, subset: str = "full", period_source: str = "ls",
                 random_state: int = 0, threads: int = 1) -> dict[str, Any]:
    """Train on the split's train rows, report on its test rows (and the full test set for sub-X)."""
    try:
        import sklearn.ensemble  # noqa: F401
        import threadpoolctl  # noqa: F401
    except ImportError:
        raise ValueError("astrom3 baseline needs scikit-learn: pip install 'astrom3-hpc[science]'") from None

    if period_source not in ("ls", "store"):
        raise ValueError(f"period source must be 'ls' or 'store', got {period_source!r}")
    store = Store(store_path)
    if not store.attrs.get("modalities") or "photo" not in store.attrs["modalities"]:
        raise ValueError(f"{store_path}: no light curves in this store")
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    with RunLog(run).attach().recording("baseline"):
        return _fit_and_report(store, run, seed, subset, period_source, random_state, threads)


def _fit_and_report(store: Store, run: Path, seed: int, subset: str, period_source: str, random_state: int,
                    threads: int) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    from ..core.atomic import write_json
    from .evaluate import classification_report, plot_confusion, write_predictions

    names = store.class_names
    labels = store.labels
    present = store.root["present"][:, 0]
    t0 = time.perf_counter()
    train = store.split(seed, subset, "train")
    train = train[present[train]]
    x_train = store_features(store, train, period_source)
    t_feat = time.perf_counter() - t0
    # sklearn's default leaf size (20) cannot split a training set of a few dozen objects at all.
    leaf = int(np.clip(len(train) // 10, 2, 20))
    clf = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, class_weight="balanced",
                                         min_samples_leaf=leaf, random_state=random_state, early_stopping=False)
    # OpenMP threads beyond the cores this job owns cost 10x on a shared node (measured: 105 s against 9.6 s
    # for one fit on 2 busy cores), so the thread count is explicit.
    with threadpool_limits(threads):
        clf.fit(x_train, labels[train])
    t_fit = time.perf_counter() - t0 - t_feat
    out: dict[str, Any] = {"kind": "finetune", "mode": "photo", "fusion": None, "subset": subset, "seed": seed,
                           "init": "baseline", "init_dir": None, "model": "lomb-scargle+fourier+stats, "
                           "HistGradientBoosting", "period_source": period_source, "use_rfr_score": False,
                           "store": str(store.path), "n_features": len(FEATURE_NAMES),
                           "feature_names": list(FEATURE_NAMES)}
    sets = [("test", subset)] + ([("test_full", "full")] if subset != "full" else [])
    for key, sub in sets:
        rows = store.split(seed, sub, "test")
        rows = rows[present[rows]]
        probs = np.zeros((len(rows), len(names)))
        x = store_features(store, rows, period_source)
        with threadpool_limits(threads):
            probs[:, clf.classes_] = clf.predict_proba(x)
        y_pred = probs.argmax(1)
        rep = classification_report(labels[rows], y_pred, names)
        out[key], out[f"{key}_accuracy"] = rep, rep["accuracy"]
        plot_confusion(rep, run / f"confusion_{key}.png", f"classical baseline {subset} seed {seed} - {sub} test set")
        write_predictions(run / ("predictions.csv" if key == "test" else f"predictions_{key}.csv"), store, rows,
                          labels[rows], y_pred, probs)
    if "test_full" not in out:
        out["test_full"], out["test_full_accuracy"] = out["test"], out["test_accuracy"]
    out["seconds"] = {"features_train": round(t_feat, 2), "fit": round(t_fit, 2),
                      "total": round(time.perf_counter() - t0, 2)}
    write_json(run / "metrics.json", out)
    log.info("baseline %s seed %d: test accuracy %.3f, macro-F1 %.3f", subset, seed, out["test"]["accuracy"],
             out["test"]["macro_f1"])
    return out


def add_parser(sub) -> None:
    p = sub.add_parser("baseline", help="classical light-curve classifier (Lomb-Scargle + Fourier + statistics, "
                                        "gradient boosting) on a store's splits",
                       description="Writes metrics.json (fine-tune format, init 'baseline'), predictions.csv and "
                                   "confusion_test.png into --out, so `astrom3 collect` lists it beside the networks.")
    p.add_argument("store")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--seed", type=int, default=42, help="split seed")
    p.add_argument("--subset", default="full", choices=["full", "sub50", "sub25", "sub10"])
    p.add_argument("--period", choices=["ls", "store"], default="ls",
                   help="ls (default): the Lomb-Scargle period only; store: the store's period (catalogue where "
                        "the source gave one)")
    p.add_argument("--threads", type=int, default=1, help="OpenMP threads for gradient boosting (default 1)")
    p.set_defaults(func=cmd_baseline)


def cmd_baseline(args) -> int:
    out = run_baseline(args.store, args.out, args.seed, args.subset, args.period, threads=args.threads)
    print(json.dumps({k: out[k] for k in ("subset", "seed", "test_accuracy")} |
                     {"test_macro_f1": out["test"]["macro_f1"], "per_class_recall": out["test"]["per_class_recall"]},
                     indent=2))
    return 0
