"""`medmim demo [--out runs/demo] [--n 4]`: the data part of the demo, on synthetic phantoms.

phantoms -> fingerprint -> preprocess + cache -> a PNG of two training views. (Interim: the
demo issue extends this to pretraining and the downstream tasks.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    parser.add_argument("--n", type=int, default=4, help="number of phantoms")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", default="smart", help="preprocessing preset")
    parser.add_argument("--crop", type=int, default=64, help="view size (voxels per axis)")


def run(args: argparse.Namespace) -> int:
    from medmim.cli.data_preview import preview
    from medmim.data.cache import VolumeCache, cache_records
    from medmim.data.fingerprint import fingerprint, format_summary
    from medmim.data.preprocess import get_recipe
    from medmim.data.sources import resolve_source

    try:
        from medmim.data.phantoms import generate_phantoms
    except ImportError:
        print(
            "medmim demo: the phantom generator (medmim.data.phantoms) is not installed yet;\n"
            "run `medmim data fingerprint/cache/preview` on your own scans instead."
        )
        return 1
    t0 = time.perf_counter()
    data = args.out / "phantoms"
    print(f"[1/4] {args.n} synthetic CT phantoms -> {data}")
    generate_phantoms(data, args.n, seed=args.seed)
    records = resolve_source(data / "images" if (data / "images").is_dir() else data)

    print(f"[2/4] fingerprint of {len(records)} scans")
    fp = fingerprint(records)
    (args.out / "fingerprint.json").write_text(json.dumps(fp, indent=1))
    print("      " + format_summary(fp).replace("\n", "\n      "))

    recipe = get_recipe(args.recipe, pad_to=[args.crop] * 3)
    cache = VolumeCache(args.out / ".cache", recipe)
    print(f"[3/4] preprocess ({args.recipe}: {recipe.spacing} mm, window {recipe.window}) + cache")
    volumes, errors = cache_records(records, cache)
    print(f"      {len(volumes)} cached, {len(errors)} skipped -> {cache.root}")

    png = args.out / "figures" / "views.png"
    print("[4/4] two views of the first scan")
    preview(
        records[0], recipe, png, crop=[args.crop] * 3, cache_dir=args.out / ".cache", seed=args.seed
    )
    print(
        f"\ndone in {time.perf_counter() - t0:.1f} s:\n  phantoms     {data}\n"
        f"  fingerprint  {args.out / 'fingerprint.json'}\n  cache        {cache.root}\n  views        {png}"
    )
    return 0
