"""Classification and embedding metrics (no ranks here: callers gather first)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def classification_report(y_true, y_pred, class_names) -> dict:
    """Accuracy, per-class recall and macro-F1 over the classes y_true holds (docs/collect.md says why those)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    k = len(class_names)
    cm = confusion(y_true, y_pred, k)
    support = cm.sum(1)
    predicted = cm.sum(0)
    tp = np.diag(cm).astype(float)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = support > 0
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class_recall": {c: float(r) for c, r, p in zip(class_names, recall, present) if p},
        "confusion": cm.tolist(),
        "class_names": list(class_names),
    }


# Above this many classes a count no longer fits its cell at a readable size: the colours stay, the counts are left
# out (metrics.json holds the matrix).
MAX_COUNTED_CLASSES = 25


def _confusion_layout(k: int, maxlen: int) -> tuple[float, float, float, bool]:
    """Font size (pt), cell side (inches), length of the longest label (inches) and whether the column labels stand
    upright, for `k` classes named in at most `maxlen` characters. Cells are sized from the font so that one label
    per row and column fits whatever `k` is: the figure grows rather than the labels piling up."""
    fs, cell = (10.0, 0.42) if k <= 12 else (8.0, 0.3) if k <= MAX_COUNTED_CLASSES else (7.0, 0.22)
    label_in = maxlen * 0.65 * fs / 72  # 0.65 em: a generous mean glyph width of DejaVu Sans
    # A 45-degree label's box is (length + height) / sqrt(2) wide: past the cell it runs into its neighbour's.
    upright = (label_in + 1.2 * fs / 72) * 0.71 > 0.9 * cell
    return fs, cell, label_in, upright


