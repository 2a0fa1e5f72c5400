"""Peak memory of one training step, each method in a fresh process on a CPU.

In one process the allocator keeps what an earlier model freed, so a later model's step would
reuse it and look cheaper; a fresh process per method measures every step alike. On CUDA the
allocator's own peak counter is exact, so the caller measures in process.

    python -m medmim.bench.memory smart 64 1      # prints {"peak_mib": ..., "rss_mib": ...}
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import torch


def step_memory(method: str, size: int, batch: int, device: torch.device) -> dict[str, Any]:
    """Peak memory (MiB) of the first training step of `method` at `size`^3 (see timing)."""
    from medmim.bench.steps import build_case
    from medmim.bench.timing import peak_step_memory

    case = build_case(method, size, batch, device)
    return peak_step_memory(lambda: case.step(0), device)


def step_memory_subprocess(
    method: str, size: int, batch: int, threads: int = 0, timeout: float = 600
) -> dict[str, Any]:
    """`step_memory` on the CPU in a child process; {"peak_mib": None, "error": ...} on failure."""
    cmd = [sys.executable, "-m", "medmim.bench.memory", method, str(size), str(batch), str(threads)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, json.JSONDecodeError, IndexError) as exc:
        stderr = getattr(exc, "stderr", "") or ""
        return {"peak_mib": None, "error": (stderr.strip().splitlines() or [str(exc)])[-1]}


def main(argv: list[str]) -> int:
    """Print `step_memory` of one method on the CPU as one JSON line; returns 0.

    Args:
        argv: method, cubic input size, batch and optionally a torch thread count (0: default).
    """
    method, size, batch = argv[0], int(argv[1]), int(argv[2])
    if len(argv) > 3 and int(argv[3]):
        torch.set_num_threads(int(argv[3]))
    print(json.dumps(step_memory(method, size, batch, torch.device("cpu"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
