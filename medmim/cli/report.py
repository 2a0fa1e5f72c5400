"""`medmim report`: one Markdown report over the results of several runs, side by side.

Example:
    medmim report runs/smart runs/smit cls/scratch --out report.md
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the run folders, --out and --title to `parser`."""
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="folders holding results.json files (searched recursively), "
        "pretraining run folders, or results.json files",
    )
    parser.add_argument("--out", default="report.md", metavar="FILE", help="Markdown file to write")
    parser.add_argument("--title", default="medmim report", help="the report's heading")


def run(args: argparse.Namespace) -> int:
    """Write the Markdown report over the given runs; returns 0."""
    from medmim.eval.report import write_report

    print(f"wrote {write_report(args.runs, args.out, args.title)}")
    return 0
