"""Held-out test, stratified folds and limited-data fractions: counts, strata, disjointness."""

from __future__ import annotations

import numpy as np
import pytest

from medmim.errors import ConfigError
from medmim.eval.splits import make_splits, stratified_subset

LABELS = np.array([0] * 40 + [1] * 20)


def test_fraction_subsets_are_stratified_nested_and_exact() -> None:
    index = np.arange(60)
    quarter = stratified_subset(index, LABELS, 0.25, seed=3)
    half = stratified_subset(index, LABELS, 0.5, seed=3)
    assert np.bincount(LABELS[quarter]).tolist() == [10, 5]
    assert np.bincount(LABELS[half]).tolist() == [20, 10]
    assert set(quarter) <= set(half)
    assert stratified_subset(index, LABELS, 1.0).tolist() == index.tolist()
    # A tiny class keeps at least one sample.
    assert np.bincount(LABELS[stratified_subset(index, LABELS, 0.01)]).tolist() == [1, 1]
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        stratified_subset(index, LABELS, 1.5)


def test_kfold_with_fractions_is_disjoint_from_val_and_test() -> None:
    splits = make_splits(LABELS, folds=5, fractions=[0.25, 0.5, 1.0], test_size=0.25, seed=0)
    assert len(splits) == 15
    test = splits[0].test
    assert np.bincount(LABELS[test]).tolist() == [10, 5]  # stratified 25 % hold-out
    full = [s for s in splits if s.fraction == 1.0]
    # The 5 validation parts partition the development set.
    vals = np.concatenate([s.val for s in full])
    assert sorted(vals.tolist()) == sorted(set(range(60)) - set(test.tolist()))
    for s in splits:
        assert np.array_equal(s.test, test)
        assert not set(s.train) & set(s.val) and not set(s.train) & set(s.test)
        assert not set(s.val) & set(s.test)
        counts = np.bincount(LABELS[s.train], minlength=2)
        assert counts[0] == pytest.approx(2 * counts[1], abs=1)  # 2:1, as in the whole set
    for fold in range(5):
        by_f = {s.fraction: set(s.train) for s in splits if s.fold == fold}
        assert by_f[0.25] <= by_f[0.5] <= by_f[1.0]
        assert len(by_f[0.5]) == pytest.approx(len(by_f[1.0]) / 2, abs=1)


def test_source_splits_are_respected() -> None:
    split = np.array(["train"] * 40 + ["val"] * 10 + ["test"] * 10)
    labels = np.tile([0, 1], 30)
    (only,) = make_splits(labels, split, folds=1)
    assert only.test.tolist() == list(range(50, 60))
    assert only.val.tolist() == list(range(40, 50))
    assert only.train.tolist() == list(range(40))
    # With k folds the source's val joins the development set; its test stays the test.
    cv = make_splits(labels, split, folds=2)
    assert all(s.test.tolist() == list(range(50, 60)) for s in cv)
    assert sorted(np.concatenate([s.val for s in cv]).tolist()) == list(range(50))


def test_no_test_set_and_errors() -> None:
    (s,) = make_splits(LABELS, folds=1, test_size=0)
    assert len(s.test) == 0 and len(s.val) == 12 and len(s.train) == 48
    with pytest.raises(ConfigError, match="smallest class has 3"):
        make_splits(np.array([0] * 10 + [1] * 3), folds=5, test_size=0)
    with pytest.raises(ConfigError, match="`folds=0`: use 1"):
        make_splits(LABELS, folds=0)
