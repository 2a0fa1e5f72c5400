"""`medmim data cache SOURCE --recipe smart --cache-dir DIR`: preprocess a source once.

Every scan is read, preprocessed with the recipe and written to the persistent cache that
pretraining reads (see `medmim.data.cache`); bad files are listed with their reasons.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medmim.cli._eval_args import add_flag, add_progress_flag, add_record_flags
from medmim.data.config import RECIPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the source, recipe, cache-folder, source-field and error flags to `parser`."""
    parser.add_argument("source", help="folder, MSD datalist JSON, CSV, MedMNIST .npz or one image")
    add_flag(parser, "recipe", default="smart", help=f"preset: {', '.join(RECIPES)}")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="recipe overrides, e.g. spacing=[1.5,1.5,2] window=[-175,250]",
    )
    add_flag(
        parser,
        "cache_dir",
        type=Path,
        default=Path("runs/.cache"),
        help="the persistent cache folder",
    )
    add_record_flags(parser, on_error=True)
    add_progress_flag(parser)


def run(args: argparse.Namespace) -> int:
    """Cache every scan of the source and print the counts; returns 1 if none was cached."""
    from medmim.data.cache import VolumeCache, cache_records
    from medmim.data.preprocess import recipe_from_args
    from medmim.data.sources import resolve_source

    recipe = recipe_from_args(args.recipe, args.set)
    records = resolve_source(args.source, key=args.image_key, split=args.split)
    cache = VolumeCache(args.cache_dir, recipe)
    volumes, errors = cache_records(
        records, cache, on_error=args.on_error, progress=not args.no_progress
    )
    for exc in errors:
        print(f"skipped: {exc}")
    shapes = [v.meta["shape"] for _, v in volumes]
    print(f"cached {len(volumes)} of {len(records)} scans in {cache.root}")
    if shapes:
        print(f"shapes: min {[min(s) for s in zip(*shapes)]}, max {[max(s) for s in zip(*shapes)]}")
    return 0 if volumes else 1
