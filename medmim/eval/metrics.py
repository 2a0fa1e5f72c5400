"""Downstream metrics: classification scores, ROC data, class-separation distances, k-means scores.

Classification (SMART sec. 4.4 and Tables 2-3; PUMIT Table 2) uses scikit-learn:

- `auc`: area under the ROC curve. Binary: of the positive class (label 1). Multi-class:
  one-vs-rest, macro-averaged over classes (the MedMNIST `Evaluator` convention).
- `accuracy`: fraction of argmax predictions equal to the label.
- `average_precision`: area under the precision-recall curve (binary: positive class;
  multi-class: one-vs-rest, macro).
- `precision`, `recall` "at 0.5" (the papers' AP50 / AR50): binary: the positive class predicted
  when its probability is >= 0.5; multi-class: the argmax prediction, macro-averaged over classes.

Class separation of embeddings (SMART sec. 4.4, Table 1: "inter-cluster and intra-cluster
distance, computed using the Euclidean distance of different classes", reported as mean +- std).
The paper gives no formula; medmim fixes these definitions (see `class_distances`):

- intra-class distance of class c: the mean Euclidean distance over all unordered pairs of
  distinct samples of class c, ``intra(c) = 2 / (n_c (n_c - 1)) * sum_{i<j in c} ||x_i - x_j||``.
- inter-class distance of classes a != b: the Euclidean distance between their centroids,
  ``inter(a, b) = ||mu_a - mu_b||`` with ``mu_c = mean_{i in c} x_i``.
- reported: mean +- std (population std) of intra over the classes, and of inter over the
  C (C - 1) / 2 unordered class pairs. Lower intra and higher inter = better separation.

Which space the distances live in is a choice the paper does not state: `medmim cluster` reports
them both on the L2-normalised embeddings (every distance in [0, 2], comparable across encoders
of different widths) and on the 2-D UMAP coordinates that the paper plots (Fig. 3; its values,
1-6, are on that scale). Unsupervised clustering quality follows the iBOT convention: k-means on
the embeddings, then NMI, ARI, FMI and Hungarian-matched accuracy against the labels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import pdist
from sklearn import metrics as skm
from sklearn.cluster import KMeans

CLASSIFICATION_METRICS = ("auc", "accuracy", "average_precision", "precision", "recall")


def _check_probs(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(int).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != y_true.shape[0] or probs.shape[1] < 2:
        raise ValueError(
            f"probs must be (N, K) with K >= 2 class probabilities for N={y_true.shape[0]} "
            f"labels; got shape {probs.shape}"
        )
    if y_true.min() < 0 or y_true.max() >= probs.shape[1]:
        raise ValueError(f"labels must lie in [0, {probs.shape[1] - 1}]; got {sorted(set(y_true))}")
    return y_true, probs


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """AUC, accuracy, average precision, precision and recall at 0.5 (see the module docstring).

    Args:
        y_true: (N,) integer labels in [0, K).
        probs: (N, K) class probabilities (rows sum to 1).

    Returns:
        `{"auc", "accuracy", "average_precision", "precision", "recall"}` as floats. AUC and
        average precision are NaN (with a warning) when `y_true` holds a single class.
    """
    y_true, probs = _check_probs(y_true, probs)
    k = probs.shape[1]
    out = {"accuracy": float(skm.accuracy_score(y_true, probs.argmax(1)))}
    if k == 2:
        pred = (probs[:, 1] >= 0.5).astype(int)
        out["precision"] = float(skm.precision_score(y_true, pred, zero_division=0))
        out["recall"] = float(skm.recall_score(y_true, pred, zero_division=0))
    else:
        pred = probs.argmax(1)
        labels = np.arange(k)
        kw = {"labels": labels, "average": "macro", "zero_division": 0}
        out["precision"] = float(skm.precision_score(y_true, pred, **kw))
        out["recall"] = float(skm.recall_score(y_true, pred, **kw))
    present = np.unique(y_true)
    if present.size < 2:
        warnings.warn(
            "only one class present: AUC and average precision are undefined (NaN)", stacklevel=2
        )
        out["auc"] = out["average_precision"] = float("nan")
    elif k == 2:
        out["auc"] = float(skm.roc_auc_score(y_true, probs[:, 1]))
        out["average_precision"] = float(skm.average_precision_score(y_true, probs[:, 1]))
    else:
        onehot = np.eye(k)[y_true][:, present]
        out["auc"] = float(skm.roc_auc_score(onehot, probs[:, present], average="macro"))
        out["average_precision"] = float(
            skm.average_precision_score(onehot, probs[:, present], average="macro")
        )
    return {name: out[name] for name in CLASSIFICATION_METRICS}


def roc_curves(y_true: np.ndarray, probs: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """ROC curve points, `{name: (fpr, tpr)}`.

    Binary: one curve, "positive" (class 1). Multi-class: one one-vs-rest curve per class present
    ("class <k>") and the "micro" average over all (sample, class) decisions.
    """
    y_true, probs = _check_probs(y_true, probs)
    if probs.shape[1] == 2:
        fpr, tpr, _ = skm.roc_curve(y_true, probs[:, 1])
        return {"positive": (fpr, tpr)}
    onehot = np.eye(probs.shape[1])[y_true]
    curves = {}
    for c in np.unique(y_true):
        fpr, tpr, _ = skm.roc_curve(onehot[:, c], probs[:, c])
        curves[f"class {c}"] = (fpr, tpr)
    fpr, tpr, _ = skm.roc_curve(onehot.ravel(), probs.ravel())
    curves["micro"] = (fpr, tpr)
    return curves


@dataclass
class ClassDistances:
    """Intra- and inter-class Euclidean distances (definitions in the module docstring).

    Attributes:
        classes: (C,) the class labels, sorted.
        intra: (C,) mean pairwise distance within each class (NaN for a class of one sample).
        inter: (C, C) centroid distances, symmetric, zero diagonal.
    """

    classes: np.ndarray
    intra: np.ndarray
    inter: np.ndarray

    def summary(self) -> dict[str, float]:
        """`intra_mean`, `intra_std` over classes; `inter_mean`, `inter_std` over class pairs."""
        pairs = self.inter[np.triu_indices(len(self.classes), k=1)]
        intra = self.intra[~np.isnan(self.intra)]
        return {
            "intra_mean": float(intra.mean()) if intra.size else float("nan"),
            "intra_std": float(intra.std()) if intra.size else float("nan"),
            "inter_mean": float(pairs.mean()) if pairs.size else float("nan"),
            "inter_std": float(pairs.std()) if pairs.size else float("nan"),
        }


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of `x` (N, C) scaled to unit Euclidean norm."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def class_distances(x: np.ndarray, labels: np.ndarray, normalize: bool = False) -> ClassDistances:
    """Intra-class (mean pairwise) and inter-class (centroid) Euclidean distances.

    Args:
        x: (N, C) embeddings (or (N, 2) UMAP coordinates).
        labels: (N,) class labels.
        normalize: L2-normalise each row first (then every distance lies in [0, 2]).

    Returns:
        A `ClassDistances`; `.summary()` gives the mean +- std the SMART paper reports.
    """
    x = l2_normalize(x) if normalize else np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if x.ndim != 2 or x.shape[0] != labels.shape[0]:
        raise ValueError(f"x must be (N, C) with N={labels.shape[0]}; got {x.shape}")
    classes = np.unique(labels)
    intra = np.array(
        [pdist(x[labels == c]).mean() if (labels == c).sum() > 1 else np.nan for c in classes]
    )
    centroids = np.stack([x[labels == c].mean(0) for c in classes])
    inter = np.linalg.norm(centroids[:, None] - centroids[None], axis=-1)
    return ClassDistances(classes=classes, intra=intra, inter=inter)


def hungarian_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Accuracy after the best one-to-one matching of cluster ids to labels (Hungarian)."""
    labels = np.unique(labels, return_inverse=True)[1]
    clusters = np.unique(clusters, return_inverse=True)[1]
    table = np.zeros((clusters.max() + 1, labels.max() + 1), dtype=np.int64)
    np.add.at(table, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / labels.size)


def kmeans_scores(
    x: np.ndarray, labels: np.ndarray, n_clusters: int | None = None, seed: int = 0
) -> dict[str, float]:
    """k-means on `x` (N, C), scored against `labels` (N,): NMI, ARI, FMI, Hungarian accuracy.

    Args:
        x: (N, C) embeddings (normalise them first if cosine geometry is wanted).
        labels: (N,) class labels.
        n_clusters: number of clusters; default = number of classes present.
        seed: k-means `random_state`.
    """
    labels = np.asarray(labels).reshape(-1)
    k = int(n_clusters or np.unique(labels).size)
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    return {
        "nmi": float(skm.normalized_mutual_info_score(labels, clusters)),
        "ari": float(skm.adjusted_rand_score(labels, clusters)),
        "fmi": float(skm.fowlkes_mallows_score(labels, clusters)),
        "hungarian_accuracy": hungarian_accuracy(labels, clusters),
    }


def mean_std(values: list[float] | np.ndarray) -> dict[str, float]:
    """`{"mean", "std"}` of finite values (population std; NaN when none is finite)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": float("nan"), "std": float("nan")}
    return {"mean": float(v.mean()), "std": float(v.std())}
