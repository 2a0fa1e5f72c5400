"""Forward+backward time and peak memory of every encoder preset, beside MONAI's bare models.

    python benchmarks/encoders.py [--sizes 64 96] [--repeats 3]
        [--out benchmarks/results/encoders.json]

Each medmim preset is paired with the bare MONAI model of the same size: `SwinTransformer` (same
embed, depths, heads, window 4, patch 2, drop path, fused no-grad attention) for the Swin presets,
`monai.networks.nets.ViT` (classification=True, i.e. with a [CLS]) for the ViT presets. Overhead =
medmim / MONAI - 1; for the Swin presets it is the cost of the mask token (70% of the cells masked)
and the semantic-attention block (plus its norms and pooling).

Method (batch 1, fp32, train mode, CPU threads as set by torch):
- time: one forward + `loss.backward()` (loss = sum of the means of every output tensor), median
  over `--repeats` runs after one warm-up, both wall clock and process CPU time (the CPU time is
  less sensitive to other processes on a shared machine), and the minimum CPU time (the least
  disturbed run, the most robust estimate of the cost itself under background load). Runs are
  interleaved (every model once per round, in turn), so background load on a shared machine hits
  the pair alike.
- added parts (Swin): the mask-token blend, the SA block and the extra norms/pooling run alone
  (fwd+bwd on inputs of the real shapes) in the same rounds; their minimum CPU time over MONAI's
  minimum is the overhead with the least noise, since end-to-end differences of a few percent
  drown in the load of a shared machine.
- memory: peak RSS growth during one forward + backward, each model in a fresh subprocess: the
  high-water mark VmHWM is reset (/proc/self/clear_refs) just before the step, then VmHWM after
  it minus VmRSS before it (model, input and Python already resident). It counts activations,
  gradients and allocator slack, not the weights. Linux only.
- parameters: counted on the default-size preset with 1 input channel.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from monai.networks.nets import ViT
from monai.networks.nets.swin_unetr import SwinTransformer

from medmim.masking.utils import upsample_mask
from medmim.models.swin import SWIN_PRESETS, SwinEncoder
from medmim.models.vit import VIT_PRESETS
from medmim.registry import BACKBONES


def build_pair(preset: str, size: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(medmim encoder, bare MONAI model of the same size)."""
    ours = BACKBONES.build(preset)
    c = ours.config
    if c["name"] == "swin":
        ref = SwinTransformer(
            in_chans=1,
            embed_dim=c["embed_dim"],
            window_size=(4, 4, 4),
            patch_size=(2, 2, 2),
            depths=c["depths"],
            num_heads=c["num_heads"],
            drop_path_rate=c["drop_path_rate"],
            use_flash_attention=True,
        )
    else:
        ref = ViT(
            in_channels=1,
            img_size=size,
            patch_size=16,
            hidden_size=c["embed_dim"],
            mlp_dim=4 * c["embed_dim"],
            num_layers=c["depth"],
            num_heads=c["num_heads"],
            classification=True,
            qkv_bias=True,
        )
    return ours.train(), ref.train()


