"""`astrom3 baseline STORE`: the classical light-curve classifier, on the same store, splits and metrics as
fine-tuning, so result tables show it beside the networks (docs/lightcurves.md).

Features: data/lc_features.py (Lomb-Scargle search, 3-harmonic Fourier fits at the period and twice it,
light-curve statistics; the `periodic` encoder gets the same vector), from the store's cache. Classifier:
scikit-learn's HistGradientBoosting with balanced class weights. Writes metrics.json (the fine-tune format with
init "baseline", the validation split's report under "val"), predictions.csv, predictions_val.csv,
predictions_unlabelled.csv (objects without a class, when the store has any) and confusion_test.png.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import ConfigError
from ..core.constants import UNLABELLED
from ..core.errors import require_scikit_learn
from ..core.processes import map_in_processes
from ..core.signals import stopped_by
from ..data import store_cache
from ..data.lc_features import FEATURE_NAMES, FEATURES_VERSION, cached_features, store_features
from ..data.store import Store
from .fingerprint import OtherRunError, differences, held_run, read_identity, store_identity, write_identity
from .rundir import RunLog, env_info, write_run_json, writing

log = logging.getLogger("astrom3")


def run_baseline(store_path: str, run_dir: str, seed: int = 42, subset: str = "full", period_source: str = "ls",
                 random_state: int = 0, threads: int = 1) -> dict[str, Any]:
    """Train on the split's train rows, report on its test rows (and the full test set for sub-X)."""
    require_scikit_learn("astrom3 baseline")

    if period_source not in ("ls", "store"):
        raise ValueError(f"period source must be 'ls' or 'store', got {period_source!r}")
    store = Store(store_path)
    if not store.attrs.get("modalities") or "photo" not in store.attrs["modalities"]:
        raise ValueError(f"{store_path}: no light curves in this store")
    # An unknown seed or subset, or nothing to fit on or score, is an error before the run directory exists.
    store.check_classifier_splits(seed, subset)
    run = Path(run_dir)
    identity = {"kind": "baseline", "config": {"subset": subset, "period_source": period_source,
                                               "random_state": random_state},
                "store": store_identity(store), "store_path": str(store.path.resolve()), "seed": seed}
    with writing(run, flag="--out"):  # a second job into this --out is refused before it writes anything
        refuse_other_run(run, identity)
        run.mkdir(parents=True, exist_ok=True)
        write_identity(run, identity)
        write_run_json(run, {"kind": "finetune", "init": "baseline", **env_info()})
        # Nothing to checkpoint: a job signal stops the run at once, its files unwritten, for the job script to
        # requeue.
        with RunLog(run).attach().recording("baseline"), stopped_by(str(run)):
            return _fit_and_report(store, run, seed, subset, period_source, random_state, threads)


def refuse_other_run(run: Path, identity: dict[str, Any]) -> None:
    """A baseline rewrites its files: only over the same baseline (or an older one, without identity.json, of
    the same seed and subset). Over a fine-tune it left that run's weights and checkpoints beside its own metrics;
    over another seed or subset it replaced that result, and left a sub-X run's test_full files standing."""
    if not held_run(run):
        return
    old = read_identity(run)
    if old is None:
        m = run / "metrics.json"
        done = json.loads(m.read_text(encoding="utf-8")) if m.is_file() else {}
        if done.get("init") == "baseline" and (done.get("seed"), done.get("subset")) == (
                identity["seed"], identity["config"]["subset"]):
            return
        raise OtherRunError(f"--out {run} holds a run ({', '.join(held_run(run))}) that is not this baseline's: "
                            f"give another --out")
    if old.get("kind") != "baseline":
        raise OtherRunError(f"--out {run} holds a {old.get('kind', 'training')} run: a baseline there would mix "
                            f"two runs' files; give another --out")
    diff = differences(old, identity)
    if diff and not (run / "metrics.json").exists() and not any(run.glob("predictions*.csv")):
        return  # a baseline stopped before its results (it has no checkpoint): nothing of it to mix with
    if diff:
        raise OtherRunError(f"--out {run} holds another baseline run:\n  " + "\n  ".join(diff)
                            + "\nRerun with the same settings, or give another --out.")


