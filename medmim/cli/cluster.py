"""`medmim cluster`: class separation of frozen embeddings: distances, k-means, UMAP (SMART 5.1).

Example:
    medmim cluster --encoder runs/smart/export --source organmnist3d.npz --out cluster/smart
"""

from __future__ import annotations

import argparse

from medmim.cli._eval_args import add_flag
from medmim.cli._labelled_args import add_labelled_flags, labelled_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the labelled-data flags, --split and the projection / k-means flags to `parser`."""
    add_labelled_flags(parser)
    add_flag(
        parser,
        "split",
        default="all",
        choices=["all", "train", "val", "test"],
        help="which split of the data (MedMNIST npz / CSV 'split' column)",
    )
    parser.add_argument(
        "--projection",
        default="umap",
        choices=["umap", "pca"],
        help="2-D map for the scatter and the 2-D distances",
    )
    parser.add_argument("--n-neighbors", type=int, default=15, help="UMAP n_neighbors")
    parser.add_argument("--min-dist", type=float, default=0.1, help="UMAP min_dist")
    parser.add_argument(
        "--no-normalize",
        action="store_true",
        help="measure raw embeddings instead of L2-normalised ones",
    )
    parser.add_argument("--k", type=int, default=None, help="k-means clusters (default: classes)")


def run(args: argparse.Namespace) -> int:
    """Measure the class separation of the embeddings and print each metric; returns 0."""
    from medmim.eval.cluster import ClusterConfig, run_cluster
    from medmim.eval.markdown import format_value

    cfg = ClusterConfig(
        split=args.split,
        projection=args.projection,
        n_neighbors=args.n_neighbors,
        min_dist=args.min_dist,
        normalize=not args.no_normalize,
        n_clusters=args.k,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        **labelled_options(args),
    )
    metrics = run_cluster(args.encoder, args.source, args.out, cfg)
    for name, value in metrics.items():
        print(f"{name}: {format_value(value, 4)}")
    print(f"wrote {args.out}/results.json")
    return 0
