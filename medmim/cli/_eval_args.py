"""Argument types and flags shared by the downstream commands (segment, attention, localize).

Flag names come from `medmim.cli._vocabulary` (one canonical name per concept, older names kept
as aliases); `PRETRAIN_KEYS` there maps them to `medmim pretrain` keys.
"""

from __future__ import annotations

import argparse

from medmim.cli._vocabulary import PRETRAIN_KEYS, add_flag

__all__ = ["PRETRAIN_KEYS", "add_encoder_flags", "add_flag", "int_triple", "name_list"]


def int_triple(text: str) -> list[int]:
    """'64,64,32' or '64' -> [64, 64, 32] / [64, 64, 64]."""
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': give sizes like 64,64,64") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"'{text}': give three positive sizes like 64,64,64")
    return values


def name_list(text: str) -> list[str]:
    """'liver,spleen' -> ['liver', 'spleen']."""
    return [v.strip() for v in text.split(",") if v.strip()]


def add_recipe_flags(parser: argparse.ArgumentParser) -> None:
    """--recipe PRESET | --plan PLAN.yaml (both land in `args.recipe`), --force-recipe."""
    group = parser.add_mutually_exclusive_group()
    add_flag(
        group,
        "recipe",
        default=None,
        metavar="PRESET",
        help="preprocessing preset (default: the encoder's recipe)",
    )
    group.add_argument(
        "--plan",
        dest="recipe",
        metavar="PLAN.yaml",  # a recipe source too
        help="the recipe of a `medmim data plan` file (default: none; the encoder's recipe "
        "is used)",
    )
    add_flag(
        parser,
        "force_recipe",
        action="store_true",
        help="apply the recipe even to data of another modality (CT window on MR)",
    )


def add_encoder_flags(parser: argparse.ArgumentParser) -> None:
    """--encoder, --source (alias --data), --out, --recipe / --plan, --force-recipe, --seed,
    --device.
    """
    add_flag(
        parser,
        "encoder",
        required=True,
        metavar="EXPORT|scratch:PRESET",
        help="exported encoder folder, or scratch:<export or backbone preset>",
    )
    add_flag(
        parser,
        "source",
        required=True,
        metavar="SOURCE",
        help="datalist JSON (MSD style), CSV, folder or image",
    )
    add_flag(parser, "out", required=True, metavar="DIR", help="output folder")
    add_recipe_flags(parser)
    add_seed_device_flags(parser)


def add_seed_device_flags(parser: argparse.ArgumentParser) -> None:
    """--seed, --device."""
    add_flag(parser, "seed", type=int, default=0, help="seed of the random parts")
    add_flag(
        parser, "device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ..."
    )


def add_record_flags(parser: argparse.ArgumentParser, on_error: bool = False) -> None:
    """Add --image-key and --split (which records of a datalist / CSV / npz source are read),
    and with `on_error` the --on-error choice for an unreadable scan.
    """
    add_flag(parser, "image_key", default="image", help="datalist/CSV field of the image path")
    add_flag(parser, "split", default="training", help="datalist section or npz split")
    if on_error:
        add_flag(
            parser,
            "on_error",
            choices=("skip", "fail"),
            default="skip",
            help="skip: list an unreadable scan (skipped.jsonl) and go on; fail: stop",
        )


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """--no-progress."""
    add_flag(parser, "no_progress", action="store_true", help="no progress bars")
