"""Step time and peak memory of DINO multi-crop local views (`data.local_views`), per method.

    python benchmarks/multicrop.py [--methods smart ibot] [--locals 0 2 4] [--local-size 32]
        [--size 64] [--batch 2] [--repeats 3] [--threads 1]
        [--out benchmarks/results/multicrop.json]

The method is built from its `_demo` preset at `--size`^3 (two global views of `--batch`
volumes); the same network then runs steps with 0, 2, 4 ... extra `--local-size`^3 local views
(student only, unmasked, compared with every teacher view). Times: median CPU (GPU: wall)
seconds of interleaved rounds in one process, so the configurations share the machine's load.
Peak memory: the resident-set high-water growth of one step, in a fresh subprocess per
configuration (CPU; as `medmim bench`); not measured on a GPU here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from medmim.bench.machine import machine_info
from medmim.bench.steps import _step_fn, build_case
from medmim.bench.timing import interleaved
from medmim.train.optim import build_optimizer


def with_locals(case, n: int, size: int) -> dict:
    """The case's batch plus `n` local views of `size`^3."""
    views = case.batch["views"]
    local = [
        torch.rand(views[0].shape[0], views[0].shape[1], size, size, size, device=views[0].device)
        for _ in range(n)
    ]
    return {**case.batch, **({"local_views": local} if n else {})}


def peak_rss_mib(
    method: str, size: int, batch: int, n: int, local: int, threads: int
) -> float | None:
    """Peak resident-set growth (MiB) of one step with `n` local views, in a fresh process
    (`medmim.bench.timing.peak_step_memory`: the VmHWM reset before the step)."""
    code = (
        "import sys, torch; sys.path.insert(0, 'benchmarks'); import multicrop as m\n"
        "from medmim.bench.timing import peak_step_memory\n"
        f"torch.set_num_threads({threads or 1}); torch.manual_seed(0)\n"
        f"case = m.build_case('{method}', {size}, {batch}, torch.device('cpu'))\n"
        f"data = m.with_locals(case, {n}, {local})\n"
        "run = m._step_fn(case.net, m.build_optimizer(case.net, m._optim(case)), data, "
        "m.nullcontext)\n"
        "print(peak_step_memory(lambda: run(0), torch.device('cpu'))['peak_mib'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    value = out.stdout.strip().splitlines()[-1]
    return None if value == "None" else float(value)


def _optim(case):
    from medmim.config import load_config
    from medmim.train.config import RunConfig

    return load_config(case.preset, [], schema=RunConfig).optim


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["smart", "ibot"])
    parser.add_argument("--locals", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--local-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/multicrop.json"))
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = {m: build_case(m, args.size, args.batch, device) for m in args.methods}
    fns = {}
    for m, case in cases.items():
        optimizer = build_optimizer(case.net, _optim(case))
        for n in args.locals:
            fns[f"{m}/{n}"] = _step_fn(
                case.net, optimizer, with_locals(case, n, args.local_size), nullcontext
            )
    times = interleaved(fns, args.repeats, device)
    clock = "wall_s" if device.type == "cuda" else "cpu_s"
    rows = []
    print(f"{'method':<7} {'locals':>6} {'step s':>7} {'x none':>7} {'peak MiB':>9}")
    for m in args.methods:
        base = times[f"{m}/{args.locals[0]}"][clock]
        for n in args.locals:
            t = times[f"{m}/{n}"][clock]
            mem = (
                peak_rss_mib(m, args.size, args.batch, n, args.local_size, args.threads)
                if device.type == "cpu"
                else None
            )
            rows.append(
                {"method": m, "local_views": n, "step_s": t, "ratio": t / base, "peak_mib": mem}
            )
            print(
                f"{m:<7} {n:>6} {t:>7.3f} {t / base:>7.2f} "
                f"{mem if mem is not None else float('nan'):>9.0f}"
            )
    meta = {
        **machine_info(),
        "device": str(device),
        "size": args.size,
        "local_size": args.local_size,
        "batch_per_view": args.batch,
        "repeats": args.repeats,
        "clock": clock,
        "memory": "VmHWM growth of the first step, fresh process per row",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
