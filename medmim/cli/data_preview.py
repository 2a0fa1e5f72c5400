"""`medmim data preview SOURCE --out PNG`: one preprocessed scan and two training views of it,
as mid-slices in three planes, to check a recipe and the augmentation by eye.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medmim.cli._eval_args import add_flag, add_record_flags
from medmim.data.config import RECIPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the source, output, scan index, recipe, view and cache flags to `parser`."""
    parser.add_argument("source", help="folder, MSD datalist JSON, CSV, MedMNIST .npz or one image")
    add_flag(parser, "out", type=Path, default=Path("preview.png"), help="PNG to write")
    parser.add_argument("--index", type=int, default=0, help="which scan of the source")
    add_flag(parser, "recipe", default="smart", help=f"preset: {', '.join(RECIPES)}")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="FIELD=VALUE", help="recipe overrides"
    )
    add_flag(
        parser,
        "crop_size",
        type=int,
        nargs="+",
        default=[96],
        metavar="N",
        help="view size in voxels (1 or 3 ints)",
    )
    add_flag(
        parser,
        "cache_dir",
        type=Path,
        default=Path("runs/.cache"),
        help="the persistent cache folder",
    )
    add_flag(parser, "seed", type=int, default=0, help="seed of the two views")
    add_record_flags(parser)


def run(args: argparse.Namespace) -> int:
    """Write the preview PNG of scan `--index` of the source; returns 0.

    Raises:
        ConfigError: `--index` is not a scan of the source.
    """
    from medmim.data.preprocess import recipe_from_args
    from medmim.data.preview import preview_views
    from medmim.data.sources import resolve_source
    from medmim.errors import ConfigError

    records = resolve_source(args.source, key=args.image_key, split=args.split)
    if not 0 <= args.index < len(records):
        raise ConfigError(
            f"--index {args.index}: the source has {len(records)} scans (0..{len(records) - 1})"
        )
    out = preview_views(
        records[args.index],
        recipe_from_args(args.recipe, args.set),
        args.out,
        crop=args.crop_size * 3 if len(args.crop_size) == 1 else args.crop_size,
        cache_dir=args.cache_dir,
        seed=args.seed,
    )
    print(f"wrote {out}")
    return 0
