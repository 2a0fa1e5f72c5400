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

from medmim.cli._vocabulary import PRETRAIN_KEYS

EPILOG = """examples:
  medmim pretrain --config smart_demo name=demo1
  medmim pretrain --config smart.yaml data.source=/data/ct optim.base_lr=5e-4 train.epochs=300
  medmim pretrain --resume runs/demo1                           # continue a stopped run
  medmim pretrain --resume runs/demo1 train.max_steps=5000 optim.lr=1e-4  # longer, lower lr
  medmim pretrain --config smit init_from=runs/demo1 name=demo2  # new run from weights
  torchrun --nproc_per_node=4 -m medmim pretrain --config smart name=big  # 4 GPUs (DDP)

The run directory runs/<name>/ holds config.yaml, train.log, metrics.jsonl, TensorBoard events,
checkpoints/last.ckpt, figures/*.png. Watch it with: tensorboard --logdir runs"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --config, --resume, the key=value overrides and --list-presets / --print-config.

    The downstream commands' flags (`--plan`, ...) are added too, hidden, so that `run` can name the
    key=value setting that does the same.
    """
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "--config",
        "-c",
        default=None,
        help="a packaged preset name (see --list-presets) or a YAML file",
    )
    parser.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR with the settings it was started with (overrides may "
        "change steps, learning rate, logging and checkpoints, not the model or the data)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. optim.base_lr=1e-3 data.batch_size=4 (YAML values)",
    )
    # the downstream commands' flags, caught here to point at pretrain's key=value settings
    for flag in sorted(PRETRAIN_KEYS) + ["--plan", "--config-file"]:
        parser.add_argument(
            flag,
            dest="_flag" + flag[2:].replace("-", "_"),
            default=None,
            nargs="?",
            const="VALUE",
            help=argparse.SUPPRESS,
        )
    parser.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )


def run(args: argparse.Namespace) -> int:
    """Start or resume a pretraining run, or list the presets / print the resolved config.

    Returns:
        The exit code: 0 when done, 2 for a usage or disk error, 3 for a non-finite loss,
        128 + the signal number when stopped by a signal, 130 on Ctrl-C.
    """
    from medmim.config import list_presets, load_config

    if args.list_presets:
        print("\n".join(list_presets()))
        return 0
    wrong = _downstream_flags(args)
    if wrong:
        print(f"medmim pretrain: error: {wrong}", file=sys.stderr)
        return 2
    from omegaconf import OmegaConf

    from medmim.train.config import RunConfig

    base = _resume_base(args)
    if base is None and not args.config:
        print(
            "medmim pretrain: error: --config PRESET_OR_YAML is required to start a run, or "
            "--resume RUN_DIR to continue one "
            f"(presets: {', '.join(list_presets()) or 'none'})",
            file=sys.stderr,
        )
        return 2
    cfg = load_config(
        base if base is not None else args.config, _overrides(args, base), schema=RunConfig
    )
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
        run = Path(cfg.output_dir) / cfg.name
        print(f"medmim pretrain: {exc}. Continue with:\n  {resume_command(run)}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # logs, metrics, figures (checkpoints name a full disk themselves)
        from medmim.train.checkpoint import is_disk_full

        run = Path(cfg.output_dir) / cfg.name
        what = (
            "no space left on" if is_disk_full(exc) else f"{exc.strerror or exc} while writing to"
        )
        print(
            f"medmim pretrain: stopped: {what} {run} ({exc.filename or 'a log file'}); "
            "checkpoints/last.ckpt holds the last saved step. Fix the disk, then continue "
            f"with:\n  {resume_command(run)}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        last = Path(cfg.output_dir) / cfg.name / "checkpoints" / "last.ckpt"
        what = (
            f"continue from {last} with:\n  {resume_command(last.parent.parent)}"
            if last.is_file()
            else "no checkpoint was written yet, so run the same command again to start over"
        )
        print(f"medmim pretrain: interrupted; {what}", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run directory: {run_dir}")
    return 0


def resume_command(run_dir: str | Path | None = None) -> str:
    """The command that continues this run, for the message after a stop: `medmim pretrain
    --resume RUN_DIR` (the saved config holds every setting), or this invocation with
    `resume=true` when the run directory is not known.
    """
    if run_dir is not None:
        return f"medmim pretrain --resume {shlex.quote(str(run_dir))}"
    args = [a for a in sys.argv[1:] if not a.startswith("resume=")]
    return " ".join(["medmim", *(shlex.quote(a) for a in args), "resume=true"])


def _resume_base(args: argparse.Namespace) -> dict | None:
    """The saved config of the run to resume: `--resume RUN_DIR`, or `name=X resume=true`
    without `--config` (then the run is output_dir/name); None when starting a run.

    Raises:
        ConfigError: both --resume and --config, or a folder that holds no run.
    """
    from medmim.errors import ConfigError
    from medmim.train.run_dir import saved_run_config

    pairs = dict(o.split("=", 1) for o in args.overrides if "=" in o)
    if args.resume is not None:
        if args.config:
            raise ConfigError(
                "give --resume RUN_DIR (the run's saved settings) or --config "
                "PRESET (a new run, or resume=true with the same settings), not both"
            )
        return saved_run_config(Path(args.resume))
    if not args.config and str(pairs.get("resume", "")).lower() == "true":
        return saved_run_config(Path(pairs.get("output_dir", "runs")) / pairs.get("name", "run"))
    return None


def _overrides(args: argparse.Namespace, base: dict | None) -> list[str]:
    """The command line's key=value settings; for a resume, also where the run is, and a
    learning rate re-resolved when optim.base_lr / optim.lr_scaling change without optim.lr
    (the saved config holds the lr it resolved).
    """
    overrides = list(args.overrides)
    if base is None:
        return overrides
    keys = {o.split("=", 1)[0] for o in overrides}
    if args.resume is not None:
        run = Path(args.resume)
        overrides = [f"output_dir={run.parent}", f"name={run.name}", *overrides]
    if keys & {"optim.base_lr", "optim.lr_scaling"} and "optim.lr" not in keys:
        overrides.append("optim.lr=null")
    return [*overrides, "resume=true"]


def _downstream_flags(args: argparse.Namespace) -> str | None:
    """A message for a downstream command's flag given to pretrain (`--data X`), naming the
    key=value setting that does it; None when there is none.
    """
    for name, value in vars(args).items():
        if not name.startswith("_flag") or value is None:
            continue
        flag = "--" + name[len("_flag") :].replace("_", "-")
        key = {"--plan": "data.plan", "--config-file": None}.get(flag, PRETRAIN_KEYS.get(flag))
        if key is None:
            return f"unknown flag {flag}; did you mean --config {value}?"
        shown = "false" if key == "train.progress" else value
        return (
            f"medmim pretrain takes settings as key=value, not {flag}: write {key}={shown} "
            "(e.g. medmim pretrain --config smart_demo data.source=DIR name=NAME)"
        )
    return None
