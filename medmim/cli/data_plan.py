"""`medmim data plan SOURCE [--out plan.yaml]`: the recipe and crop size for a source.

Runs the fingerprint (`medmim data fingerprint`), applies the rules of `medmim.data.plan`
(modality -> recipe, median / anisotropic target spacing, crop size) and writes a commented
YAML plan for `medmim pretrain ... data.plan=plan.yaml` and the downstream `--plan plan.yaml`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medmim.cli._eval_args import add_flag
from medmim.cli.data_fingerprint import add_sampling_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the source, --out, --max-crop, the source-field and sampling flags to `parser`."""
    parser.add_argument("source", help="folder, MSD datalist JSON, CSV, MedMNIST .npz or one image")
    add_flag(
        parser,
        "out",
        type=Path,
        default=Path("plan.yaml"),
        metavar="PLAN.yaml",
        help="where to write the plan",
    )
    parser.add_argument(
        "--max-crop",
        type=int,
        default=96,
        help="cap of the suggested crop size per axis (96 or 128)",
    )
    add_sampling_flags(parser)


def run(args: argparse.Namespace) -> int:
    """Fingerprint the source, print the plan and write it to `--out`; returns 0."""
    from medmim.data.fingerprint import fingerprint_source
    from medmim.data.plan import format_plan, make_plan, write_plan

    fp = fingerprint_source(
        args.source, key=args.image_key, split=args.split, samples=args.samples, seed=args.seed
    )
    plan = make_plan(fp, source=str(args.source), max_crop=args.max_crop)
    print(format_plan(plan))
    for bad in fp["unreadable"]:
        print(f"unreadable (left out): {bad['path']}: {bad['reason']}")
    write_plan(plan, args.out)
    print(
        f"wrote {args.out}; use it with: medmim pretrain --config smart "
        f"data.source={args.source} data.plan={args.out}"
    )
    return 0
