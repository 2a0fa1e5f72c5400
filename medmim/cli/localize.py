r"""`medmim localize`: zero-shot localization by thresholding attention maps (SMART sec. 5.5).

Examples:
    medmim localize --encoder runs/smart/export --source phantoms/tumors.json --mask-key tumor \
        --out loc/smart
    medmim localize --attention att/smart --source phantoms/tumors.json --out loc/smart
"""

from __future__ import annotations

import argparse

from medmim.cli._eval_args import add_flag, add_recipe_flags, add_seed_device_flags
from medmim.cli.attention import add_window_flags, window_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the source, output, attention-map, threshold, recipe and window flags to `parser`."""
    add_flag(
        parser,
        "source",
        required=True,
        metavar="SOURCE",
        help="datalist JSON / CSV whose entries name an image and a mask",
    )
    add_flag(parser, "out", required=True, metavar="DIR", help="output folder")
    maps = parser.add_mutually_exclusive_group(required=True)
    add_flag(
        maps,
        "encoder",
        metavar="EXPORT|scratch:PRESET",
        help="compute the attention maps with this encoder",
    )
    maps.add_argument(
        "--attention", metavar="DIR", help="reuse the maps written by `medmim attention --out DIR`"
    )
    parser.add_argument(
        "--mask-key", default="label", help="datalist field of the reference mask (e.g. tumor)"
    )
    parser.add_argument(
        "--percentile",
        type=float,
        default=90.0,
        help="threshold at this percentile of the attention values (paper: 90)",
    )
    parser.add_argument(
        "--largest-component", action="store_true", help="keep only the largest connected component"
    )
    add_recipe_flags(parser)
    add_seed_device_flags(parser)
    add_window_flags(parser)


def run(args: argparse.Namespace) -> int:
    """Threshold the attention maps, score them against the masks, print Dice; returns 0."""
    from medmim.eval.localize import LocalizeConfig, run_localize

    cfg = LocalizeConfig(
        data=args.source,
        out=args.out,
        encoder=args.encoder,
        attention=args.attention,
        mask_key=args.mask_key,
        percentile=args.percentile,
        largest_component=args.largest_component,
        **window_options(args),
    )
    metrics = run_localize(cfg)
    d = metrics["localize/dice"]
    print(
        f"localize/dice: {d['mean']:.4f} +- {d['std']:.4f}  "
        f"pointing: {metrics['localize/pointing']:.3f}"
    )
    print(f"wrote {args.out}/localize.csv and results.json")
    return 0
