r"""`medmim segment`: fine-tune a SwinUNETR / UNETR segmenter on an encoder, predict and score.

Example:
    medmim segment --encoder runs/smart/export --source phantoms/organs.json --out seg/smart \
        --crop-size 64,64,64 --max-steps 500
"""

from __future__ import annotations

import argparse

from medmim.cli._eval_args import (
    add_encoder_flags,
    add_flag,
    add_progress_flag,
    int_triple,
    name_list,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the encoder, label, decoder, crop, optimiser and sliding-window flags to `parser`."""
    add_encoder_flags(parser)
    parser.add_argument(
        "--labels",
        type=name_list,
        default=None,
        metavar="A,B,...",
        help="foreground class names, class 1 first (default: the datalist's "
        "'labels', else class_1..K)",
    )
    parser.add_argument(
        "--decoder",
        default="auto",
        choices=["auto", "swin_unetr", "unetr"],
        help="auto: swin_unetr on a Swin encoder, unetr on a ViT",
    )
    parser.add_argument(
        "--feature-size",
        type=int,
        default=16,
        help="UNETR decoder base width (SwinUNETR uses the encoder's width)",
    )
    add_flag(
        parser,
        "crop_size",
        type=int_triple,
        default=None,
        metavar="D,H,W",
        help="training crop and sliding-window size (default: the encoder's crop size)",
    )
    add_flag(parser, "max_steps", type=int, default=200, help="optimizer steps")
    add_flag(parser, "batch_size", type=int, default=1, help="scans per step")
    parser.add_argument("--num-samples", type=int, default=2, help="crops per scan and step")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (AdamW)")
    parser.add_argument("--weight-decay", type=float, default=1e-5, help="AdamW weight decay")
    parser.add_argument(
        "--train-fraction",
        type=float,
        default=1.0,
        help="fraction of the training cases used (limited-data study)",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="held-out fraction when the datalist has no 'validation'",
    )
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap")
    parser.add_argument("--sw-batch-size", type=int, default=2, help="windows per forward")
    add_progress_flag(parser)


def run(args: argparse.Namespace) -> int:
    """Fine-tune and score the segmenter, print val Dice / HD95 / ASD; returns 0."""
    from medmim.eval.segment import SegmentConfig, run_segment

    cfg = SegmentConfig(
        encoder=args.encoder,
        data=args.source,
        out=args.out,
        labels=args.labels,
        decoder=args.decoder,
        feature_size=args.feature_size,
        roi=args.crop_size,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        num_samples=args.num_samples,
        lr=args.lr,
        weight_decay=args.weight_decay,
        train_fraction=args.train_fraction,
        val_fraction=args.val_fraction,
        overlap=args.overlap,
        sw_batch_size=args.sw_batch_size,
        recipe=args.recipe,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        force_recipe=args.force_recipe,
    )
    metrics = run_segment(cfg)
    for name in ("val/dice", "val/hd95", "val/asd"):
        value = metrics[name]
        print(f"{name}: {value['mean']:.4f} +- {value['std']:.4f}")
    print(f"wrote {args.out}/results.json")
    return 0
