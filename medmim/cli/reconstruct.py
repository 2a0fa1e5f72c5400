"""`medmim reconstruct RUN`: masked input, prediction and target of a run's MIP / AMIP head.

Example:
    medmim reconstruct runs/smart --out runs/smart/reconstruct --num 4
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_OR_CKPT",
                        help="a run directory (runs/<name>) or a checkpoint file")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--data", default=None, metavar="SOURCE",
                        help="scans to reconstruct (default: the run's data.source)")
    parser.add_argument("--num", type=int, default=4, help="samples shown")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> int:
    from medmim.eval.reconstruct import ReconstructConfig, run_reconstruct

    cfg = ReconstructConfig(run=args.run, out=args.out, data=args.data, num=args.num,
                            seed=args.seed, device=args.device)
    metrics = run_reconstruct(cfg)
    m = metrics["recon/mse_masked"]
    print(f"recon/mse_masked: {m['mean']:.4f} +- {m['std']:.4f}")
    print(f"wrote {args.out}/figures/reconstruction.png and results.json")
    return 0
