"""Flags shared by the commands on labelled volumes (classify, cluster)."""

from __future__ import annotations

import argparse

from medmim.cli._eval_args import add_encoder_flags, int_triple, name_list


def add_labelled_flags(parser: argparse.ArgumentParser) -> None:
    """--encoder --data --out --recipe --seed --device, then feature, CSV keys, size, batch."""
    add_encoder_flags(parser)
    parser.add_argument("--feature", default="auto", choices=["auto", "cls", "pooled", "patch_mean"],
                        help="embedding: SA/ViT [CLS], pooled last-stage token, mean patch token")
    parser.add_argument("--image-key", default="image", help="CSV column of the image paths")
    parser.add_argument("--label-key", default="label", help="CSV column of the class labels")
    parser.add_argument("--group-key", default="auto", metavar="COLUMN|auto|none",
                        help="CSV column of each sample's patient: the test hold-out and the folds "
                             "keep a patient on one side (auto: the first of patient_id, patient, "
                             "subject_id, subject, case_id, phantom present; none: no grouping)")
    parser.add_argument("--class-names", type=name_list, default=None, metavar="A,B,...",
                        help="names of classes 0..K-1 (a MedMNIST npz holds only numbers)")
    parser.add_argument("--size", type=int_triple, default=None, metavar="D,H,W",
                        help="size volumes are resized to (default: the encoder's crop size)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def labelled_options(args: argparse.Namespace) -> dict:
    """The `medmim.eval.labelled.LabelledOptions` fields these flags set."""
    return {"feature": args.feature, "image_key": args.image_key, "label_key": args.label_key,
            "group_key": args.group_key,
            "class_names": args.class_names, "size": args.size, "recipe": args.recipe,
            "force_recipe": args.force_recipe,
            "seed": args.seed, "device": args.device, "progress": not args.no_progress}
