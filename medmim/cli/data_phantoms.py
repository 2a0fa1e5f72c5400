"""`medmim data phantoms`: write synthetic CT phantoms with organ, nodule and tumor labels.

Example:
    medmim data phantoms --out data/phantoms --n 24 --seed 0
    medmim data phantoms --out /tmp/tiny --n 4 --size small
"""

from __future__ import annotations

import argparse
from typing import Any

from medmim.cli._eval_args import add_flag


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the output, count, seed, size, nodule and worker flags to `parser`."""
    add_flag(parser, "out", required=True, help="output folder (created)")
    parser.add_argument("--n", type=int, default=16, help="number of phantoms (default 16)")
    add_flag(parser, "seed", type=int, default=0, help="seed; same seed, same bytes (default 0)")
    parser.add_argument(
        "--size",
        default="default",
        choices=("default", "small"),
        help="voxel sizes: 'default' is 1.2-2 mm in-plane, 1.5-5 mm slices; 'small' is "
        "~3.5 mm, for tests (default: default)",
    )
    parser.add_argument(
        "--nodules",
        type=int,
        nargs=2,
        default=(2, 4),
        metavar=("MIN", "MAX"),
        help="lung nodules per phantom (default 2 4)",
    )
    parser.add_argument(
        "--p-malignant", type=float, default=0.5, help="probability a nodule is malignant"
    )
    parser.add_argument(
        "--crop-size", type=int, default=32, help="nodule crop size in voxels (default 32)"
    )
    parser.add_argument(
        "--crop-spacing", type=float, default=1.5, help="nodule crop spacing in mm (default 1.5)"
    )
    add_flag(
        parser,
        "num_workers",
        type=int,
        default=1,
        help="parallel processes; the output does not change (default 1)",
    )


def run(args: argparse.Namespace) -> int:
    """Generate the phantoms under a progress bar and print their summary; returns 0."""
    from tqdm import tqdm

    from medmim.data.phantoms import generate_phantoms

    with tqdm(total=args.n, desc="phantoms", unit="phantom") as bar:

        def done(record: dict[str, Any]) -> None:
            n = record["nodules"]
            bar.set_postfix_str(
                f"{record['name']} nodules {len(n)} tumor {(record['tumor'] or {}).get('organ')}"
            )
            bar.update(1)

        summary = generate_phantoms(
            args.out,
            args.n,
            seed=args.seed,
            size=args.size,
            nodules=tuple(args.nodules),
            p_malignant=args.p_malignant,
            crop_size=args.crop_size,
            crop_spacing=args.crop_spacing,
            workers=args.num_workers,
            callback=done,
        )
    print(format_summary(summary))
    return 0


def format_summary(s: dict[str, Any]) -> str:
    """A readable summary of `generate_phantoms`' result."""
    benign = sum(v["benign"] for v in s["nodules"].values())
    malignant = sum(v["malignant"] for v in s["nodules"].values())
    per_split = ", ".join(f"{k} {v['benign']}/{v['malignant']}" for k, v in s["nodules"].items())
    sp = s["spacing_mm"]
    lines = [
        f"wrote {s['n']} phantoms to {s['out_dir']} in {s['seconds']:.1f} s "
        f"({s['voxels'] / 1e6:.1f} M voxels; splits {s['splits']})",
        f"  spacing: in-plane {sp['inplane'][0]:.2f}-{sp['inplane'][1]:.2f} mm, slices "
        f"{sp['slice'][0]:.1f}-{sp['slice'][1]:.1f} mm, {s['anisotropic']} anisotropic",
        f"  nodules: {benign} benign, {malignant} malignant "
        f"(benign/malignant per split: {per_split})",
        f"  tumors: {', '.join(f'{k} {v}' for k, v in s['tumors'].items())}",
        f"  organ crops: {sum(s['organ_crops'].values())} ({len(s['organ_crops'])} organs)",
        f"  files: {', '.join(s['files'])}",
        "  pretrain on images/; organs.json (segmentation), nodules.csv (malignancy), tumors.json "
        "(localization), organmnist3d*.npz (organ classes)",
    ]
    return "\n".join(lines)
