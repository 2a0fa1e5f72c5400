r"""`medmim classify`: linear probing or fine-tuning with stratified folds and data fractions.

Example:
    medmim classify --encoder runs/smart/export --source phantoms/nodules.csv --mode linear \
        --folds 5 --fractions 0.25,0.5,1.0 --out cls/smart
    medmim classify --encoder scratch:runs/smart/export ...     # same architecture, random init
"""

from __future__ import annotations

import argparse

from medmim.cli._labelled_args import add_labelled_flags, labelled_options


def fraction_list(text: str) -> list[float]:
    """'0.25,0.5,1' -> [0.25, 0.5, 1.0], each in (0, 1]."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': give fractions like 0.25,0.5,1.0") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"'{text}': every fraction must lie in (0, 1]")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the labelled-data flags and the linear-probe / fine-tuning flags to `parser`."""
    add_labelled_flags(parser)
    parser.add_argument(
        "--mode",
        default="linear",
        choices=["linear", "finetune"],
        help="linear: logistic regression on frozen features; finetune: all weights",
    )
    parser.add_argument(
        "--folds",
        type=int,
        default=5,
        help="stratified k-fold CV (1 = the source's val split or a 20%% hold-out)",
    )
    parser.add_argument(
        "--fractions",
        type=fraction_list,
        default=[1.0],
        metavar="F,F,...",
        help="training-data fractions (limited-data study), e.g. 0.25,0.5,1.0",
    )
    parser.add_argument(
        "--test-size",
        type=float,
        default=0.2,
        help="stratified test hold-out when the data has no test split (0 = none)",
    )
    parser.add_argument("--C", type=float, default=1.0, help="linear: inverse L2 strength")
    parser.add_argument("--epochs", type=int, default=10, help="finetune: epochs")
    parser.add_argument("--lr", type=float, default=1e-4, help="finetune: peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="finetune: AdamW decay")
    parser.add_argument("--amp", action="store_true", help="finetune: bf16 autocast")


def run(args: argparse.Namespace) -> int:
    """Run the classification study and print test / val AUC and accuracy; returns 0."""
    from medmim.eval.classify import ClassifyConfig, run_classify
    from medmim.eval.probe import FinetuneConfig

    ft = FinetuneConfig(
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        amp=args.amp,
        num_workers=args.num_workers,
    )
    cfg = ClassifyConfig(
        mode=args.mode,
        folds=args.folds,
        fractions=args.fractions,
        test_size=args.test_size,
        C=args.C,
        finetune=ft,
        **labelled_options(args),
    )
    metrics = run_classify(args.encoder, args.source, args.out, cfg)
    for name in ("test/auc", "test/accuracy", "val/auc"):
        if name in metrics:
            print(f"{name}: {metrics[name]['mean']:.4f} +- {metrics[name]['std']:.4f}")
    print(f"wrote {args.out}/results.json")
    return 0
