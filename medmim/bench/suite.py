"""`medmim bench`: the whole benchmark in one run, written as bench.json and bench.md.

1. pretraining step time of every method beside its bare encoder passes, in the same run
   (`medmim.bench.steps`), the step's FLOPs and peak memory;
2. two-view crops per second of the cached loader vs the uncached MONAI pipeline
   (`medmim.bench.data`);
3. sliding-window inference time of a SwinUNETR on a 256 x 256 x 128 volume
   (`medmim.bench.inference`);
4. on a GPU: bf16 throughput, the largest batch at 96^3 and 128^3, MFU (`medmim.bench.gpu`);
   elsewhere these read "not measured: no GPU".

The machine (CPU model, cores, load, GPU, torch / MONAI versions) and the date go with it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from medmim.bench import gpu as gpu_bench
from medmim.bench.machine import machine_info
from medmim.bench.steps import METHODS_ALL, build_case
from medmim.bench.timing import count_flops, interleaved
from medmim.config import apply_overrides, validate
from medmim.errors import ConfigError, did_you_mean


@dataclass
class BenchConfig:
    """What `medmim bench` measures (defaults: the full CPU/GPU run).

    `sw_preset` / `sw_overlap` "auto": the SMART paper model (`swin_smart`) with overlap 0.5 on
    a GPU; the demo model (`swin_demo`) with MONAI's default overlap 0.25 on a CPU, where the
    paper model takes several minutes per volume.
    """

    methods: list[str] = field(default_factory=lambda: list(METHODS_ALL))
    size: int = 64
    batch: int = 1
    repeats: int = 5
    memory: bool = True
    flops: bool = True
    data: bool = True
    data_scans: int = 4
    data_crop: int = 96
    data_items: int = 32
    data_uncached_items: int = 8
    data_workers: list[int] = field(default_factory=lambda: [0, 2])
    data_phantom_size: str = "default"
    sliding: bool = True
    sw_preset: str = "auto"
    sw_volume: list[int] = field(default_factory=lambda: [256, 256, 128])
    sw_roi: int = 96
    sw_overlap: float = -1.0
    sw_batch: int = 2
    gpu_method: str = "smart"
    gpu_sizes: list[int] = field(default_factory=lambda: [96, 128])
    gpu_batch: int = 2
    peak_tflops: float = 0.0
    threads: int = 0
    device: str = "auto"


PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "quick": {
        "methods": ["smart", "smit", "ibot"],
        "repeats": 2,
        "data_scans": 2,
        "data_crop": 64,
        "data_items": 16,
        "data_uncached_items": 4,
        "data_workers": [0],
        "data_phantom_size": "small",
        "sw_volume": [128, 128, 64],
        "sw_roi": 64,
    },
    "tiny": {
        "methods": ["smit"],
        "size": 32,
        "repeats": 1,
        "data_scans": 2,
        "data_crop": 32,
        "data_items": 4,
        "data_uncached_items": 2,
        "data_workers": [0],
        "data_phantom_size": "small",
        "sw_preset": "swin_demo",
        "sw_volume": [64, 64, 64],
        "sw_roi": 64,
        "gpu_sizes": [32],
        "gpu_batch": 1,
    },
}


def bench_config(
    profile: str = "default", overrides: list[str] | tuple[str, ...] = ()
) -> BenchConfig:
    """The settings of a profile with `key=value` overrides (did-you-mean on bad keys)."""
    if profile not in PROFILES:
        raise ConfigError(
            f"bench profile '{profile}' is unknown.{did_you_mean(profile, list(PROFILES))}"
        )
    node = validate(
        apply_overrides(
            validate(OmegaConf.create(PROFILES[profile]), BenchConfig), list(overrides)
        ),
        BenchConfig,
    )
    cfg = OmegaConf.to_object(node)
    unknown = [m for m in cfg.methods if m not in METHODS_ALL]
    if unknown:
        raise ConfigError(
            f"methods={cfg.methods}: '{unknown[0]}' has no benchmark case."
            f"{did_you_mean(unknown[0], METHODS_ALL)} Methods: {', '.join(METHODS_ALL)}"
        )
    return cfg


def _device(name: str) -> torch.device:
    return torch.device(
        "cuda"
        if name == "auto" and torch.cuda.is_available()
        else "cpu"
        if name == "auto"
        else name
    )


def step_rows(cfg: BenchConfig, device: torch.device, say: Any = print) -> list[dict[str, Any]]:
    """Every method's step vs bare passes (interleaved), FLOPs and peak memory."""
    from medmim.bench.memory import step_memory, step_memory_subprocess

    cases, rows = {}, []
    for m in cfg.methods:
        try:
            cases[m] = build_case(m, cfg.size, cfg.batch, device)
        except Exception as exc:  # a method that cannot be built is reported, not fatal
            rows.append({"method": m, "error": f"{type(exc).__name__}: {exc}"})
    fns = {f"{m}/{k}": getattr(c, k) for m, c in cases.items() for k in ("step", "bare")}
    say(
        f"  timing {len(cases)} methods x (step, bare), {cfg.repeats} interleaved rounds "
        f"on {device}"
    )
    times = interleaved(fns, cfg.repeats, device)
    clock = "wall_s" if device.type == "cuda" else "cpu_s"
    for m, c in cases.items():
        step, bare = times[f"{m}/step"], times[f"{m}/bare"]
        row = {
            "method": m,
            "preset": c.preset,
            "input": c.size,
            "batch_per_view": cfg.batch,
            **c.facts,
            "step": step,
            "bare": bare,
            "overhead_ratio": step[clock] / bare[clock],
            "ratio_clock": clock,
        }
        if cfg.flops:
            row["flops_per_step"] = count_flops(lambda c=c: c.step(cfg.repeats + 1))
            row["achieved_gflops"] = (
                row["flops_per_step"] / step["wall_s"] / 1e9 if row["flops_per_step"] else None
            )
        rows.append(row)
    del cases
    for row in rows:
        if cfg.memory and "error" not in row:
            say(f"  peak memory of one {row['method']} step")
            row["memory"] = (
                step_memory(row["method"], cfg.size, cfg.batch, device)
                if device.type == "cuda"
                else step_memory_subprocess(row["method"], cfg.size, cfg.batch, cfg.threads)
            )
    return rows