def confusion_figure(report: dict, title: str):
    """The confusion matrix of `report` as a matplotlib figure (plot_confusion saves it), sized from the number of
    classes and the longest name so that every row and column label is readable."""
    from ..core.figures import pyplot

    plt = pyplot()
    cm = np.asarray(report["confusion"], dtype=float)
    names = [str(n) for n in report["class_names"]]
    k = len(names)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    maxlen = max((len(n) for n in names), default=1)
    fs, cell, label_in, upright = _confusion_layout(k, maxlen)
    matrix = max(k * cell, 2.0)
    below = label_in if upright else 0.71 * label_in + fs / 72
    # Margins: the axis label and the tick labels left and below, the colour bar right, three title lines above;
    # tight_layout then places everything exactly.
    fig, ax = plt.subplots(figsize=(max(6.4, 0.6 + label_in + matrix + 1.3), max(4.0, 1.1 + matrix + below + 0.6)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if upright:
        ax.set_xticks(range(k), names, rotation=90, fontsize=fs)
    else:
        ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor", fontsize=fs)
    ax.set_yticks(range(k), names, fontsize=fs)
    counted = k <= MAX_COUNTED_CLASSES
    if counted:
        digits = len(str(int(cm.max()))) if cm.size else 1
        count_fs = min(7.0, 0.8 * cell * 72 / (0.62 * digits))  # the widest count still inside its cell
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=count_fs,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    note = "" if counted else f"\n{k} classes: counts left out (metrics.json has them), colours only"
    ax.set_title(f"{title}\naccuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}{note}")
    fig.colorbar(im, ax=ax, fraction=0.046, label="row-normalised")
    fig.tight_layout()
    return fig


def plot_confusion(report: dict, path: str | Path, title: str) -> None:
    from ..core.figures import save

    save(confusion_figure(report, title), path)


# Scores held at a time by the all-against-all passes below: the (n, n) matrix of a survey's validation split
# (100,000 objects: 40 GB) was built on every rank every epoch.
SCORE_BLOCK_BYTES = 64 << 20


def _rows_per_block(n_cols: int) -> int:
    return max(1, SCORE_BLOCK_BYTES // (4 * max(n_cols, 1)))


def retrieval_top1(a: np.ndarray, b: np.ndarray) -> float:
    """Cross-modal retrieval: share of objects whose nearest other-modality embedding is their own,
    averaged over both directions. Computed in blocks of rows, then of columns, of a @ b.T (each block the same
    products as the whole matrix holds, so the same argmax)."""
    n = len(a)
    step = _rows_per_block(n)
    hits_ab = sum(int(((a[i:i + step] @ b.T).argmax(1) == np.arange(i, min(i + step, n))).sum())
                  for i in range(0, n, step))
    hits_ba = sum(int(((a @ b[j:j + step].T).argmax(0) == np.arange(j, min(j + step, n))).sum())
                  for j in range(0, n, step))
    return float((hits_ab / n + hits_ba / n) / 2) if n else float("nan")


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def centroid_accuracy(train_x, train_y, test_x, test_y, n_classes: int) -> float:
    """Nearest class centroid by cosine, over the classes that have train objects: a class without one has no
    centroid (a zero vector in its place out-scored every real centroid for a test object at negative cosine to
    them all)."""
    train_x, test_x = _normalise(train_x), _normalise(test_x)
    have = np.array([c for c in range(n_classes) if (train_y == c).any()])
    if not len(have):
        return float("nan")
    cents = np.stack([_normalise(train_x[train_y == c].mean(0, keepdims=True))[0] for c in have])
    return float((have[(test_x @ cents.T).argmax(1)] == test_y).mean())


def knn1_accuracy(train_x, train_y, test_x, test_y) -> float:
    train_x, test_x = _normalise(train_x), _normalise(test_x)
    block = _rows_per_block(len(train_x))  # a fixed 4096 test rows held 13 GB of scores at 800,000 train objects
    pred = np.concatenate([train_y[(test_x[i:i + block] @ train_x.T).argmax(1)]
                           for i in range(0, len(test_x), block)])
    return float((pred == test_y).mean())


def averaged_embedding(embs: dict[str, np.ndarray]) -> np.ndarray:
    return _normalise(np.mean([_normalise(v) for v in embs.values()], axis=0))


def predicted_classes(probs: np.ndarray, store, rows: np.ndarray, source: str) -> np.ndarray:
    """Each object's most probable class, from (len(rows), n_classes) probabilities of `store`'s `rows` by
    `source` (the run, and what it classified). An object with a NaN or infinite probability gets no class: argmax
    made it a confident prediction of the first class, counted in accuracy, macro-F1 and the confusion matrix and
    written to the predictions file. NonFiniteError (exit 5) names those objects instead."""
    probs = np.asarray(probs)
    if probs.size == 0:  # an empty split (gathered as np.zeros(0), without a class axis)
        return np.zeros(0, dtype=np.int64)
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        from ..data.store import object_names
        from ..data.verify import shown_ids
        from .finite import NonFiniteError

        ids = [str(i) for i in object_names(store)[np.asarray(rows)[bad]]]
        shown = shown_ids(ids, 16)
        raise NonFiniteError(f"{source}: {len(ids)} object(s) got non-finite class probabilities (object_id "
                             f"{shown}); no class is given from those: `astrom3 verify` on the store names objects "
                             "whose values are not finite")
    return probs.argmax(axis=1)


def unlabelled_summary(y_pred: np.ndarray, names) -> dict:
    """What metrics.json says about the objects without a class: how many, and how many went to each class."""
    counts = np.bincount(y_pred, minlength=len(names))
    return {"n": int(len(y_pred)), "predicted": {c: int(n) for c, n in zip(names, counts)}}


def predictions_file(key: str) -> str:
    """The file a run writes one report's per-object predictions to: predictions.csv for the test set,
    predictions_test_full.csv, predictions_val.csv and predictions_unlabelled.csv (objects without a class, their
    true_class empty) beside it."""
    return "predictions.csv" if key == "test" else f"predictions_{key}.csv"


def write_predictions(path: str | Path, store, rows: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                      probs: np.ndarray, class_names=None) -> None:
    """One line per object (store row order): its id, true and predicted class, and the
    probability of every class. `class_names`: the model's classes (y_pred, probs), when they are not the
    store's (a model classifying another store's objects); the truth is always named by the store."""
    import csv
    import io

    from ..core.atomic import write_text
    from ..data.store import object_names

    truth_names = list(store.class_names)
    names = truth_names if class_names is None else list(class_names)
    ids = object_names(store)
    order = np.argsort(rows, kind="stable")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "object_id", "true_class", "predicted_class", *[f"p_{c}" for c in names]])
    for k in order:
        truth = truth_names[int(y_true[k])] if y_true[k] >= 0 else ""  # an unlabelled object
        w.writerow([int(rows[k]), ids[rows[k]], truth, names[int(y_pred[k])],
                    *[f"{float(x):.6g}" for x in probs[k]]])
    write_text(path, buf.getvalue())
