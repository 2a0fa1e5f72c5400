"""`medmim export RUN_OR_CKPT [--out DIR]`: write a run's encoder as safetensors + JSON."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the run-or-checkpoint argument and --out to `parser`."""
    parser.add_argument(
        "source", metavar="RUN_OR_CKPT", help="a run directory (runs/<name>) or a .ckpt file"
    )
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="output directory (default: RUN/export)"
    )


def run(args: argparse.Namespace) -> int:
    """Export the run's encoder and print the files and how to load them; returns 0."""
    from medmim.eval.export import ENCODER_META, ENCODER_WEIGHTS, export, is_tokenizer

    out = export(args.source, args.out)
    meta = json.loads((out / ENCODER_META).read_text(encoding="utf-8"))
    print(f"wrote {out / ENCODER_WEIGHTS}")
    print(
        f"wrote {out / ENCODER_META}  (backbone {meta['backbone']['name']}, "
        f"method {meta.get('method')})"
    )
    if is_tokenizer(meta["backbone"]):
        print(
            f"a PUMIT tokenizer, not a downstream encoder: train stage 2 with "
            f"medmim pretrain --config pumit_mim method.tokenizer={out}"
        )
    if "monai_swinunetr" in meta:
        print(
            "load into MONAI: medmim.eval.export.load_into_swinunetr(SwinUNETR(out_channels=N, "
            f"**{meta['monai_swinunetr']}), '{out}')"
        )
    return 0
