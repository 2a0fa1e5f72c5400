"""`medmim cluster` on tiny labelled crops: distances, k-means, the 2-D map, outputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from _toy_data import write_medmnist, write_scratch_spec

from medmim.eval.cluster import ClusterConfig, cluster_metrics, project_2d, run_cluster


@pytest.fixture(scope="module")
def organs(tmp_path_factory) -> object:
    return write_medmnist(
        tmp_path_factory.mktemp("organ") / "organ.npz", counts=(9, 3, 6), classes=3
    )


def test_cluster_end_to_end_with_pca(tmp_path, organs) -> None:
    spec = write_scratch_spec(tmp_path / "arch")
    cfg = ClusterConfig(
        feature="pooled", projection="pca", progress=False, class_names=["liver", "kidney", "heart"]
    )
    metrics = run_cluster(f"scratch:{spec}", organs, tmp_path / "out", cfg)
    out = tmp_path / "out"
    assert set(metrics) == {
        "embedding/intra",
        "embedding/inter",
        "pca/intra",
        "pca/inter",
        "kmeans/nmi",
        "kmeans/ari",
        "kmeans/fmi",
        "kmeans/hungarian_accuracy",
    }
    # L2-normalised embeddings: every distance lies in [0, 2].
    assert (
        0 <= metrics["embedding/intra"]["mean"] <= 2
        and 0 <= metrics["embedding/inter"]["mean"] <= 2
    )
    with open(out / "distances.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["name"], r["n"]) for r in rows] == [("liver", "6"), ("kidney", "6"), ("heart", "6")]
    saved = np.load(out / "embeddings.npz")
    assert saved["features"].shape == (18, 12 * 16) and saved["coords"].shape == (18, 2)
    inter = np.loadtxt(out / "inter_embedding.csv", delimiter=",", skiprows=1, usecols=(1, 2, 3))
    np.testing.assert_allclose(inter, inter.T)
    assert np.allclose(np.diag(inter), 0)
    record = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert record["command"] == "cluster" and record["figures"] == [
        {"title": "PCA scatter", "path": "figures/pca.png"}
    ]
    assert record["config"]["n"] == 18 and (out / "figures" / "pca.png").stat().st_size > 0


def test_cluster_metrics_on_known_embeddings() -> None:
    # Two classes on orthogonal axes: normalised, each class collapses to a point.
    feats = np.array([[1, 0], [2, 0], [0, 1], [0, 3]], dtype=float)
    labels = np.array([0, 0, 1, 1])
    coords = np.array([[0, 0], [0, 2], [4, 0], [4, 2]], dtype=float)
    metrics, dists = cluster_metrics(
        feats, labels, coords, "umap", normalize=True, n_clusters=None, seed=0
    )
    assert metrics["embedding/intra"] == {"mean": 0.0, "std": 0.0}
    assert metrics["embedding/inter"]["mean"] == pytest.approx(np.sqrt(2))
    assert metrics["umap/intra"] == {"mean": 2.0, "std": 0.0}
    assert metrics["umap/inter"]["mean"] == pytest.approx(4.0)
    assert metrics["kmeans/ari"] == pytest.approx(1.0)
    assert set(dists) == {"embedding", "umap"}


def test_too_few_samples_fall_back_to_pca() -> None:
    x = np.random.default_rng(0).normal(size=(6, 5))
    with pytest.warns(UserWarning, match="too few for UMAP"):
        coords, used = project_2d(x, "umap", n_neighbors=15)
    assert used == "pca" and coords.shape == (6, 2)


@pytest.mark.slow
def test_umap_projection_is_reproducible() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (20, 8)), rng.normal(3, 0.1, (20, 8))])
    a, used = project_2d(x, "umap", n_neighbors=5, seed=0)
    b, _ = project_2d(x, "umap", n_neighbors=5, seed=0)
    assert used == "umap" and a.shape == (40, 2)
    np.testing.assert_allclose(a, b)
    # The two blobs stay apart in the map.
    assert np.linalg.norm(a[:20].mean(0) - a[20:].mean(0)) > 3 * a[:20].std(0).max()
