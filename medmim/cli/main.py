"""`medmim <command>`: a thin dispatcher. Each command is one module in `medmim/cli/` with
`add_arguments(parser)` and `run(args) -> int`; it is imported only when used, so
`medmim --help` stays fast and a command's heavy imports cost nothing elsewhere.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from medmim import __version__
from medmim.cli._messages import flag_message
from medmim.cli._vocabulary import use_formatter
from medmim.errors import ConfigError, DataError

#: command -> (module, one-line help). A module that does not exist yet is not listed.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("medmim.cli.data", "phantoms, fingerprint, cache and preview of a data source"),
    "pretrain": ("medmim.cli.pretrain", "self-supervised pretraining (SMART, SMIT, iBOT, ...)"),
    "export": ("medmim.cli.export", "write a run's encoder as safetensors + JSON"),
    "classify": ("medmim.cli.classify", "linear probe / fine-tune a classifier"),
    "segment": ("medmim.cli.segment", "fine-tune a segmenter and predict"),
    "attention": ("medmim.cli.attention", "attention maps as NIfTI and PNG overlays"),
    "localize": ("medmim.cli.localize", "zero-shot localization from attention maps"),
    "cluster": ("medmim.cli.cluster", "unsupervised clustering of encoder embeddings"),
    "embed": ("medmim.cli.embed", "frozen embeddings of every scan as embeddings.npy + index.csv"),
    "reconstruct": ("medmim.cli.reconstruct", "masked input, prediction and target slices"),
    "report": ("medmim.cli.report", "a Markdown report over run directories"),
    "demo": ("medmim.cli.demo", "the whole study on synthetic phantoms"),
    "bench": ("medmim.cli.bench", "benchmarks: step time, memory, throughput"),
}


def available_commands() -> dict[str, tuple[str, str]]:
    """The commands whose module is installed."""
    return {k: v for k, v in COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}


def build_parser() -> argparse.ArgumentParser:
    """The `medmim` argument parser, with one sub-parser per available command."""
    parser = argparse.ArgumentParser(
        prog="medmim",
        description="Pretrain 3D medical image transformers (SMART, SMIT, PUMIT, ...) "
        "and use them.",
    )
    parser.add_argument("--version", action="version", version=f"medmim {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in available_commands().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    use_formatter(parser)  # "(default: X)" in every command's --help, data subcommands too
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `medmim` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (ConfigError, DataError) as exc:
        print(f"medmim {args.command}: error: {flag_message(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medmim {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