def with_light_curve(store: Store, rows: np.ndarray) -> np.ndarray:
    """The rows that hold a light curve: the only ones the baseline fits on, scores or classifies."""
    return rows[store.root["present"][:, 0][rows]]


def split_rows(store: Store, seed: int, subset: str, split: str) -> np.ndarray:
    return with_light_curve(store, store.split(seed, subset, split))


def fit_baseline(store: Store, seed: int, subset: str, period_source: str = "ls", random_state: int = 0,
                 threads: int = 1) -> tuple[Any, dict[str, float]]:
    """The classifier fitted on the split's train rows, and the seconds its features and its fit took."""
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    train = split_rows(store, seed, subset, "train")
    x_train = baseline_features(store, train, period_source)
    t_feat = time.perf_counter() - t0
    clf = make_classifier(len(train), random_state)
    # OpenMP threads beyond the cores this job owns cost 10x on a shared node (measured: 105 s against 9.6 s
    # for one fit on 2 busy cores), so the thread count is explicit.
    with threadpool_limits(threads):
        clf.fit(x_train, store.labels[train])
    return clf, {"features_train": round(t_feat, 2), "fit": round(time.perf_counter() - t0 - t_feat, 2)}


def baseline_probabilities(clf, store: Store, rows: np.ndarray, period_source: str = "ls",
                           threads: int = 1, n_classes: int | None = None) -> np.ndarray:
    """(len(rows), n_classes) class probabilities; a class absent from the train rows gets 0. `n_classes`:
    the training store's class count, when `store` is another one (default: this store's)."""
    from threadpoolctl import threadpool_limits

    probs = np.zeros((len(rows), n_classes or len(store.class_names)))
    x = baseline_features(store, rows, period_source)
    with threadpool_limits(threads):
        probs[:, clf.classes_] = clf.predict_proba(x)
    return probs


def _fit_and_report(store: Store, run: Path, seed: int, subset: str, period_source: str, random_state: int,
                    threads: int) -> dict[str, Any]:
    from ..core.atomic import write_json
    from .evaluate import (classification_report, plot_confusion, predictions_file, unlabelled_summary,
                           write_predictions)

    names = store.class_names
    labels = store.labels
    t0 = time.perf_counter()
    clf, seconds = fit_baseline(store, seed, subset, period_source, random_state, threads)
    out: dict[str, Any] = {"kind": "finetune", "mode": "photo", "fusion": None, "subset": subset, "seed": seed,
                           "init": "baseline", "init_dir": None, "model": "lomb-scargle+fourier+stats, "
                           "HistGradientBoosting", "period_source": period_source, "use_rfr_score": False,
                           # resolved: predict, run from another directory, finds the training store by it
                           "store": str(store.path.resolve()), "store_fingerprint": store.fingerprint,
                           "random_state": random_state, "n_features": len(FEATURE_NAMES),
                           "feature_names": list(FEATURE_NAMES)}
    sets = [("test", subset, "test")] + ([("test_full", "full", "test")] if subset != "full" else [])
    for key, sub, split in sets + [("val", subset, "val")]:
        rows = split_rows(store, seed, sub, split)
        probs = baseline_probabilities(clf, store, rows, period_source, threads)
        y_pred = probs.argmax(1)
        rep = classification_report(labels[rows], y_pred, names)
        out[key], out[f"{key}_accuracy"] = rep, rep["accuracy"]
        if split == "test":
            plot_confusion(rep, run / f"confusion_{key}.png",
                           f"classical baseline {subset} seed {seed} - {sub} test set")
        write_predictions(run / predictions_file(key), store, rows, labels[rows], y_pred, probs)
    rows = with_light_curve(store, store.unlabelled_rows())
    if len(rows):  # objects without a class: classified, not scored
        probs = baseline_probabilities(clf, store, rows, period_source, threads)
        y_pred = probs.argmax(1)
        out[UNLABELLED] = unlabelled_summary(y_pred, names)
        write_predictions(run / predictions_file(UNLABELLED), store, rows, labels[rows], y_pred, probs)
    if "test_full" not in out:
        out["test_full"], out["test_full_accuracy"] = out["test"], out["test_accuracy"]
    out["seconds"] = seconds | {"total": round(time.perf_counter() - t0, 2)}
    write_json(run / "metrics.json", out)
    log.info("baseline %s seed %d: test accuracy %.3f, macro-F1 %.3f", subset, seed, out["test"]["accuracy"],
             out["test"]["macro_f1"])
    return out


