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

Groups (several samples of one patient, e.g. the nodules of one phantom): with `groups`, every
split the protocol makes keeps a group on one side, so no patient feeds both training and
evaluation (otherwise the folds leak and cross-validation is optimistic). `StratifiedGroupKFold`
(shuffled with the seed) replaces the sample-level splitters: the test hold-out is the first fold
of a `max(2, round(1 / test_size))`-fold split, the k folds are its k folds, and `folds=1` takes
the first fold of a 5-fold split (fewer when there are fewer than 5 groups, at least 2). The
stratification is then approximate (whole groups move), so a part may lack a rare class: that is
logged as a warning, and a training part with fewer than two classes is an error. The source's
own `test` / `val` splits are kept as they are; groups they share with the rest are logged.
Training fractions subsample the train part and so stay inside it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from medmim.errors import ConfigError

log = logging.getLogger(__name__)
#: Help that every grouped-split error ends with.
_GROUP_FIX = "or pass `group_key=none` to split samples instead of groups"


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


def group_folds(
    index: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    n_splits: int,
    seed: int,
    what: str,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`StratifiedGroupKFold(n_splits, shuffle=True)` over `index`: (train, test) index pairs.

    Args:
        index: the indices to split (into `labels` / `groups`).
        labels: (N,) labels of the whole set.
        groups: (N,) group ids of the whole set (a group never straddles a pair).
        n_splits: folds of the split.
        seed: its random_state.
        what: the option asking for it, for the error message.

    Returns:
        `n_splits` (train, test) pairs of sorted indices; the test parts partition `index`.
    """
    n_groups = len(np.unique(groups[index]))
    if n_groups < n_splits:
        raise ConfigError(
            f"{what} needs at least {n_splits} groups (patients) but the data holds "
            f"{n_groups}; lower it, {_GROUP_FIX}"
        )
    counts = np.bincount(labels[index])
    if counts.max() < n_splits:
        raise ConfigError(
            f"{what} needs a class with at least {n_splits} samples; class counts "
            f"{counts[counts > 0].tolist()}; lower it"
        )
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Rare classes are reported per part by `_check_parts`, which knows which part lacks one.
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        pairs = list(sgkf.split(index, labels[index], groups[index]))
    return [(np.sort(index[tr]), np.sort(index[te])) for tr, te in pairs]


def held_out_test(
    labels: np.ndarray,
    split: np.ndarray,
    test_size: float,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`(development, test)` indices: the source's test split, else a stratified hold-out.

    Args:
        labels: (N,) int labels.
        split: (N,) the source's split names ('' = none).
        test_size: hold-out share (0 = no test set).
        seed: seeds the hold-out.
        groups: (N,) group ids; the hold-out then keeps every group on one side (the first fold
            of a `max(2, round(1 / test_size))`-fold `StratifiedGroupKFold`).

    Returns:
        Sorted development and test indices.
    """
    everything = np.arange(len(labels))
    if (split == "test").any():
        return everything[split != "test"], everything[split == "test"]
    if test_size <= 0:
        return everything, everything[:0]
    _check_counts(labels, 2, f"a stratified test hold-out of {test_size}")
    if groups is not None:
        n_splits = max(2, int(round(1.0 / test_size)))
        what = f"`test_size={test_size}` (a grouped {n_splits}-fold hold-out)"
        return group_folds(everything, labels, groups, n_splits, seed, what)[0]
    dev, test = train_test_split(
        everything, test_size=test_size, stratify=labels, random_state=seed
    )
    return np.sort(dev), np.sort(test)


def _warn_shared_groups(groups: np.ndarray, a: np.ndarray, b: np.ndarray, what: str) -> None:
    shared = np.intersect1d(groups[a], groups[b])
    if len(shared):
        log.warning(
            "%d group(s) lie in both %s (e.g. %s): that split comes from the source and is kept",
            len(shared),
            what,
            ", ".join(str(g) for g in shared[:3]),
        )


def _check_parts(
    pairs: list[tuple[np.ndarray, np.ndarray]], test: np.ndarray, labels: np.ndarray
) -> None:
    """Grouped parts: no empty part, >= 2 classes to train on; a class missing elsewhere is
    logged (its AUC is then undefined).
    """
    classes = np.unique(labels)
    parts = [("test", test)] if len(test) else []
    for fold, (train, val) in enumerate(pairs):
        if len(train) == 0 or len(val) == 0:
            raise ConfigError(
                f"grouped fold {fold} has an empty {'train' if len(train) == 0 else 'val'} "
                f"part; lower `folds`, {_GROUP_FIX}"
            )
        if len(np.unique(labels[train])) < 2:
            raise ConfigError(
                f"grouped fold {fold}'s train part holds only class {labels[train][0]}: its "
                f"groups carry a single class; lower `folds`, {_GROUP_FIX}"
            )
        parts += [(f"fold {fold} train", train), (f"fold {fold} val", val)]
    for name, part in parts:
        missing = np.setdiff1d(classes, labels[part])
        if len(missing):
            log.warning(
                "grouped split: %s holds no sample of class(es) %s (whole groups move, so "
                "stratification is approximate)",
                name,
                missing.tolist(),
            )


def make_splits(
    labels: np.ndarray,
    split: np.ndarray | None = None,
    folds: int = 5,
    fractions: Sequence[float] = (1.0,),
    test_size: float = 0.2,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> list[Split]:
    """Every (fold, fraction) training run of the protocol in the module docstring.

    Args:
        labels: (N,) int labels.
        split: (N,) 'train' / 'val' / 'test' / '' from the source (None = no fixed splits).
        folds: k of the stratified k-fold (1 = a single train / val split).
        fractions: training-data shares, e.g. (0.25, 0.5, 1.0).
        test_size: hold-out share when the source has no test split (0 = no test set).
        seed: seeds the test hold-out, the folds and the fraction subsets.
        groups: (N,) group ids (patients); None = split samples. With groups, no group lies on
            both sides of the test hold-out or of any fold.

    Returns:
        The runs, fraction-major: `len(fractions) * max(folds, 1)` splits.
    """
    labels = np.asarray(labels, dtype=np.int64)
    split = np.full(len(labels), "") if split is None else np.asarray(split)
    if groups is not None:
        groups = np.asarray(groups)
        if len(groups) != len(labels):
            raise ConfigError(f"{len(groups)} group ids for {len(labels)} samples")
    if folds < 1:
        raise ConfigError(f"`folds={folds}`: use 1 (a single train/val split) or k >= 2")
    dev, test = held_out_test(labels, split, test_size, seed, groups)
    if groups is not None and (split == "test").any():
        _warn_shared_groups(groups, dev, test, "the source's test split and the rest")
    pairs: list[tuple[np.ndarray, np.ndarray]]
    if folds == 1 and (split[dev] == "val").any():
        pairs = [(dev[split[dev] != "val"], dev[split[dev] == "val"])]
        if groups is not None:
            _warn_shared_groups(groups, *pairs[0], "the source's val and train splits")
    elif folds == 1:
        _check_counts(labels[dev], 2, "a stratified validation split")
        if groups is not None:
            n_splits = max(2, min(5, len(np.unique(groups[dev]))))
            what = f"`folds=1` (a grouped validation split, 1 of {n_splits} folds)"
            pairs = group_folds(dev, labels, groups, n_splits, seed, what)[:1]
        else:
            tr, va = train_test_split(dev, test_size=0.2, stratify=labels[dev], random_state=seed)
            pairs = [(np.sort(tr), np.sort(va))]
    else:
        _check_counts(labels[dev], folds, f"`folds={folds}`")
        if groups is not None:
            pairs = group_folds(dev, labels, groups, folds, seed, f"`folds={folds}`")
        else:
            kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            pairs = [(dev[tr], dev[va]) for tr, va in kfold.split(dev, labels[dev])]
    if groups is not None:
        _check_parts(pairs, test, labels)
    return [
        Split(fold, float(f), stratified_subset(train, labels, f, seed + fold), val, test)
        for f in sorted(set(fractions))
        for fold, (train, val) in enumerate(pairs)
    ]
