"""Two-view crops per second: the cached medmim pipeline vs an uncached MONAI pipeline.

A thin wrapper over `medmim.bench.data` (also part of `medmim bench`): both pipelines read the
same synthetic CT phantoms with the same recipe (RAS, 2 mm, HU window, foreground crop); the
uncached one runs MONAI's `LoadImaged -> ... -> RandSpatialCropSamplesd` per item, the cached
one is `build_pretrain_dataset` (memory-mapped), with and without intensity augmentation.

    python benchmarks/data_throughput.py --out runs/bench/data_throughput.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from medmim.bench.data import loader_throughput
from medmim.bench.machine import machine_info
from medmim.bench.report import data_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4, help="scans")
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--items", type=int, default=64, help="items per cached measurement")
    p.add_argument("--uncached-items", type=int, default=12, help="items per uncached measurement")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--size", default="default", choices=["default", "small"], help="phantom size")
    p.add_argument("--out", type=Path, default=Path("runs/bench/data_throughput.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = loader_throughput(
            Path(tmp),
            args.n,
            args.crop,
            args.items,
            args.uncached_items,
            tuple(args.workers),
            args.size,
        )
    print(
        f"\n{args.n} scans {result['scans']} -> {result['cached_shapes']} at 2 mm; two-view "
        f"{args.crop}^3 samples per second (cache built in {result['cache_build_s']:.1f} s)"
    )
    print(data_table(result))
    result["machine"] = machine_info()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