def make_classifier(n_train: int, random_state: int = 0):
    from sklearn.ensemble import HistGradientBoostingClassifier

    # sklearn's default leaf size (20) cannot split a training set of a few dozen objects at all.
    leaf = int(np.clip(n_train // 10, 2, 20))
    return HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, class_weight="balanced",
                                          min_samples_leaf=leaf, random_state=random_state, early_stopping=False)


def cross_fitted_probabilities(x: np.ndarray, y: np.ndarray, n_classes: int, folds: int = 5, seed: int = 0,
                               threads: int = 1, what: str = "training set") -> np.ndarray:
    """The baseline's class probabilities for each row of x, each from a model fitted without that row (stratified
    k-fold): a teacher for distillation must not have seen the label it is asked about, or its probabilities on
    training objects are the labels again, only more confident.

    `threads` > 1 fits the folds in that many processes (at most `folds`), each on one OpenMP thread: at a few
    thousand rows gradient boosting gains nothing from a second thread (1,600 rows, five fits: 42.8 s on one, 51.6
    s on two), while folds are independent. Each fold's fit is the sequential one, so the result is the same."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y, minlength=n_classes)
    smallest = counts[counts > 0].min()
    if smallest < folds:
        # Every rank of a fine-tune reaches this alike: a ConfigError is printed once, by rank 0.
        raise ConfigError(f"{what}: a class has only {smallest} training objects; cross-fitting the baseline "
                          f"teacher needs at least {folds} per class (set finetune.distill: none)")
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))
    args = [(x[fit_on], y[fit_on], x[predict_on], seed) for fit_on, predict_on in splits]
    fitted = map_in_processes(_fold, args, max(1, min(threads, folds)))
    probs = np.zeros((len(y), n_classes))
    for (_, predict_on), (classes, p) in zip(splits, fitted):
        probs[np.ix_(predict_on, classes)] = p
    return probs


def _fold(x_fit: np.ndarray, y_fit: np.ndarray, x_predict: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes, probabilities of x_predict) of one baseline fitted on one OpenMP thread."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        clf = make_classifier(len(y_fit), seed).fit(x_fit, y_fit)
        return clf.classes_, clf.predict_proba(x_predict)


# Bump when make_classifier or cross_fitted_probabilities change what they compute: cached teachers then go stale.
TEACHER_VERSION = 1


def cached_teacher(store: Store, rows: np.ndarray, n_classes: int, seed: int, threads: int, what: str) -> np.ndarray:
    """cross_fitted_probabilities of the store's `rows` (sorted) on their Lomb-Scargle features, kept in the store's
    cache per (rows, seed): every run of one split (weight seeds, members, configs) shares one set of fits."""
    key = hashlib.sha1(np.ascontiguousarray(rows, np.int64).tobytes() + f"/{seed}/{n_classes}".encode()).hexdigest()

    def fit() -> np.ndarray:
        log.info("fitting the classical baseline five times for the distillation teacher of the %s (once per "
                 "split; later runs read it from the store's cache)", what)
        return cross_fitted_probabilities(baseline_features(store, rows, "ls"), store.labels[rows], n_classes,
                                          seed=seed, threads=threads, what=what)

    return store_cache.cached(store, f"distill_teacher-{key[:16]}", FEATURES_VERSION * 100 + TEACHER_VERSION,
                              (len(rows), n_classes), fit, "cross-fitted baseline probabilities")


def baseline_features(store: Store, rows: np.ndarray, period_source: str) -> np.ndarray:
    """Lomb-Scargle features come from the store's cache (computed once, shared with the periodic encoder)."""
    if period_source == "ls":
        return cached_features(store)[rows].astype(np.float64)
    return store_features(store, rows, period_source)