def run_bench(cfg: BenchConfig, out: str | Path, say: Any = print) -> dict[str, Any]:
    """Run every part of the benchmark; write OUT/bench.json and OUT/bench.md."""
    from medmim.bench.data import loader_throughput
    from medmim.bench.inference import sliding_window_time
    from medmim.bench.report import bench_markdown

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device, t0 = _device(cfg.device), time.perf_counter()
    result: dict[str, Any] = {
        "schema": 1,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": dataclasses.asdict(cfg),
        "device": str(device),
    }
    say(f"[1/4] pretraining steps at {cfg.size}^3: {', '.join(cfg.methods)}")
    result["pretrain_steps"] = step_rows(cfg, device, say)
    say("[2/4] data loader: cached vs uncached MONAI")
    if cfg.data:
        with tempfile.TemporaryDirectory() as tmp:
            result["data_loader"] = loader_throughput(
                Path(tmp),
                cfg.data_scans,
                cfg.data_crop,
                cfg.data_items,
                cfg.data_uncached_items,
                tuple(cfg.data_workers),
                cfg.data_phantom_size,
            )
    say(f"[3/4] sliding-window inference on {'x'.join(map(str, cfg.sw_volume))}")
    if cfg.sliding:
        cuda = device.type == "cuda"
        preset = cfg.sw_preset if cfg.sw_preset != "auto" else "swin_smart" if cuda else "swin_demo"
        overlap = cfg.sw_overlap if cfg.sw_overlap >= 0 else 0.5 if cuda else 0.25
        result["sliding_window"] = sliding_window_time(
            preset, cfg.sw_volume, cfg.sw_roi, overlap, cfg.sw_batch, device
        )
    say("[4/4] GPU: bf16 throughput, largest batch, MFU")
    result["gpu"] = gpu_bench.gpu_measurements(
        device,
        cfg.gpu_method,
        tuple(cfg.gpu_sizes),
        cfg.gpu_batch,
        max(cfg.repeats, 3),
        cfg.peak_tflops or None,
    )
    result["machine"]["load_average_end"] = machine_info()["load_average"]
    result["seconds"] = time.perf_counter() - t0
    (out / "bench.json").write_text(
        json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8"
    )
    (out / "bench.md").write_text(bench_markdown(result), encoding="utf-8")
    return result
