"""`medmim reconstruct RUN`: masked input, prediction and target of a run's MIP / AMIP head.

Example:
    medmim reconstruct runs/smart --out runs/smart/reconstruct --num 4
"""

from __future__ import annotations

import argparse

from medmim.cli._eval_args import add_flag, add_seed_device_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the run, --out, --source, --num and the seed / device flags to `parser`."""
    parser.add_argument(
        "run", metavar="RUN_OR_CKPT", help="a run directory (runs/<name>) or a checkpoint file"
    )
    add_flag(parser, "out", required=True, metavar="DIR", help="output folder")
    add_flag(
        parser,
        "source",
        default=None,
        metavar="SOURCE",
        help="scans to reconstruct (default: the run's data.source)",
    )
    parser.add_argument("--num", type=int, default=4, help="samples shown")
    add_seed_device_flags(parser)


def run(args: argparse.Namespace) -> int:
    """Write the reconstruction figure and print the masked-voxel MSE; returns 0."""
    from medmim.eval.reconstruct import ReconstructConfig, run_reconstruct

    cfg = ReconstructConfig(
        run=args.run,
        out=args.out,
        data=args.source,
        num=args.num,
        seed=args.seed,
        device=args.device,
    )
    metrics = run_reconstruct(cfg)
    m = metrics["recon/mse_masked"]
    print(f"recon/mse_masked: {m['mean']:.4f} +- {m['std']:.4f}")
    print(f"wrote {args.out}/figures/reconstruction.png and results.json")
    return 0
