"""`medmim cluster`: how well an encoder separates classes without any fine-tuning (SMART sec. 5.1).

Embeddings of labelled crops (e.g. OrganMNIST3D, all splits = the paper's 1,743 volumes) are
taken from the frozen encoder (`--feature`: SMART's SA [CLS], SMIT's pooled token, a ViT's [CLS]).
Then, with the distance definitions of `medmim.eval.metrics` (intra = mean pairwise distance
within a class; inter = distance between class centroids; mean +- std over classes / pairs):

- `embedding/intra`, `embedding/inter`: on the L2-normalised embeddings (`normalize=True`);
- `umap/intra`, `umap/inter`: on the 2-D UMAP coordinates (umap-learn, fixed `random_state`),
  the space of the paper's Fig. 3. With too few samples for UMAP (N <= n_neighbors) PCA is used
  instead, with a warning, and the names read `pca/...`;
- `kmeans/nmi`, `kmeans/ari`, `kmeans/fmi`, `kmeans/hungarian_accuracy`: k-means with k = the
  number of classes on the (normalised) embeddings, scored against the labels (iBOT convention).

Outputs in OUT: `results.json`, `summary.md`, `distances.csv` (per class), `inter_<space>.csv`
(centroid distance matrices), `embeddings.npz` (features, labels, 2-D coordinates, ids) and
`figures/<umap|pca>.png`.
"""

from __future__ import annotations

import csv
import logging
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from medmim.errors import ConfigError
from medmim.eval.encoders import (
    describe,
    extract_features,
    input_size,
    load_encoder_or_scratch,
)
from medmim.eval.labelled import LabelledOptions, LabelledSet, VolumeDataset
from medmim.eval.labelled_sources import load_for_encoder
from medmim.eval.markdown import format_value, markdown_table
from medmim.eval.metrics import ClassDistances, class_distances, kmeans_scores, l2_normalize
from medmim.eval.plots import plot_embedding
from medmim.eval.report import write_results
from medmim.eval.runtime import pick_device

log = logging.getLogger(__name__)
PROJECTIONS = ("umap", "pca")


@dataclass
class ClusterConfig(LabelledOptions):
    """Options of `medmim cluster` (CLI flags of the same names; the shared ones are
    `LabelledOptions`').
    """

    split: str = "all"
    projection: str = "umap"
    n_neighbors: int = 15
    min_dist: float = 0.1
    normalize: bool = True
    n_clusters: int | None = None
    batch_size: int = 8
    num_workers: int = 0


def project_2d(
    x: np.ndarray, method: str = "umap", n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, str]:
    """(N, C) -> (N, 2) coordinates and the method used ("umap", or "pca" as the fallback)."""
    if method not in PROJECTIONS:
        raise ConfigError(f"--projection {method}: choose one of {', '.join(PROJECTIONS)}")
    if method == "umap" and len(x) <= n_neighbors:
        warnings.warn(
            f"{len(x)} samples are too few for UMAP with n_neighbors={n_neighbors}; "
            "using PCA for the 2-D map",
            stacklevel=2,
        )
        method = "pca"
    if method == "pca":
        from sklearn.decomposition import PCA

        coords = (
            PCA(n_components=2, random_state=seed).fit_transform(x)
            if len(x) > 2
            else np.pad(x[:, :2], ((0, 0), (0, max(0, 2 - x.shape[1]))))
        )
        return np.asarray(coords, dtype=np.float64), "pca"
    import umap

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed)
        return np.asarray(reducer.fit_transform(x), dtype=np.float64), "umap"


def cluster_metrics(
    feats: np.ndarray,
    labels: np.ndarray,
    coords: np.ndarray,
    space: str,
    normalize: bool,
    n_clusters: int | None,
    seed: int,
) -> tuple[dict[str, Any], dict[str, ClassDistances]]:
    """Headline metrics (names as in the module docstring) and the per-space distances."""
    x = l2_normalize(feats) if normalize else feats
    dists = {"embedding": class_distances(x, labels), space: class_distances(coords, labels)}
    metrics: dict[str, Any] = {}
    for name, d in dists.items():
        s = d.summary()
        metrics[f"{name}/intra"] = {"mean": s["intra_mean"], "std": s["intra_std"]}
        metrics[f"{name}/inter"] = {"mean": s["inter_mean"], "std": s["inter_std"]}
    if len(np.unique(labels)) > 1:
        scores = kmeans_scores(x, labels, n_clusters, seed)
        metrics.update({f"kmeans/{k}": v for k, v in scores.items()})
    return metrics, dists


