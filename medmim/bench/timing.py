"""Timers and memory probes that hold up on a shared machine.

- `interleaved`: every function runs once per round, in turn, so background load hits them
  alike; the median over rounds (after one warm-up round) of the wall clock and of the process
  CPU time (less sensitive to other processes on a CPU; on a GPU only the wall time counts,
  taken after `torch.cuda.synchronize`).
- `peak_step_memory`: on CUDA the allocator's peak during a call; on CPU the growth of the
  process's resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs; Linux),
  so it counts activations, gradients and allocator slack, not what was resident before.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[int], Any], i: int, device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of `fn(i)`."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn(i)
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def interleaved(
    fns: dict[str, Callable[[int], Any]], repeats: int, device: torch.device, warmup: int = 1
) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds of each function over `repeats` interleaved rounds.

    Args:
        fns: name -> function of the round index (e.g. the training step number).
        repeats: measured rounds (>= 1) after `warmup` unmeasured ones.
        device: synchronised around each call when it is a CUDA device.
        warmup: unmeasured rounds run first.

    Returns:
        name -> {"wall_s", "cpu_s", "wall_min_s"}.
    """
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for rnd in range(warmup + max(1, repeats)):
        for name, fn in fns.items():
            t = timed(fn, rnd, device)
            if rnd >= warmup:
                times[name].append(t)
    return {
        k: {
            "wall_s": statistics.median(t[0] for t in v),
            "cpu_s": statistics.median(t[1] for t in v),
            "wall_min_s": min(t[0] for t in v),
        }
        for k, v in times.items()
    }


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"{field}:\s+(\d+)", f.read())
        return int(match.group(1)) if match else None
    except OSError:
        return None


def reset_rss_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_step_memory(fn: Callable[[], Any], device: torch.device) -> dict[str, float | None]:
    """Peak memory of one call of `fn`, in MiB.

    Returns:
        CUDA: {"peak_mib": max allocated during the call, "kind": "cuda_allocated"}; CPU:
        {"peak_mib": VmHWM growth during the call, "rss_mib": VmHWM after it, "kind":
        "cpu_rss_growth"}; {"peak_mib": None} when neither can be read.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {
            "peak_mib": peak / 2**20,
            "above_resident_mib": (peak - base) / 2**20,
            "kind": "cuda_allocated",
        }
    if not reset_rss_peak() or (before := _status_kib("VmRSS")) is None:
        fn()
        return {"peak_mib": None, "kind": "unavailable"}
    fn()
    hwm = _status_kib("VmHWM") or before
    return {"peak_mib": (hwm - before) / 1024, "rss_mib": hwm / 1024, "kind": "cpu_rss_growth"}


def count_flops(fn: Callable[[], Any]) -> int | None:
    """FLOPs of one call (matmuls, convolutions, attention; forward and backward) counted by
    `torch.utils.flop_counter.FlopCounterMode`, or None where it cannot count.
    """
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())
