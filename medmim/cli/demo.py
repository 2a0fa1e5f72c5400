"""`medmim demo [--quick] [--out DIR] [--seed S] [key=value ...]`: the whole study on phantoms.

Synthetic CT phantoms -> pretrain SMART, SMIT (and no pretraining) on a CPU -> nodule
malignancy (linear probe, fine-tuning), organ clustering, zero-shot tumor localization and
few-label organ segmentation for each encoder -> OUT/report.md. Rerun the same command after an
interruption: finished stages are skipped and pretraining continues from its checkpoint.
"""

from __future__ import annotations

import argparse
import logging

EPILOG = """budgets (2 idle CPU cores): default about 13-16 min, --quick about 3-4 min;
--gpu: 3000 pretraining steps at a batch of 16, for a CUDA GPU.
examples:
  medmim demo                                  # -> runs/demo/report.md
  medmim demo --quick                          # -> runs/demo-quick/report.md
  medmim demo --gpu                            # -> runs/demo-gpu/report.md
  medmim demo --out runs/demo600 pretrain_steps=600 phantoms=48
  medmim demo --restart                        # delete runs/demo and start over
settings (key=value; documented in medmim/demo/config.py):
  """


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the budget, output, seed and restart flags to `parser`; the epilog lists settings."""
    import dataclasses
    import textwrap

    from medmim.demo.config import DemoConfig

    names = " ".join(f.name for f in dataclasses.fields(DemoConfig))
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG + textwrap.fill(names, 92, subsequent_indent="  ")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="demo settings")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--quick", action="store_true", help="the ~3 minute budget")
    budget.add_argument(
        "--gpu",
        action="store_true",
        help="a larger budget for a CUDA GPU (3000 pretraining steps, batch 16)",
    )
    budget.add_argument(
        "--tiny", action="store_true", help="seconds; a smoke test whose numbers mean nothing"
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (default runs/demo, runs/demo-quick, runs/demo-gpu, runs/demo-tiny)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of everything (default 0)")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="delete the output folder first instead of continuing it",
    )
    parser.add_argument(
        "--stop-on-error",
        action="store_true",
        help="stop at the first failing stage (default: record it and go on)",
    )


def run(args: argparse.Namespace) -> int:
    """Run or continue the demo; returns `run_demo`'s exit code, or 130 when interrupted."""
    from medmim.demo.config import demo_config
    from medmim.demo.pipeline import run_demo

    profile = "quick" if args.quick else "tiny" if args.tiny else "gpu" if args.gpu else "default"
    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    cfg = demo_config(profile, overrides)
    out = args.out or {"default": "runs/demo"}.get(profile, f"runs/demo-{profile}")
    for handler in logging.getLogger().handlers:  # the console shows banners and progress bars;
        if not isinstance(handler, logging.FileHandler):  # each run's train.log keeps the rest
            handler.setLevel(logging.WARNING)
    try:
        return run_demo(cfg, out, restart=args.restart, keep_going=not args.stop_on_error)
    except KeyboardInterrupt:
        again = " ".join(
            [
                "medmim demo",
                *([f"--{profile}"] if profile != "default" else []),
                *([f"--out {args.out}"] if args.out else []),
                *overrides,
            ]
        )
        print(f"\nmedmim demo: interrupted; `{again}` continues where it stopped")
        return 130
