"""`medmim data fingerprint SOURCE [--out JSON]`: what a source holds, before choosing a recipe.

Counts, spacings, shapes, intensity percentiles, a modality guess and the unreadable files with
their reasons (see `medmim.data.fingerprint`), printed and optionally written as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medmim.cli._eval_args import add_flag, add_record_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the source, --out, the source-field and the sampling flags to `parser`."""
    parser.add_argument("source", help="folder, MSD datalist JSON, CSV, MedMNIST .npz or one image")
    add_flag(
        parser,
        "out",
        type=Path,
        default=None,
        metavar="JSON",
        help="write the fingerprint as JSON here (default: print it only)",
    )
    add_sampling_flags(parser)


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """Add --image-key, --split (which records), --samples and --seed (which voxels).

    Shared with `medmim data plan`.
    """
    add_record_flags(parser)
    parser.add_argument("--samples", type=int, default=10_000, help="voxels sampled per scan")
    add_flag(parser, "seed", type=int, default=0, help="seed of the voxel sampling")


def run(args: argparse.Namespace) -> int:
    """Print the source's fingerprint (and write it to --out); returns 1 if none is readable."""
    from medmim.data.fingerprint import fingerprint_source, format_summary

    fp = fingerprint_source(
        args.source, key=args.image_key, split=args.split, samples=args.samples, seed=args.seed
    )
    print(format_summary(fp))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(fp, indent=1), encoding="utf-8")
        print(f"wrote {args.out}")
    return 0 if fp["num_readable"] else 1
