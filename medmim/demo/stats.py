"""Uncertainty of the demo's numbers: bootstrap confidence intervals over test cases, and
paired differences against the scratch encoder, read back from the commands' CSV outputs.

Percentile bootstrap (Efron & Tibshirani 1993, ch. 13): resample the test cases with
replacement `n` times, recompute the statistic, report the 2.5 and 97.5 percentiles. Paired
differences resample the SAME cases for both encoders, so case difficulty cancels out. With a
few dozen cases these intervals are wide, and that is the point: they say how much of a gap
between two encoders the data can resolve.

Clustered cases (the nodules of one phantom share its noise, contrast and anatomy) are not
independent: with `groups`, the bootstrap resamples whole groups (a cluster bootstrap; Field &
Welsh 2007), so the interval reflects the number of patients, not only of nodules.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

N_BOOT = 2000


@dataclass
class Estimate:
    """A statistic, its bootstrap 95 % interval and the number of cases it rests on."""

    value: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        """Whether the 95 % interval lies entirely above or below zero."""
        return bool(self.low > 0 or self.high < 0)


def _boot(
    stat: Callable[[np.ndarray], float],
    n_cases: int,
    seed: int,
    n: int = N_BOOT,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """`n` bootstrap values of `stat(indices)`: cases drawn with replacement or, with `groups`
    (N,), whole groups drawn with replacement and all their cases taken.
    """
    rng = np.random.default_rng(seed)
    members = None
    if groups is not None:
        _, inverse = np.unique(np.asarray(groups), return_inverse=True)
        members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    out = []
    for _ in range(n):
        if members is None:
            index = rng.integers(0, n_cases, n_cases)
        else:
            index = np.concatenate(
                [members[g] for g in rng.integers(0, len(members), len(members))]
            )
        value = stat(index)
        if np.isfinite(value):
            out.append(value)
    return np.asarray(out)


def _estimate(
    stat: Callable[[np.ndarray], float], n_cases: int, seed: int, groups: np.ndarray | None = None
) -> Estimate:
    value = stat(np.arange(n_cases))
    if groups is not None and len(np.unique(groups)) < 2:
        groups = None
    draws = _boot(stat, n_cases, seed, groups=groups) if n_cases > 1 else np.asarray([])
    if len(draws) == 0:
        return Estimate(float(value), float("nan"), float("nan"), n_cases)
    low, high = np.percentile(draws, [2.5, 97.5])
    return Estimate(float(value), float(low), float(high), n_cases)


def fast_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC of binary labels `y` (N,) in {0, 1} and scores `p` (N,), by the Mann-Whitney U
    statistic (ties count one half): AUC = (R_1 - n_1 (n_1 + 1) / 2) / (n_1 n_0), R_1 the rank
    sum of the positives. Equals `sklearn.metrics.roc_auc_score`, 20x faster on small N; NaN
    when a class is missing.
    """
    y = np.asarray(y)
    n1 = int(np.count_nonzero(y == 1))
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


_auc = fast_auc


def auc_ci(
    y: np.ndarray, p: np.ndarray, seed: int = 0, groups: np.ndarray | None = None
) -> Estimate:
    """ROC AUC of scores `p` (N,) for binary labels `y` (N,), with its bootstrap interval
    (over `groups` (N,) when given).
    """
    return _estimate(lambda i: _auc(y[i], p[i]), len(y), seed, groups)


def auc_delta(
    y: np.ndarray, pa: np.ndarray, pb: np.ndarray, seed: int = 0, groups: np.ndarray | None = None
) -> Estimate:
    """AUC(pa) - AUC(pb) on the same cases (paired bootstrap, over `groups` when given)."""
    return _estimate(lambda i: _auc(y[i], pa[i]) - _auc(y[i], pb[i]), len(y), seed, groups)


def mean_ci(x: np.ndarray, seed: int = 0) -> Estimate:
    """The mean of per-case values `x` (N,), with its bootstrap interval."""
    x = np.asarray(x, float)
    return _estimate(lambda i: float(np.mean(x[i])), len(x), seed)


def mean_delta(xa: np.ndarray, xb: np.ndarray, seed: int = 0) -> Estimate:
    """mean(xa) - mean(xb) over the same cases (paired bootstrap)."""
    d = np.asarray(xa, float) - np.asarray(xb, float)
    return _estimate(lambda i: float(np.mean(d[i])), len(d), seed)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_predictions(folder: Path) -> dict[str, tuple[int, float]]:
    """`medmim classify` test predictions at the largest fraction, averaged over the folds'
    models: {case id: (label, p(class 1))}.
    """
    rows = [r for r in _rows(folder / "predictions.csv") if r["part"] == "test"]
    if not rows:
        return {}
    largest = max(float(r["fraction"]) for r in rows)
    probs: dict[str, list[float]] = defaultdict(list)
    labels: dict[str, int] = {}
    for r in rows:
        if float(r["fraction"]) == largest:
            probs[r["id"]].append(float(r["prob_1"]))
            labels[r["id"]] = int(float(r["label"]))
    return {k: (labels[k], float(np.mean(v))) for k, v in sorted(probs.items())}


def segment_case_dice(folder: Path) -> dict[str, float]:
    """`medmim segment` per-case Dice, averaged over the classes present: {case: dice}."""
    per_case: dict[str, list[float]] = defaultdict(list)
    for r in _rows(folder / "per_case.csv"):
        value = float(r["dice"]) if r["dice"] not in ("", "nan") else float("nan")
        if np.isfinite(value):
            per_case[r["case"]].append(value)
    return {k: float(np.mean(v)) for k, v in sorted(per_case.items())}


def localize_cases(folder: Path, percentile: float) -> dict[str, dict[str, float]]:
    """`medmim localize` per case: dice, pointing, and what a random mask of the same size
    would score (`chance_dice` = 2 P R / (V (P + R)), `chance_pointing` = R / V, with P the
    predicted, R the reference and V = P / (1 - percentile / 100) the scored voxels).
    """
    out = {}
    for r in _rows(folder / "localize.csv"):
        p, ref = float(r["predicted_voxels"]), float(r["reference_voxels"])
        v = p / max(1e-9, 1.0 - percentile / 100.0)
        out[r["case"]] = {
            "dice": float(r["dice"]),
            "pointing": float(r["pointing"]),
            "chance_dice": 2 * p * ref / (v * (p + ref)) if v and p + ref else float("nan"),
            "chance_pointing": ref / v if v else float("nan"),
        }
    return dict(sorted(out.items()))


def paired(a: dict[str, float], b: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """The values of the cases both dicts hold, in the same order."""
    keys = sorted(set(a) & set(b))
    return np.asarray([a[k] for k in keys], float), np.asarray([b[k] for k in keys], float)
