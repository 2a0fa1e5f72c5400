"""`medmim embed`: frozen embeddings of every scan of a source, for your own analysis.

Writes OUT/embeddings.npy (N, C) float32, OUT/index.csv (row, name, label, feature),
OUT/embed.json and, for unreadable scans, OUT/skipped.jsonl. A scan becomes an embedding as in
`medmim classify` / `cluster`; `medmim.load_encoder(EXPORT).embed(path)` gives the same row.

Example:
    medmim embed --encoder runs/smart/export --source data/ct --out emb/smart
    medmim embed --encoder runs/smart/export --source organmnist3d.npz --split test --out emb/t
"""

from __future__ import annotations

import argparse

from medmim.cli._eval_args import add_encoder_flags, add_record_flags
from medmim.cli._labelled_args import add_feature_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the encoder, source-field, error-handling and feature flags to `parser`."""
    add_encoder_flags(parser)
    add_record_flags(parser, on_error=True)
    add_feature_flags(parser)


def run(args: argparse.Namespace) -> int:
    """Write the embeddings of every scan of the source under `--out`; returns 0."""
    from medmim.eval.embed import EmbedOptions, run_embed

    opts = EmbedOptions(
        feature=args.feature,
        size=args.resize,
        recipe=args.recipe,
        image_key=args.image_key,
        split=args.split,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        on_error=args.on_error,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
    summary = run_embed(args.encoder, args.source, args.out, opts)
    n, dim, skipped = summary["num_embedded"], summary["dim"], summary["num_skipped"]
    print(
        f"embedded {n} scans ({summary['feature_used']}, {dim} dims)"
        + (f"; skipped {skipped}, listed in {args.out}/skipped.jsonl" if skipped else "")
    )
    print(f"wrote {args.out}/embeddings.npy, index.csv and embed.json")
    return 0
