"""`medmim bench [--out DIR] [--quick] [key=value ...]`: step time, memory, throughput, inference.

Writes OUT/bench.json (every figure, the machine and the date) and OUT/bench.md (tables).
"""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """examples:
  medmim bench                         # everything (a few minutes on a CPU) -> runs/bench/
  medmim bench --quick                 # about a minute: 3 methods, small data and volume
  medmim bench methods=[smart,smit] size=96 repeats=5
  medmim bench peak_tflops=989         # MFU on a GPU whose peak medmim does not know
settings: see BenchConfig in medmim/bench/suite.py"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the key=value settings, --quick / --tiny and --out to `parser`."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="benchmark settings")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smaller, faster run")
    size.add_argument("--tiny", action="store_true", help="seconds; checks the plumbing only")
    parser.add_argument("--out", default="runs/bench", metavar="DIR", help="output folder")


def run(args: argparse.Namespace) -> int:
    """Run the benchmarks, write bench.json and bench.md and print the tables; returns 0."""
    from medmim.bench.suite import bench_config, run_bench

    cfg = bench_config(
        "quick" if args.quick else "tiny" if args.tiny else "default", args.overrides
    )
    run_bench(cfg, args.out)
    print((Path(args.out) / "bench.md").read_text(encoding="utf-8"))
    print(f"wrote {args.out}/bench.json and bench.md")
    return 0
