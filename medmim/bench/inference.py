"""Sliding-window inference time of a SwinUNETR on one CT-sized volume.

The network is MONAI's `SwinUNETR` built with a medmim Swin preset's architecture (what
`medmim segment` fine-tunes on an exported encoder); the volume is random noise of the given
size (the time does not depend on the content); MONAI `sliding_window_inference` with Gaussian
blending, no gradients, bf16 autocast on CUDA.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import SwinUNETR

from medmim.registry import BACKBONES


def count_windows(volume: list[int], roi: list[int], overlap: float) -> int:
    """Windows MONAI's sliding window visits: per axis ceil((V - R) / (R (1 - overlap))) + 1."""
    n = 1
    for v, r in zip(volume, roi):
        step = max(1, int(r * (1 - overlap)))
        n *= 1 if v <= r else -(-(v - r) // step) + 1
    return n


def sliding_window_time(
    preset: str,
    volume: list[int],
    roi: int,
    overlap: float,
    sw_batch: int,
    device: torch.device,
    classes: int = 14,
    repeats: int = 1,
) -> dict[str, Any]:
    """Seconds to segment one (1, 1, *volume) input with a SwinUNETR of the Swin `preset`.

    Returns:
        {"seconds" (median of `repeats` after one warm-up window), "windows", "model", ...}.
    """
    kwargs = BACKBONES.build(preset).swinunetr_kwargs()
    net = SwinUNETR(out_channels=classes, **kwargs).to(device).eval()
    x = torch.rand(1, 1, *volume, device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def run(inp: torch.Tensor) -> None:
        with torch.no_grad(), amp:
            sliding_window_inference(
                inp, [roi] * 3, sw_batch, net, overlap=overlap, mode="gaussian"
            )
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run(torch.rand(1, 1, roi, roi, roi, device=device))  # warm-up: one window
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "seconds": times[len(times) // 2],
        "volume": list(volume),
        "roi": [roi] * 3,
        "overlap": overlap,
        "sw_batch_size": sw_batch,
        "windows": count_windows(list(volume), [roi] * 3, overlap),
        "model": (
            f"SwinUNETR({preset}: feature {kwargs['feature_size']}, "
            f"depths {list(kwargs['depths'])})"
        ),
        "params": sum(p.numel() for p in net.parameters()),
        "precision": "bf16" if device.type == "cuda" else "fp32",
        "device": str(device),
    }
