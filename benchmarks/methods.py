"""One training step of SMART, SMIT, iBOT and AttMask beside the bare encoder passes it needs.

    python benchmarks/methods.py [--sizes 64 96] [--batch 1] [--repeats 3]
        [--out benchmarks/results/methods.json]

A thin wrapper over `medmim.bench.steps` and `medmim.bench.timing` (also part of `medmim bench`,
which adds the other methods, FLOPs and peak memory). For each method and size, the method is
built from its preset: `<method>_demo` at 64^3 (small encoders, K = 1024), `<method>` above
(paper sizes; the crop and a ViT's position grid follow the size). Two views of `--batch`
volumes each.

- step: `method(batch, step)` + `loss.backward()` + AdamW step (the engine's parameter groups)
  + `on_optimizer_step` (EMA update of the teacher).
- bare: the encoder passes the step cannot avoid, on the same two views: the student backbone
  forward + backward (masked with the method's typical ratio), plus the teacher's forward
  without gradient.
- ratio = step / bare: what the method adds (masking, heads, losses, reconstruction head,
  optimizer, EMA). The goal is <= 1.2.

Timing (on a shared CPU use `--threads 1`): median over `--repeats` interleaved rounds after one
warm-up, wall clock and process CPU time. fp32 by default, `--precision bf16` on a GPU.
"""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext
from pathlib import Path

import torch

from medmim.bench.machine import machine_info
from medmim.bench.steps import build_case
from medmim.bench.timing import interleaved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["smart", "smit", "ibot", "attmask"])
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
    amp = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if args.precision == "bf16"
        else nullcontext
    )
    torch.manual_seed(0)
    cases = [build_case(m, s, args.batch, device, amp) for s in args.sizes for m in args.methods]
    fns = {f"{i}/{k}": getattr(c, k) for i, c in enumerate(cases) for k in ("step", "bare")}
    times = interleaved(fns, args.repeats, device)
    clock = "wall_s" if device.type == "cuda" else "cpu_s"
    results = []
    print(
        f"one training step vs its bare encoder passes ({device}, {args.precision}, 2 views x "
        f"{args.batch}, median of {args.repeats}, {clock[:-2]} time)"
    )
    print(
        f"{'method':<9} {'size':>4} {'preset':<15} {'step s':>8} {'bare s':>8} {'ratio':>6}  "
        f"{'wall ratio':>10}"
    )
    for i, c in enumerate(cases):
        step, bare = times[f"{i}/step"], times[f"{i}/bare"]
        row = {
            "method": c.method,
            "size": c.size[0],
            "preset": c.preset,
            **c.facts,
            "wall": {
                "step_s": step["wall_s"],
                "bare_s": bare["wall_s"],
                "ratio": step["wall_s"] / bare["wall_s"],
            },
            "cpu": {
                "step_s": step["cpu_s"],
                "bare_s": bare["cpu_s"],
                "ratio": step["cpu_s"] / bare["cpu_s"],
            },
        }
        results.append(row)
        r = row[clock[:-2]]
        print(
            f"{c.method:<9} {c.size[0]:>4} {c.preset:<15} {r['step_s']:>8.3f} {r['bare_s']:>8.3f} "
            f"{r['ratio']:>6.2f}  {row['wall']['ratio']:>10.2f}"
        )
    meta = {
        **machine_info(),
        "device": str(device),
        "precision": args.precision,
        "batch_per_view": args.batch,
        "repeats": args.repeats,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
