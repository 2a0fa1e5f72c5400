"""What the training loop costs around the method's own step: the non-finite guard's snapshot
and the host read at check steps, per method preset, on this machine.

    python benchmarks/loop_overhead.py [--preset smart_demo] [--steps 20] [--repeats 2]
        [--size 64] [--batch 2] [--out benchmarks/results/loop_overhead.json]

Each round runs `medmim.train.loop.pretrain` for `--steps` steps on an in-memory dataset of
random volumes, twice: `train.log_every=1` (every step is a check step: one host read and one
snapshot of the method state and optimizer moments per step) and `train.log_every=steps` (only
the first and last steps check). Rounds interleave the two, so both share the machine's load;
the figure is the median seconds per step of each and their ratio. On a CPU a host read costs
nothing, so the ratio measures the snapshot copy; on a GPU it also measures the stalls that
check steps cause.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from medmim.bench.machine import machine_info
from medmim.config import load_config
from medmim.train.config import RunConfig
from medmim.train.loop import pretrain


class RandomVolumes(torch.utils.data.Dataset):
    """`n` items of two random (1, S, S, S) views: the pretraining items contract."""

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(index)
        views = [torch.rand(1, self.size, self.size, self.size, generator=g) for _ in range(2)]
        return {"views": views, "index": index}


def run_once(preset: str, steps: int, log_every: int, size: int, batch: int, root: Path) -> float:
    name = f"r{len(list(root.iterdir()))}"
    cfg = load_config(
        preset,
        [
            f"name={name}",
            f"output_dir={root}",
            f"train.max_steps={steps}",
            f"train.log_every={log_every}",
            f"train.ckpt_every={10 * steps}",
            "train.vis_every=0",
            "train.progress=false",
            f"data.batch_size={batch}",
            f"data.crop_size=[{size},{size},{size}]",
            "data.num_workers=0",
        ],
        schema=RunConfig,
    )
    run = pretrain(cfg, dataset=RandomVolumes(batch * steps, size))
    rows = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    # seconds per step after the first (set-up and first-call costs excluded): the logged
    # window times, weighted by the steps they cover
    later = [r for r in rows if r["step"] > 1]
    spans = [b["step"] - a["step"] for a, b in zip(rows, rows[1:]) if b["step"] > 1]
    return sum(r["time/step_s"] * n for r, n in zip(later, spans)) / sum(spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="smart_demo")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/loop_overhead.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    times: dict[str, list[float]] = {"every_step": [], "ends_only": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for key, every in (("every_step", 1), ("ends_only", args.steps))[
                :: 1 if r % 2 == 0 else -1
            ]:
                times[key].append(
                    run_once(args.preset, args.steps, every, args.size, args.batch, Path(tmp))
                )
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "preset": args.preset,
        "steps": args.steps,
        "size": args.size,
        "batch": args.batch,
        "threads": args.threads,
        "seconds_per_step": times,
        "median": med,
        "check_every_step_over_ends_only": med["every_step"] / med["ends_only"],
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(
        json.dumps(
            {k: result[k] for k in ("preset", "median", "check_every_step_over_ends_only")},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
