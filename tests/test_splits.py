import numpy as np
import pytest

from astrom3_hpc.core.constants import CLASS_COUNTS, CLASS_NAMES
from astrom3_hpc.data.splits import all_splits, split_indices, subset_indices, subset_threshold

PAPER_TRAIN = {"DSCT": 206, "M": 216, "HADS": 226, "RRC": 624, "ROT": 1454, "EB": 1571, "RRAB": 1886,
               "EA": 2343, "SR": 3647, "EW": 4890}


@pytest.mark.parametrize("factor,t,total", [(2, 1209, 8526), (4, 516, 4260), (10, 166, 1660)])
def test_water_filling_matches_the_paper_test_vector(factor, t, total):
    counts = list(PAPER_TRAIN.values())
    assert sum(counts) == 17063
    assert subset_threshold(counts, factor) == t
    labels = np.repeat(np.arange(10), counts)
    sub = subset_indices(np.arange(len(labels)), labels, factor, seed=42)
    assert len(sub) == total
    per_class = np.bincount(labels[sub], minlength=10)
    assert per_class.max() == t
    assert np.all(per_class == np.minimum(counts, t))


def test_water_filling_can_fall_below_the_smallest_class():
    # Floor division, as the reference: a cap below every class is allowed.
    assert subset_threshold([10, 10, 10], 10) == -4  # (3 - 30) // 2 + 10
    # Such a cap would empty the split; one object per class is kept instead.
    labels = np.repeat(np.arange(3), 10)
    assert len(subset_indices(np.arange(30), labels, 10, seed=0)) == 3


def _paper_labels():
    return np.repeat(np.arange(10), [CLASS_COUNTS[c] for c in CLASS_NAMES])


def test_splits_are_disjoint_cover_and_stratified():
    labels = _paper_labels()
    valid = np.ones(len(labels), bool)
    valid[::97] = False
    s = split_indices(labels, valid, 42)
    allidx = np.concatenate(list(s.values()))
    assert len(np.unique(allidx)) == len(allidx) == valid.sum()
    assert set(np.intersect1d(s["train"], s["test"])) == set()
    for k, frac in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(len(s[k]) / valid.sum() - frac) < 0.01
        assert set(labels[s[k]]) == set(range(10))


def test_seeds_give_different_splits_and_subsets_nest_in_their_split():
    labels = _paper_labels()
    valid = np.ones(len(labels), bool)
    a, b = all_splits(labels, valid, 42), all_splits(labels, valid, 0)
    assert not np.array_equal(a["full"]["test"], b["full"]["test"])
    for sub in ("sub50", "sub25", "sub10"):
        for k in ("train", "val", "test"):
            assert np.isin(a[sub][k], a["full"][k]).all()
    # On the paper's class counts, sub10 train caps at about 166 per class (the paper's seed-42 value).
    per_class = np.bincount(labels[a["sub10"]["train"]], minlength=10)
    assert 160 <= per_class.max() <= 172
