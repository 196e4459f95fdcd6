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
