"""PUMIT step time at demo size: the two methods' training steps beside the bare network passes.

In one process and one run, at the demo presets' sizes (`pumit_tokenizer_demo`,
`pumit_mim_demo`: 32x64x64 crops, batch 2, 2x4x4 tokens), measures the median wall time of:

- `tokenizer fwd+bwd`: the bare SAC tokenizer, forward + L1 backward;
- `tokenizer step`: `PUMITTokenizer` forward (L1, prior regularization, GAN generator term,
  discriminator gradient) + backward + AdamW step + `on_optimizer_step` (discriminator step);
- `vit fwd+bwd`: the bare universal ViT (`uvit_demo`), unmasked forward + backward;
- `mim step`: `PUMITMIM` forward (frozen tokenizer targets, 55% masking, ViT, head, soft CE) +
  backward + AdamW step.

The difference between a step and its bare pass is the method's overhead (the discriminator's
three passes for the tokenizer; the frozen tokenizer's forward for MIM). Prints a table and
optionally writes JSON. Timings on a shared machine vary; compare rows of the same run, and on
an oversubscribed CPU use `--threads 1` (OpenMP threads that wait for each other distort the rest).

    python benchmarks/pumit.py --repeats 10 --out runs/bench/pumit.json
    python benchmarks/pumit.py --da 2        # thick-slice batches (depth crop 4 x 2 = 8)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from medmim.config import load_config, to_dict
from medmim.registry import BACKBONES, METHODS
from medmim.train.config import RunConfig
from medmim.types import TrainContext


def timeit(fn: Callable[[], None], repeats: int, warmup: int = 2) -> float:
    """Median seconds of `fn` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def method_step(method: torch.nn.Module, batch: dict, step: list[int]) -> Callable[[], None]:
    """One engine-like optimizer step of a method (forward, backward, AdamW, hook)."""
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-4)

    def run() -> None:
        out = method(batch, step[0])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        method.on_optimizer_step(step[0])
        step[0] += 1

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--da", type=int, default=0, help="degree of anisotropy of the batch (0-5)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok_cfg = load_config("pumit_tokenizer_demo", ["method.disc_warmup_steps=0"], schema=RunConfig)
    mim_cfg = load_config("pumit_mim_demo", schema=RunConfig)
    d, h, w = (int(s) for s in tok_cfg.data.crop_size)
    depth = max(d >> args.da, 1) if args.da < 5 else 1
    spacing = torch.tensor(
        [[float(2**args.da) if args.da < 5 else 1e8, 1.0, 1.0]] * int(tok_cfg.data.batch_size)
    )
    x = torch.rand(int(tok_cfg.data.batch_size), 1, depth, h, w)
    batch = {"views": [x], "index": torch.arange(x.shape[0]), "spacing": spacing}
    ctx = TrainContext(total_steps=10_000)

    tok_method = METHODS.build(
        to_dict(tok_cfg.method), backbone=to_dict(tok_cfg.model), context=ctx
    )
    tokenizer = tok_method.tokenizer

    def tokenizer_pass() -> None:
        tokenizer.zero_grad(set_to_none=True)
        F.l1_loss(tokenizer(2 * x - 1, spacing).recon, 2 * x - 1).backward()

    rows = {
        "tokenizer fwd+bwd": timeit(tokenizer_pass, args.repeats),
        "tokenizer step": timeit(method_step(tok_method, batch, [0]), args.repeats),
    }
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "tokenizer.ckpt"
        torch.save({"encoder": tokenizer.state_dict(), "encoder_config": tokenizer.config}, ckpt)
        mim_method = METHODS.build(
            {**to_dict(mim_cfg.method), "tokenizer": str(ckpt)},
            backbone=to_dict(mim_cfg.model),
            context=ctx,
        )
    vit = BACKBONES.build(to_dict(mim_cfg.model))

    def vit_pass() -> None:
        vit.zero_grad(set_to_none=True)
        vit.forward_features(x, spacing=spacing, return_features=False)[
            "patch"
        ].square().mean().backward()

    rows["vit fwd+bwd"] = timeit(vit_pass, args.repeats)
    rows["mim step"] = timeit(method_step(mim_method, batch, [0]), args.repeats)
    info = {
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "input": list(x.shape),
        "da": args.da,
        "repeats": args.repeats,
        "median_s": rows,
    }
    print(
        f"PUMIT demo size, input {tuple(x.shape)}, DA {args.da}, {torch.get_num_threads()} threads"
    )
    for name, seconds in rows.items():
        print(f"  {name:<20} {seconds * 1000:9.1f} ms")
    print(
        f"  tokenizer step / bare = {rows['tokenizer step'] / rows['tokenizer fwd+bwd']:.2f}x, "
        f"mim step / bare ViT = {rows['mim step'] / rows['vit fwd+bwd']:.2f}x"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(info, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
