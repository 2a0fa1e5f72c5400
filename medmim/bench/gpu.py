"""Measurements that mean something only on a GPU: bf16 throughput, the largest batch that fits,
and model FLOP utilisation (MFU).

- bf16 throughput: training steps of a method's paper preset with and without bf16 autocast,
  volumes (two views each) per second.
- largest batch: doubling, then bisection, over the batch size until a training step (bf16)
  raises `torch.cuda.OutOfMemoryError`; the allocator is emptied between tries.
- MFU (PaLM, Chowdhery et al. 2022, appendix B): FLOPs of one training step counted by
  `torch.utils.flop_counter` (matmuls, convolutions, attention; forward + backward) divided by
  the step time and by the GPU's peak dense bf16 FLOP/s (`PEAK_BF16_TFLOPS`, or `--peak-tflops`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from medmim.bench.steps import build_case
from medmim.bench.timing import count_flops, interleaved

#: Peak dense bf16 tensor throughput (TFLOP/s, no sparsity) from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
}
NO_GPU = "not measured: no GPU"


def peak_tflops(name: str) -> float | None:
    """The data-sheet peak of a GPU by (a part of) its name, longest match first; else None."""
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return PEAK_BF16_TFLOPS[key]
    return None


def bf16_autocast(device_type: str = "cuda") -> Callable[[], Any]:
    """A factory of bf16 autocast contexts for `device_type`."""
    return lambda: torch.autocast(device_type, dtype=torch.bfloat16)


def largest_fitting(fits: Callable[[int], bool], limit: int = 1024) -> int:
    """The largest n in [1, limit] with fits(n) True, assuming fits is monotone; 0 if not even 1.

    Doubles n until a failure (or the limit), then bisects between the last success and it.
    """
    if not fits(1):
        return 0
    good, n = 1, 2
    while n <= limit and fits(n):
        good, n = n, n * 2
    bad = min(n, limit + 1)
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good


def _free() -> None:
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def step_fits(
    method: str, size: int, device: torch.device, preset: str | None = None
) -> Callable[[int], bool]:
    """fits(batch): one bf16 training step of `preset` (default: the paper preset) at `size`^3
    runs without running out of GPU memory.
    """

    def fits(batch: int) -> bool:
        case = None
        try:
            case = build_case(
                method, size, batch, device, bf16_autocast(device.type), preset=preset or method
            )
            case.step(0)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            del case
            _free()

    return fits


def gpu_measurements(
    device: torch.device,
    method: str = "smart",
    sizes: tuple[int, ...] = (96, 128),
    batch: int = 2,
    repeats: int = 5,
    peak: float | None = None,
    limit: int = 256,
    preset: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """bf16 vs fp32 throughput and MFU at sizes[0], and the largest batch at each size.

    Args:
        device: a CUDA device; any other gives the "not measured: no GPU" placeholders, unless
            `force` (the tests run the same code on a CPU, where no batch size runs out).
        method: the method measured.
        sizes: cubic input sizes.
        batch: batch size of the throughput measurement.
        repeats: measured rounds of the throughput measurement.
        peak: peak dense bf16 TFLOP/s (default: `peak_tflops` of the GPU's name).
        limit: the largest batch tried.
        preset: the method's preset (default: the paper preset, `method`).
        force: measure on a device that is not CUDA too.
    """
    if device.type != "cuda" and not force:
        return {"bf16_throughput": NO_GPU, "largest_batch": NO_GPU, "mfu": NO_GPU}
    size, preset = sizes[0], preset or method
    out: dict[str, Any] = {"method": method, "preset": preset, "size": size, "batch": batch}
    speeds = {}
    for name, amp in (("fp32", nullcontext), ("bf16", bf16_autocast(device.type))):
        case = build_case(method, size, batch, device, amp, preset=preset)
        t = interleaved({"step": case.step}, repeats, device)["step"]["wall_s"]
        speeds[name] = {"step_s": t, "volumes_per_s": batch / t}
        if name == "bf16":
            flops = count_flops(lambda c=case: c.step(1))
        del case
        _free()
    out["bf16_throughput"] = {
        **speeds,
        "speedup": speeds["fp32"]["step_s"] / speeds["bf16"]["step_s"],
    }
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    peak = peak or peak_tflops(gpu)
    achieved = flops / speeds["bf16"]["step_s"] / 1e12 if flops else None
    out["mfu"] = {
        "flops_per_step": flops,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "mfu": achieved / peak if achieved and peak else None,
        "note": None if peak else f"peak of '{gpu}' unknown: pass --peak-tflops",
    }
    out["largest_batch"] = {
        f"{s}^3": largest_fitting(step_fits(method, s, device, preset), limit) for s in sizes
    }
    return out
