"""Argument types and flags shared by the downstream commands (segment, attention, localize)."""

from __future__ import annotations

import argparse


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
    group.add_argument("--recipe", default=None, metavar="PRESET",
                       help="preprocessing preset (default: the encoder's recipe)")
    group.add_argument("--plan", dest="recipe", metavar="PLAN.yaml",
                       help="the recipe of a `medmim data plan` file instead of the encoder's")
    parser.add_argument("--force-recipe", action="store_true",
                        help="apply the recipe even to data of another modality (CT window on MR)")


def add_encoder_flags(parser: argparse.ArgumentParser) -> None:
    """--encoder, --data, --out, --recipe / --plan, --force-recipe, --seed, --device."""
    parser.add_argument("--encoder", required=True, metavar="EXPORT|scratch:PRESET",
                        help="exported encoder folder, or scratch:<export or backbone preset>")
    parser.add_argument("--data", required=True, metavar="SOURCE",
                        help="datalist JSON (MSD style), CSV, folder or image")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_recipe_flags(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