def step(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> None:
    """One forward + backward; the loss touches every output tensor."""
    if mask is None:
        out = model(x)
        tensors = out if isinstance(out, list) else [out[0], *out[1]]
    else:
        feats = model.forward_features(x, mask)
        tensors = [v for k, v in feats.items() if k not in ("features", "grid")] + list(
            feats["features"]
        )
    sum(t.float().mean() for t in tensors).backward()
    model.zero_grad(set_to_none=True)


def inputs(model: torch.nn.Module, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(1, 1, size, size, size)
    return x, torch.rand(1, *model.mask_grid(x.shape)) < 0.7


def swin_extras(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor) -> Callable[[], None]:
    """Only what medmim adds to MONAI's Swin, on inputs of the real shapes: fwd+bwd of the
    mask-token blend, the semantic-attention block, the patch/[CLS] norm and the pooled-token
    norm."""
    p, stage, pool = model.patch_size, model.sa_stage, model.pool_stage
    x0 = torch.randn(1, model.embed_dim, *(s // p for s in x.shape[2:]), requires_grad=True)
    tokens = torch.randn(1, mask[0].numel(), model.stage_width(stage), requires_grad=True)
    n_pool = math.prod(s // (p * 2**pool) for s in x.shape[2:])
    pooled = torch.randn(1, n_pool, model.stage_width(pool), requires_grad=True)

    def run() -> None:
        cells = upsample_mask(mask, 2**stage).unsqueeze(1)
        blended = torch.where(cells, model.mask_token, x0)
        cls, satt = model.sa(tokens)
        out = [blended, satt, model.norm(cls), model.norm(tokens)]
        if model.pool_norm is not None:
            out.append(model.pool_norm(pooled).mean(1))
        sum(t.mean() for t in out).backward()
        model.zero_grad(set_to_none=True)

    return run


def time_pairs(
    presets: list[str], size: int, repeats: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Wall and process-CPU seconds of fwd+bwd for each preset, its MONAI twin and (Swin) the
    medmim-only parts alone; every callable runs once per round, in turn."""
    runs: list[tuple[str, str, Callable[[], None]]] = []
    for preset in presets:
        ours, ref = build_pair(preset, size)
        x, mask = inputs(ours, size)
        runs += [
            (preset, "medmim", partial(step, ours, x, mask)),
            (preset, "monai", partial(step, ref, x, None)),
        ]
        if isinstance(ours, SwinEncoder):
            runs.append((preset, "extras", swin_extras(ours, x, mask)))
    times: dict[tuple[str, str], list[tuple[float, float]]] = {(p, k): [] for p, k, _ in runs}
    for rnd in range(repeats + 1):
        for preset, kind, fn in runs:
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            if rnd:  # round 0 is the warm-up
                times[(preset, kind)].append((time.perf_counter() - t0, time.process_time() - c0))
    stats = {"wall": (0, statistics.median), "cpu": (1, statistics.median), "cpu_min": (1, min)}
    return {
        p: {
            name: {k: fn([t[i] for t in times[(q, k)]]) for (q, k) in times if q == p}
            for name, (i, fn) in stats.items()
        }
        for p in presets
    }


def status_kb(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in KiB."""
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def peak_child(preset: str, size: int, kind: str) -> None:
    """Run in a fresh process: print the peak RSS growth (bytes) of one fwd+bwd."""
    ours, ref = build_pair(preset, size)
    x, mask = inputs(ours, size)
    model, mask = (ours, mask) if kind == "medmim" else (ref, None)
    del ours, ref
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark VmHWM to the current RSS (Linux >= 4.0)
    before = status_kb("VmRSS")
    step(model, x, mask)
    print((status_kb("VmHWM") - before) * 1024)


def peak_memory(preset: str, size: int, kind: str) -> int:
    cmd = [sys.executable, __file__, "--child", preset, str(size), kind]
    return int(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[-1])


def param_counts(preset: str) -> dict[str, int]:
    ours, ref = build_pair(preset, 96)
    n = {
        "total": sum(p.numel() for p in ours.parameters()),
        "monai": sum(p.numel() for p in ref.parameters()),
    }
    if hasattr(ours, "sa") and ours.sa is not None:
        n["semantic_attention"] = sum(p.numel() for p in ours.sa.parameters())
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=[*SWIN_PRESETS, *VIT_PRESETS])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/encoders.json"))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        peak_child(args.child[0], int(args.child[1]), args.child[2])
        return 0
    rows = []
    params = {p: param_counts(p) for p in args.presets}
    for size in args.sizes:
        times = time_pairs(args.presets, size, args.repeats)
        for p in args.presets:
            mem = {k: peak_memory(p, size, k) / 2**20 for k in ("medmim", "monai")}
            t = times[p]
            row = {"preset": p, "size": size, "time_s": t, "peak_rss_mb": mem, "overhead_pct": {}}
            for name, v in (*t.items(), ("mem", mem)):
                row["overhead_pct"][name] = 100 * (v["medmim"] / v["monai"] - 1)
            if "extras" in t["cpu_min"]:  # the added parts alone, against MONAI's whole step
                row["overhead_pct"]["extras_cpu_min"] = (
                    100 * t["cpu_min"]["extras"] / t["cpu_min"]["monai"]
                )
            rows.append(row)
    head = f"{'preset':<11}{'size':>5}{'params':>12}{'MONAI':>12}"
    for col in ("wall s (median)", "cpu s (median)", "cpu s (min)", "peak MB"):
        head += f"{col + ' ours/MONAI':>28}{'d':>7}"
    print(head + f"{'extras/MONAI (cpu min)':>24}")
    for r in rows:
        n, t, o = params[r["preset"]], r["time_s"], r["overhead_pct"]
        line = f"{r['preset']:<11}{r['size']:>5}{n['total']:>12,}{n['monai']:>12,}"
        for key, v in (*t.items(), ("mem", r["peak_rss_mb"])):
            line += f"{v['medmim']:>19.2f}/{v['monai']:<8.2f}{o[key]:>6.1f}%"
        extras = o.get("extras_cpu_min")
        print(line + (f"{extras:>23.1f}%" if extras is not None else f"{'-':>24}"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "batch": 1,
    }
    args.out.write_text(
        json.dumps({"meta": meta, "params": params, "rows": rows}, indent=2) + "\n",
        encoding="utf-8",
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
