"""Flags shared by the commands on labelled volumes (classify, cluster)."""

from __future__ import annotations

import argparse

from medmim.cli._eval_args import (
    add_encoder_flags,
    add_flag,
    add_progress_flag,
    int_triple,
    name_list,
)


def add_feature_flags(parser: argparse.ArgumentParser, batch_size: int = 8) -> None:
    """--feature, --resize (alias --size), --batch-size, --num-workers, --no-progress: how a
    volume becomes an embedding (shared with `medmim embed`).
    """
    parser.add_argument(
        "--feature",
        default="auto",
        choices=["auto", "cls", "pooled", "patch_mean"],
        help="embedding: SA/ViT [CLS], pooled last-stage token, mean patch token; "
        "auto: cls if the backbone has one, else pooled",
    )
    add_flag(
        parser,
        "resize",
        type=int_triple,
        default=None,
        metavar="D,H,W",
        help="size every whole volume is resized to (default: the encoder's crop size)",
    )
    add_flag(parser, "batch_size", type=int, default=batch_size, help="volumes per forward")
    add_flag(parser, "num_workers", type=int, default=0, help="DataLoader workers")
    add_progress_flag(parser)


def add_labelled_flags(parser: argparse.ArgumentParser) -> None:
    """--encoder --source --out --recipe --seed --device, then CSV keys, features, batch."""
    add_encoder_flags(parser)
    add_flag(parser, "image_key", default="image", help="CSV column of the image paths")
    parser.add_argument("--label-key", default="label", help="CSV column of the class labels")
    parser.add_argument(
        "--group-key",
        default="auto",
        metavar="COLUMN|auto|none",
        help="CSV column of each sample's patient: the test hold-out and the folds "
        "keep a patient on one side (auto, the default: the first of "
        "patient_id, patient, subject_id, subject, case_id, phantom present; "
        "none: no grouping)",
    )
    parser.add_argument(
        "--class-names",
        type=name_list,
        default=None,
        metavar="A,B,...",
        help="names of classes 0..K-1 (default: as written in the source; a "
        "MedMNIST npz holds only numbers)",
    )
    add_feature_flags(parser)


def labelled_options(args: argparse.Namespace) -> dict:
    """The `medmim.eval.labelled.LabelledOptions` fields these flags set."""
    return {
        "feature": args.feature,
        "image_key": args.image_key,
        "label_key": args.label_key,
        "group_key": args.group_key,
        "class_names": args.class_names,
        "size": args.resize,
        "recipe": args.recipe,
        "force_recipe": args.force_recipe,
        "seed": args.seed,
        "device": args.device,
        "progress": not args.no_progress,
    }
