"""Metric functions against hand-computed values and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from medmim.eval.metrics import (
    class_distances,
    classification_metrics,
    hungarian_accuracy,
    kmeans_scores,
    l2_normalize,
    mean_std,
    roc_curves,
)


def binary(p1: list[float]) -> np.ndarray:
    p1 = np.asarray(p1)
    return np.stack([1 - p1, p1], axis=1)


def test_binary_metrics_known_values() -> None:
    # The textbook example: AUC 0.75, AP 0.8333; at 0.5 only the last is called positive.
    m = classification_metrics([0, 0, 1, 1], binary([0.1, 0.4, 0.35, 0.8]))
    assert m["auc"] == pytest.approx(0.75)
    assert m["average_precision"] == pytest.approx(5 / 6)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(0.5)
    assert list(m) == ["auc", "accuracy", "average_precision", "precision", "recall"]


def test_threshold_is_inclusive_at_one_half() -> None:
    m = classification_metrics([0, 1], binary([0.2, 0.5]))
    assert m["recall"] == 1.0 and m["precision"] == 1.0


def test_multiclass_matches_sklearn_one_vs_rest() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    probs = rng.dirichlet(np.ones(4), size=40)
    probs[np.arange(40), y] += 0.3
    probs /= probs.sum(1, keepdims=True)
    m = classification_metrics(y, probs)
    assert m["auc"] == pytest.approx(
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro")
    )
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))
    assert m["precision"] == pytest.approx(skm.precision_score(y, probs.argmax(1), average="macro"))
    assert m["recall"] == pytest.approx(skm.recall_score(y, probs.argmax(1), average="macro"))
    onehot = np.eye(4)[y]
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(onehot, probs))


def test_single_class_gives_nan_auc_with_warning() -> None:
    with pytest.warns(UserWarning, match="only one class"):
        m = classification_metrics([1, 1, 1], binary([0.6, 0.7, 0.2]))
    assert math.isnan(m["auc"]) and math.isnan(m["average_precision"])
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_bad_shapes_are_explained() -> None:
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        classification_metrics([0, 1], np.array([0.2, 0.8]))
    with pytest.raises(ValueError, match="labels must lie in"):
        classification_metrics([0, 2], binary([0.2, 0.8]))


def test_roc_curves() -> None:
    curves = roc_curves([0, 0, 1, 1], binary([0.1, 0.4, 0.35, 0.8]))
    fpr, tpr = curves["positive"]
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)
    y = np.array([0, 1, 2, 2])
    multi = roc_curves(y, np.eye(3)[y] * 0.7 + 0.1)
    assert set(multi) == {"class 0", "class 1", "class 2", "micro"}


def test_class_distances_toy_configuration() -> None:
    # class 0: (0,0), (2,0) -> intra 2, centroid (1,0)
    # class 1: (1,3), (1,5), (1,4) -> pairwise 2, 1, 1 -> intra 4/3, centroid (1,4)
    # class 2: (5,0) alone -> intra NaN, centroid (5,0)
    x = np.array([[0, 0], [2, 0], [1, 3], [1, 5], [1, 4], [5, 0]], dtype=float)
    y = np.array([0, 0, 1, 1, 1, 2])
    d = class_distances(x, y)
    assert d.classes.tolist() == [0, 1, 2]
    assert d.intra[0] == pytest.approx(2.0) and d.intra[1] == pytest.approx(4 / 3)
    assert math.isnan(d.intra[2])
    expected = np.array([[0, 4, 4], [4, 0, math.sqrt(32)], [4, math.sqrt(32), 0]])
    np.testing.assert_allclose(d.inter, expected)
    s = d.summary()
    assert s["intra_mean"] == pytest.approx(5 / 3) and s["intra_std"] == pytest.approx(1 / 3)
    pairs = np.array([4, 4, math.sqrt(32)])
    assert s["inter_mean"] == pytest.approx(pairs.mean())
    assert s["inter_std"] == pytest.approx(pairs.std())


def test_normalized_distances_are_on_the_unit_sphere() -> None:
    x = np.array([[3, 0], [10, 0], [0, 2], [0, 7]], dtype=float)
    y = np.array([0, 0, 1, 1])
    d = class_distances(x, y, normalize=True)
    # After L2 normalisation the classes collapse onto (1,0) and (0,1).
    np.testing.assert_allclose(d.intra, [0, 0], atol=1e-12)
    assert d.inter[0, 1] == pytest.approx(math.sqrt(2))
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(x), axis=1), 1.0)


def test_hungarian_accuracy() -> None:
    assert hungarian_accuracy(
        np.array([0, 0, 1, 1, 2, 2]), np.array([1, 1, 0, 0, 2, 0])
    ) == pytest.approx(5 / 6)
    assert hungarian_accuracy(np.array([5, 5, 7]), np.array([9, 9, 3])) == 1.0


def test_kmeans_scores_on_separated_and_mixed_blobs() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 15)
    centers = np.array([[0, 0], [10, 0], [0, 10]])
    x = centers[y] + rng.normal(0, 0.3, (45, 2))
    s = kmeans_scores(x, y)
    assert s == {
        "nmi": pytest.approx(1.0),
        "ari": pytest.approx(1.0),
        "fmi": pytest.approx(1.0),
        "hungarian_accuracy": pytest.approx(1.0),
    }
    noise = kmeans_scores(rng.normal(size=(45, 2)), y)
    assert noise["ari"] < 0.2 and noise["nmi"] < 0.3


def test_mean_std_skips_nan() -> None:
    assert mean_std([1.0, 3.0, float("nan")]) == {"mean": 2.0, "std": 1.0}
    out = mean_std([float("nan")])
    assert math.isnan(out["mean"]) and math.isnan(out["std"])
