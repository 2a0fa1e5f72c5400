"""`medmim segment`: fine-tune a SwinUNETR / UNETR segmenter on an encoder, predict and score.

Example:
    medmim segment --encoder runs/smart/export --data phantoms/organs.json --out seg/smart \\
        --roi 64,64,64 --max-steps 500
"""

from __future__ import annotations

import argparse

from medmim.cli._eval_args import add_encoder_flags, int_triple, name_list


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_encoder_flags(parser)
    parser.add_argument("--labels", type=name_list, default=None, metavar="A,B,...",
                        help="foreground class names, class 1 first (default: the datalist's "
                             "'labels', else class_1..K)")
    parser.add_argument("--decoder", default="auto", choices=["auto", "swin_unetr", "unetr"])
    parser.add_argument("--feature-size", type=int, default=16,
                        help="UNETR decoder base width (SwinUNETR uses the encoder's width)")
    parser.add_argument("--roi", type=int_triple, default=None, metavar="D,H,W",
                        help="crop / sliding-window size (default: the encoder's crop size)")
    parser.add_argument("--max-steps", type=int, default=200, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=1, help="scans per step")
    parser.add_argument("--num-samples", type=int, default=2, help="crops per scan and step")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--train-fraction", type=float, default=1.0,
                        help="fraction of the training cases used (limited-data study)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="held-out fraction when the datalist has no 'validation'")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap")
    parser.add_argument("--sw-batch-size", type=int, default=2, help="windows per forward")


def run(args: argparse.Namespace) -> int:
    from medmim.eval.segment import SegmentConfig, run_segment

    cfg = SegmentConfig(
        encoder=args.encoder, data=args.data, out=args.out, labels=args.labels,
        decoder=args.decoder, feature_size=args.feature_size, roi=args.roi, max_steps=args.max_steps, batch_size=args.batch_size,
        num_samples=args.num_samples, lr=args.lr, weight_decay=args.weight_decay,
        train_fraction=args.train_fraction, val_fraction=args.val_fraction, overlap=args.overlap,
        sw_batch_size=args.sw_batch_size, recipe=args.recipe, seed=args.seed, device=args.device,
        force_recipe=args.force_recipe,
    )
    metrics = run_segment(cfg)
    for name in ("val/dice", "val/hd95", "val/asd"):
        value = metrics[name]
        print(f"{name}: {value['mean']:.4f} +- {value['std']:.4f}")
    print(f"wrote {args.out}/results.json")
    return 0
