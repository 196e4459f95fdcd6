"""classification_report's per-class recall and macro-F1 on cases small enough to check by hand and against
scikit-learn, with classes the test set lacks (docs/collect.md: macro-F1 over the classes y_true holds)."""

from __future__ import annotations

import numpy as np
import pytest

from astrom3_hpc.train.evaluate import classification_report

NAMES = ["a", "b", "c", "d"]
# a: 3 true, 1 right, predicted once; b: 2 true, 1 right, predicted 3 times; c: 1 true, right, predicted twice;
# d: neither true nor predicted. So recall a, b, c = 1/3, 1/2, 1 and precision = 1, 1/3, 1/2: the two differ for
# every class, and F1 = 1/2, 2/5, 2/3.
Y = [0, 0, 0, 1, 1, 2]
P = [0, 1, 1, 1, 2, 2]


def test_recall_and_macro_f1_by_hand_with_a_class_absent_from_the_test_set():
    """Catches recall divided by the predicted counts (it was precision under recall's name; macro-F1, symmetric in
    the two, did not move) and macro-F1 averaged over all four classes, the absent d's zero included."""
    rep = classification_report(Y, P, NAMES)
    assert rep["per_class_recall"] == pytest.approx({"a": 1 / 3, "b": 1 / 2, "c": 1.0})
    assert rep["macro_f1"] == pytest.approx((1 / 2 + 2 / 5 + 2 / 3) / 3)
    assert rep["accuracy"] == pytest.approx(3 / 6) and rep["n"] == 6


def test_recall_and_macro_f1_match_scikit_learn_over_the_classes_present():
    """The same two faults on random cases: some classes never true, some never predicted, some neither."""
    from sklearn import metrics  # the [test] extra: a missing one fails, never skips
    rng = np.random.default_rng(0)
    cases = [(np.array(Y), np.array(P), 4)]
    for _ in range(20):
        k = int(rng.integers(3, 8))
        y = rng.choice(rng.choice(k, k - 1, replace=False), 30)
        cases.append((y, np.where(rng.random(30) < 0.5, y, rng.integers(0, k, 30)), k))
    for y, p, k in cases:
        names = [f"c{i}" for i in range(k)]
        present = sorted(set(y.tolist()))
        rep = classification_report(y, p, names)
        recall = metrics.recall_score(y, p, labels=present, average=None, zero_division=0)
        f1 = metrics.f1_score(y, p, labels=present, average="macro", zero_division=0)
        assert rep["per_class_recall"] == pytest.approx({names[c]: r for c, r in zip(present, recall)})
        assert rep["macro_f1"] == pytest.approx(f1)
