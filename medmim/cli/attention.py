"""`medmim attention`: SATT / ViT [CLS] attention per scan as NIfTI (original geometry) + PNG.

Example:
    medmim attention --encoder runs/smart/export --source phantoms/organs.json --out att/smart
"""

from __future__ import annotations

import argparse

from medmim.cli._eval_args import add_encoder_flags, add_flag, add_progress_flag, int_triple


def add_window_flags(parser: argparse.ArgumentParser) -> None:
    """--split, --crop-size (alias --roi), --whole, --overlap, --max-figures, --no-progress
    (shared with `medmim localize`).
    """
    add_flag(parser, "split", default="training", help="datalist section / npz split")
    add_flag(
        parser,
        "crop_size",
        type=int_triple,
        default=None,
        metavar="D,H,W",
        help="sliding-window size (default: the encoder's pretraining crop)",
    )
    parser.add_argument(
        "--whole",
        action="store_true",
        help="one pass over the whole preprocessed scan instead of windows",
    )
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap")
    parser.add_argument("--max-figures", type=int, default=8, help="PNG overlays written")
    add_progress_flag(parser)


def window_options(args: argparse.Namespace) -> dict:
    """The `medmim.eval.attention.WindowOptions` fields that these and the encoder flags set."""
    return {
        "split": args.split,
        "roi": args.crop_size,
        "whole": args.whole,
        "overlap": args.overlap,
        "recipe": args.recipe,
        "force_recipe": args.force_recipe,
        "seed": args.seed,
        "device": args.device,
        "max_figures": args.max_figures,
        "progress": not args.no_progress,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the encoder flags and the window flags to `parser`."""
    add_encoder_flags(parser)
    add_window_flags(parser)


def run(args: argparse.Namespace) -> int:
    """Write the attention maps of every scan of `--source` under `--out`; returns 0."""
    from medmim.eval.attention import AttentionConfig, run_attention

    cfg = AttentionConfig(
        encoder=args.encoder, data=args.source, out=args.out, **window_options(args)
    )
    run_attention(cfg)
    print(f"wrote {args.out}/attention/*.nii.gz, figures and results.json")
    return 0
