"""`medmim data <subcommand>`: each subcommand is its own module `medmim/cli/data_<name>.py`."""

from __future__ import annotations

import argparse
import importlib
import importlib.util

SUBCOMMANDS: dict[str, str] = {
    "phantoms": "synthetic CT phantoms with organ, nodule and tumor labels (NIfTI)",
    "fingerprint": "counts, spacings, shapes, intensities and unreadable files of a source",
    "plan": "the recipe (modality), target spacing and crop size for a source, as plan.yaml",
    "cache": "preprocess a source into the persistent cache",
    "preview": "a PNG of two training views of a source",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one sub-parser per installed `medmim.cli.data_<name>` module to `parser`."""
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    for name, help_text in SUBCOMMANDS.items():
        module = f"medmim.cli.data_{name}"
        if importlib.util.find_spec(module) is None:
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_data_module=module)
        importlib.import_module(module).add_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Run the chosen data subcommand; returns its exit code (0 when it returns None)."""
    return int(importlib.import_module(args._data_module).run(args) or 0)
