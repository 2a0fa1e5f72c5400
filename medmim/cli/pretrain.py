"""`medmim pretrain --config PRESET_OR_YAML key=value ...`: self-supervised pretraining.

The same command scales out under torchrun (one process per GPU; gloo on CPU):
`torchrun --nproc_per_node=4 -m medmim pretrain --config smart name=smart4`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

EPILOG = """examples:
  medmim pretrain --config smart_demo name=demo1
  medmim pretrain --config smart.yaml data.source=/data/ct optim.base_lr=5e-4 train.epochs=300
  medmim pretrain --config smart name=demo1 resume=true          # continue a killed run
  medmim pretrain --config smit init_from=runs/demo1 name=demo2  # new run from weights
  torchrun --nproc_per_node=4 -m medmim pretrain --config smart name=big  # 4 GPUs (DDP)

The run directory runs/<name>/ holds config.yaml, train.log, metrics.jsonl, TensorBoard events,
checkpoints/last.ckpt, figures/*.png. Watch it with: tensorboard --logdir runs"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "--config", "-c", default=None,
        help="a packaged preset name (see --list-presets) or a YAML file",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value",
        help="config overrides, e.g. optim.base_lr=1e-3 data.batch_size=4 (YAML values)",
    )
    parser.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )


def run(args: argparse.Namespace) -> int:
    from medmim.config import list_presets, load_config

    if args.list_presets:
        print("\n".join(list_presets()))
        return 0
    if not args.config:
        print("medmim pretrain: error: --config PRESET_OR_YAML is required "
              f"(presets: {', '.join(list_presets()) or 'none'})", file=sys.stderr)
        return 2
    from omegaconf import OmegaConf

    from medmim.train.config import RunConfig

    cfg = load_config(args.config, args.overrides, schema=RunConfig)
    if args.print_config:
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
        return 0
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun: only rank 0 talks
        logging.getLogger("medmim").setLevel(logging.WARNING)
    from medmim.train.interrupt import RunInterrupted
    from medmim.train.loop import NonFiniteLossError, pretrain

    try:
        run_dir = pretrain(cfg)
    except NonFiniteLossError as exc:
        print(f"medmim pretrain: stopped: {exc}", file=sys.stderr)
        return 3
    except RunInterrupted as exc:
        print(f"medmim pretrain: {exc}. Continue with:\n  {resume_command()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        last = Path(cfg.output_dir) / cfg.name / "checkpoints" / "last.ckpt"
        what = (f"continue from {last} with:\n  {resume_command()}" if last.is_file() else
                "no checkpoint was written yet, so run the same command again to start over")
        print(f"medmim pretrain: interrupted; {what}", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run directory: {run_dir}")
    return 0


def resume_command() -> str:
    """This invocation with `resume=true` (shell-quoted), for the message after a stop."""
    args = [a for a in sys.argv[1:] if not a.startswith("resume=")]
    return " ".join(["medmim", *(shlex.quote(a) for a in args), "resume=true"])