def _write_tables(
    out: Path, data: LabelledSet, dists: dict[str, ClassDistances], metrics: dict[str, Any]
) -> list[dict[str, str]]:
    spaces = list(dists)
    classes = dists[spaces[0]].classes
    counts = np.bincount(data.labels, minlength=data.num_classes)
    with (out / "distances.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["class", "name", "n", *[f"intra_{s}" for s in spaces]])
        for i, c in enumerate(classes):
            w.writerow(
                [
                    int(c),
                    data.class_names[c],
                    int(counts[c]),
                    *[f"{dists[s].intra[i]:.6g}" for s in spaces],
                ]
            )
    for s in spaces:
        with (out / f"inter_{s}.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["class", *[data.class_names[c] for c in classes]])
            for i, c in enumerate(classes):
                w.writerow([data.class_names[c], *[f"{v:.6g}" for v in dists[s].inter[i]]])
    rows = [[f"`{k}`", format_value(v)] for k, v in metrics.items()]
    (out / "summary.md").write_text(
        markdown_table(["metric", "value"], rows) + "\n", encoding="utf-8"
    )
    return [
        {"title": "Clustering summary", "path": "summary.md"},
        {"title": "Intra-class distance per class", "path": "distances.csv"},
    ]


def _write_outputs(
    out: Path,
    data: LabelledSet,
    feats: np.ndarray,
    coords: np.ndarray,
    space: str,
    dists: dict[str, ClassDistances],
    metrics: dict[str, Any],
    title: str,
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """embeddings.npz, the tables and the scatter plot; returns the (tables, figures) entries."""
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out / "embeddings.npz",
        features=feats,
        labels=data.labels,
        coords=coords,
        ids=np.array(data.ids),
        class_names=np.array(data.class_names),
    )
    tables = _write_tables(out, data, dists, metrics)
    plot_embedding(coords, data.labels, data.class_names, out / "figures" / f"{space}.png", title)
    return tables, [{"title": f"{space.upper()} scatter", "path": f"figures/{space}.png"}]


def run_cluster(
    encoder: str, data_path: str | Path, out_dir: str | Path, cfg: ClusterConfig | None = None
) -> dict[str, Any]:
    """Embed, measure, project and plot; write OUT; return the headline metrics."""
    cfg = cfg or ClusterConfig()
    cfg = replace(cfg, device=str(pick_device(cfg.device)))
    model, meta = load_encoder_or_scratch(encoder, seed=cfg.seed, device=cfg.device)
    data = load_for_encoder(data_path, meta, cfg, cfg.split)
    if len(data) < 3:
        raise ConfigError(f"{data_path}: {len(data)} volume(s); clustering needs at least 3")
    size = input_size(cfg.size, meta, data.shape)
    loader = DataLoader(
        VolumeDataset(data, np.arange(len(data)), size, int(meta.get("in_channels") or 1)),
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
    )
    feats = extract_features(model, loader, cfg.feature, cfg.device, cfg.progress, len(loader))
    x = l2_normalize(feats) if cfg.normalize else feats
    coords, space = project_2d(x, cfg.projection, cfg.n_neighbors, cfg.min_dist, cfg.seed)
    metrics, dists = cluster_metrics(
        feats, data.labels, coords, space, cfg.normalize, cfg.n_clusters, cfg.seed
    )
    title = f"{space.upper()} of {describe(encoder, meta)['method']} embeddings ({cfg.feature})"
    out = Path(out_dir)
    tables, figures = _write_outputs(out, data, feats, coords, space, dists, metrics, title)
    config = {**asdict(cfg), "input_size": list(size), "projection_used": space}
    config.update(classes=data.class_names, n=len(data))
    enc = describe(encoder, meta)
    write_results(out, "cluster", enc, metrics, tables, figures, data=str(data_path), config=config)
    log.info("cluster: %s", {k: format_value(v) for k, v in metrics.items()})
    return metrics
