"""One training step of SMART, SMIT, iBOT and AttMask beside the bare encoder passes it needs.

    python benchmarks/methods.py [--sizes 64 96] [--batch 1] [--repeats 3] [--out benchmarks/results/methods.json]

For each method and size, the method is built from its preset: `<method>_demo` at 64^3 (demo
sizes: small encoders, K = 1024), `<method>` at 96^3 (paper sizes: swin_smart / swin_smit /
vit_smart, K = 8192; the crop is overridden to 96^3, the ViT's position grid to 6^3). Two views of
`--batch` volumes each.

- step: `method(batch, step)` + `loss.backward()` + AdamW step (the engine's parameter groups,
  `medmim.train.optim.build_optimizer`) + `on_optimizer_step` (EMA update of the teacher).
- bare: the encoder passes the step cannot avoid, on the same two views concatenated: the
  student backbone forward + backward (a loss touching every output; masked with the method's
  typical ratio: 0.6 of the cells for SMART, 0.7 for SMIT, 0.3 for iBOT/AttMask), plus the teacher
  backbone forward without gradient.
- ratio = step / bare: what the method adds (masking, heads, losses, reconstruction head,
  optimizer, EMA). The goal is <= 1.2.

Timing (on a shared CPU use `--threads 1`: idle OpenMP threads spin and inflate both clocks):
median over `--repeats` after one warm-up, wall clock and process CPU time (the CPU time
is less sensitive to other processes on a shared machine; on a GPU only wall time means
anything). All configurations run interleaved, one repeat of each in turn, so background load
hits them alike. fp32 by default, `--precision bf16` for autocast on a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from medmim.config import load_config, to_dict
from medmim.registry import METHODS
from medmim.train.config import RunConfig
from medmim.train.optim import build_optimizer
from medmim.types import TrainContext

#: masked fraction of the student's cells in the bare pass (a typical step of each method).
BARE_MASK_RATIO = {"smart": 0.6, "smit": 0.7, "ibot": 0.3, "attmask": 0.3}


def build(method: str, size: int, device: torch.device) -> tuple[Any, torch.optim.Optimizer, dict[str, Any]]:
    """The method from its preset at `size` (demo preset at 64^3), its optimizer, and facts."""
    preset = f"{method}_demo" if size <= 64 else method
    cfg = load_config(preset, schema=RunConfig)
    overrides = [f"data.crop_size=[{size},{size},{size}]"]
    if str(cfg.model.name).startswith("vit"):
        overrides.append(f"model.pos_grid=[{size // 16},{size // 16},{size // 16}]")
    cfg = load_config(preset, overrides, schema=RunConfig)
    context = TrainContext(steps_per_epoch=100, total_steps=100 * int(cfg.train.epochs), crop_size=(size,) * 3)
    net = METHODS.build(to_dict(cfg.method), backbone=to_dict(cfg.model), context=context).to(device).train()
    optimizer = build_optimizer(net, cfg.optim)
    facts = {
        "preset": preset,
        "model": to_dict(cfg.model),
        "out_dim": int(cfg.method.get("out_dim", 0)),
        "params_trained": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "params_encoder": sum(p.numel() for p in net.encoder.parameters()),
    }
    return net, optimizer, facts


def make_batch(size: int, batch: int, device: torch.device) -> dict[str, Any]:
    views = [torch.rand(batch, 1, size, size, size, device=device) for _ in range(2)]
    return {"views": views, "index": torch.arange(batch, device=device)}


def step_fn(net: Any, optimizer: torch.optim.Optimizer, batch: dict[str, Any], amp: Any) -> Callable[[int], None]:
    """One training step: forward, backward, optimizer step, EMA update."""

    def run(i: int) -> None:
        with amp():
            out = net(batch, i)
        out.loss.float().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        net.on_optimizer_step(i)

    return run


def bare_fn(net: Any, batch: dict[str, Any], ratio: float, amp: Any) -> Callable[[int], None]:
    """The encoder passes of a step: student fwd+bwd (masked) and teacher fwd, two views."""
    x = torch.cat(batch["views"])
    mask = torch.rand(len(x), *net.encoder.mask_grid(x.shape), device=x.device) < ratio
    student, teacher = net.encoder, net.teacher["backbone"]

    def run(i: int) -> None:
        with amp():
            with torch.no_grad():
                teacher(x)
            feats = student(x, mask)
            tensors = [v for k, v in feats.items() if torch.is_tensor(v)] + list(feats["features"])
            loss = sum(t.float().mean() for t in tensors)
        loss.backward()
        student.zero_grad(set_to_none=True)

    return run


def timed(fn: Callable[[int], None], i: int, device: torch.device) -> tuple[float, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, time.process_time() - c0


def run_all(methods: list[str], sizes: list[int], batch: int, repeats: int, device: torch.device, amp: Any) -> list[dict[str, Any]]:
    """Interleaved timings of every (method, size) step and bare pass."""
    configs = []
    for size in sizes:
        for method in methods:
            net, optimizer, facts = build(method, size, device)
            data = make_batch(size, batch, device)
            fns = {"step": step_fn(net, optimizer, data, amp), "bare": bare_fn(net, data, BARE_MASK_RATIO[method], amp)}
            configs.append({"method": method, "size": size, **facts, "fns": fns, "times": {"step": [], "bare": []}})
    for rnd in range(repeats + 1):
        for cfg in configs:
            for kind, fn in cfg["fns"].items():
                t = timed(fn, rnd, device)
                if rnd:  # round 0 is the warm-up
                    cfg["times"][kind].append(t)
    results = []
    for cfg in configs:
        row = {k: v for k, v in cfg.items() if k not in ("fns", "times")}
        for i, clock in enumerate(("wall", "cpu")):
            step = statistics.median(t[i] for t in cfg["times"]["step"])
            bare = statistics.median(t[i] for t in cfg["times"]["bare"])
            row[clock] = {"step_s": step, "bare_s": bare, "ratio": step / bare}
        results.append(row)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(BARE_MASK_RATIO))
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--batch", type=int, default=1, help="volumes per view")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/methods.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.precision == "bf16" else nullcontext
    torch.manual_seed(0)
    results = run_all(args.methods, args.sizes, args.batch, args.repeats, device, amp)
    clock = "wall" if device.type == "cuda" else "cpu"
    print(f"one training step vs its bare encoder passes ({device}, {args.precision}, 2 views x {args.batch}, "
          f"median of {args.repeats}, {clock} time)")
    print(f"{'method':<9} {'size':>4} {'preset':<13} {'step s':>8} {'bare s':>8} {'ratio':>6}  {'wall ratio':>10}")
    for r in results:
        c = r[clock]
        print(f"{r['method']:<9} {r['size']:>4} {r['preset']:<13} {c['step_s']:>8.3f} {c['bare_s']:>8.3f} "
              f"{c['ratio']:>6.2f}  {r['wall']['ratio']:>10.2f}")
    meta = {"device": str(device), "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "precision": args.precision, "batch_per_view": args.batch,
            "repeats": args.repeats}
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
