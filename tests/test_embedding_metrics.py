"""Frozen-embedding metrics of pretraining (train/evaluate.py): the same values computed in bounded blocks as from
the whole score matrix, which a survey's validation split (10^5 objects: 40 GB) cannot hold."""

from __future__ import annotations

import numpy as np
import pytest

from astrom3_hpc.train import evaluate


def _whole_matrix_top1(a, b):
    sim = a @ b.T
    idx = np.arange(len(a))
    return float(((sim.argmax(1) == idx).mean() + (sim.argmax(0) == idx).mean()) / 2)


def _whole_matrix_knn1(tr, ytr, te, yte):
    tr = tr / np.linalg.norm(tr, axis=1, keepdims=True)
    te = te / np.linalg.norm(te, axis=1, keepdims=True)
    return float((ytr[(te @ tr.T).argmax(1)] == yte).mean())


@pytest.mark.parametrize("n", [1, 7, 500])
def test_blocked_metrics_equal_the_whole_matrix_and_hold_only_a_block(n, monkeypatch):
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, 16)).astype(np.float32)
    b = (a + 1.5 * rng.normal(size=(n, 16))).astype(np.float32)
    y = rng.integers(0, 4, n)
    want_top1, want_knn = _whole_matrix_top1(a, b), _whole_matrix_knn1(a, y, b, y)
    # Blocks of 3 rows or columns: what a store 10^4 times larger gets from the default budget.
    monkeypatch.setattr(evaluate, "SCORE_BLOCK_BYTES", 4 * n * 3)
    seen = []
    real_matmul = np.ndarray.__matmul__

    class Spy(np.ndarray):
        def __matmul__(self, other):
            out = real_matmul(np.asarray(self), np.asarray(other))
            seen.append(out.size)
            return out

    assert evaluate.retrieval_top1(a.view(Spy), b.view(Spy)) == want_top1
    assert evaluate.knn1_accuracy(a, y, b, y) == want_knn
    assert seen and max(seen) <= 3 * n  # never the (n, n) matrix (n > 3)


def test_centroid_accuracy_never_predicts_a_class_without_train_objects():
    """Catches a class absent from train scored by a zero centroid: a test object at negative cosine to every real
    centroid went to it (reviewer's case: 0.683 against 0.717 when only classes with a centroid compete)."""
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    ytr = np.array([0, 1])
    test = np.array([[-0.2, -1.0], [0.9, 0.1]])  # the first: negative cosine to both centroids, nearer class 0
    assert evaluate.centroid_accuracy(train, ytr, test, np.array([0, 0]), n_classes=10) == 1.0
    assert np.isnan(evaluate.centroid_accuracy(train[:0], ytr[:0], test, np.array([0, 0]), n_classes=10))
