"""Splits for classification: held-out test, stratified k folds, limited-data training fractions.

The protocol (SMART sec. 4.2 "3-fold stratified cross validation ... and used the rest as test
set"; sec. 5.6 "randomly sampled examples from the respective training sets at 25% and 50%"):

1. test: the source's own `test` split when it has one (MedMNIST npz, a CSV `split` column),
   else a stratified `test_size` hold-out. It is never used for training or model selection.
2. folds: `StratifiedKFold(folds, shuffle=True)` over the rest (the development set) gives
   (train, val) pairs. `folds=1` means one (train, val) pair: the source's `val` split when it
   has one (the MedMNIST official split), else a stratified 20 % of the development set.
3. fractions: for each fold, a stratified subset of its train part holding `round(f * n_c)`
   (at least 1) samples of each class c. Subsets are nested (the 25 % subset lies inside the 50 %
   one) because every fraction takes the head of the same per-class permutation; val and test
   are untouched, so every training subset is disjoint from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from medmim.errors import ConfigError


@dataclass(frozen=True)
class Split:
    """One training run of the protocol.

    Attributes:
        fold: fold number (0-based).
        fraction: share of the fold's training part used.
        train: indices to train on.
        val: indices for model selection (fold validation part).
        test: indices of the held-out test set (the same for every split).
    """

    fold: int
    fraction: float
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def stratified_subset(
    index: np.ndarray, labels: np.ndarray, fraction: float, seed: int = 0
) -> np.ndarray:
    """`round(fraction * n_c)` (>= 1) of each class c among `index`; nested across fractions.

    Args:
        index: candidate indices into `labels`.
        labels: (N,) labels of the whole set.
        fraction: in (0, 1].
        seed: the per-class permutation (the same seed gives nested subsets).

    Returns:
        The chosen indices, sorted.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"training fraction {fraction} must lie in (0, 1]")
    rng = np.random.default_rng(seed)
    index = np.asarray(index, dtype=np.int64)
    chosen = []
    for c in np.unique(labels[index]):
        members = index[labels[index] == c]
        members = members[rng.permutation(len(members))]
        chosen.append(members[: max(1, int(round(fraction * len(members))))])
    return np.sort(np.concatenate(chosen))


def _check_counts(labels: np.ndarray, need: int, what: str) -> None:
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    if counts.min() < need:
        raise ConfigError(
            f"{what} needs at least {need} samples of every class; the smallest "
            f"class has {counts.min()} (class counts {counts.tolist()}); lower it"
        )


def held_out_test(
    labels: np.ndarray, split: np.ndarray, test_size: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`(development, test)` indices: the source's test split, else a stratified hold-out."""
    everything = np.arange(len(labels))
    if (split == "test").any():
        return everything[split != "test"], everything[split == "test"]
    if test_size <= 0:
        return everything, everything[:0]
    _check_counts(labels, 2, f"a stratified test hold-out of {test_size}")
    dev, test = train_test_split(
        everything, test_size=test_size, stratify=labels, random_state=seed
    )
    return np.sort(dev), np.sort(test)


def make_splits(
    labels: np.ndarray,
    split: np.ndarray | None = None,
    folds: int = 5,
    fractions: Sequence[float] = (1.0,),
    test_size: float = 0.2,
    seed: int = 0,
) -> list[Split]:
    """Every (fold, fraction) training run of the protocol in the module docstring.

    Args:
        labels: (N,) int labels.
        split: (N,) 'train' / 'val' / 'test' / '' from the source (None = no fixed splits).
        folds: k of the stratified k-fold (1 = a single train / val split).
        fractions: training-data shares, e.g. (0.25, 0.5, 1.0).
        test_size: hold-out share when the source has no test split (0 = no test set).
        seed: seeds the test hold-out, the folds and the fraction subsets.
    """
    labels = np.asarray(labels, dtype=np.int64)
    split = np.full(len(labels), "") if split is None else np.asarray(split)
    if folds < 1:
        raise ConfigError(f"--folds {folds}: use 1 (a single train/val split) or k >= 2")
    dev, test = held_out_test(labels, split, test_size, seed)
    pairs: list[tuple[np.ndarray, np.ndarray]]
    if folds == 1 and (split[dev] == "val").any():
        pairs = [(dev[split[dev] != "val"], dev[split[dev] == "val"])]
    elif folds == 1:
        _check_counts(labels[dev], 2, "a stratified validation split")
        tr, va = train_test_split(dev, test_size=0.2, stratify=labels[dev], random_state=seed)
        pairs = [(np.sort(tr), np.sort(va))]
    else:
        _check_counts(labels[dev], folds, f"--folds {folds}")
        kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        pairs = [(dev[tr], dev[va]) for tr, va in kfold.split(dev, labels[dev])]
    return [
        Split(fold, float(f), stratified_subset(train, labels, f, seed + fold), val, test)
        for f in sorted(set(fractions))
        for fold, (train, val) in enumerate(pairs)
    ]
