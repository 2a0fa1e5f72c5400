"""`medmim bench`: the tiny profile writes bench.json with every key and the machine; helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medmim.bench.gpu import NO_GPU, gpu_measurements, largest_fitting, peak_tflops
from medmim.bench.inference import count_windows
from medmim.bench.report import bench_markdown, gpu_lines
from medmim.bench.suite import bench_config, run_bench
from medmim.bench.timing import count_flops, interleaved
from medmim.errors import ConfigError


def test_largest_fitting_finds_the_boundary() -> None:
    for limit_fit in (1, 2, 3, 7, 8, 100):
        calls: list[int] = []

        def fits(n: int, m: int = limit_fit, seen: list[int] = calls) -> bool:
            seen.append(n)
            return n <= m

        assert largest_fitting(fits, limit=64) == min(limit_fit, 64)
        assert len(calls) <= 2 * 7  # doubling, then bisection
    assert largest_fitting(lambda n: False) == 0
    assert largest_fitting(lambda n: True, limit=10) == 10


def test_gpu_peaks_and_cpu_placeholders() -> None:
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA L40S") == 362.0 and peak_tflops("NVIDIA L4") == 121.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0 and peak_tflops("Quadro K600") is None
    cpu = gpu_measurements(torch.device("cpu"))
    assert cpu == {"bf16_throughput": NO_GPU, "largest_batch": NO_GPU, "mfu": NO_GPU}


def test_gpu_code_path_runs_when_forced_on_cpu() -> None:
    g = gpu_measurements(
        torch.device("cpu"),
        "smit",
        sizes=(32,),
        batch=1,
        repeats=1,
        limit=2,
        preset="smit_demo",
        force=True,
    )
    assert g["largest_batch"] == {"32^3": 2}  # nothing runs out of memory on a CPU
    assert set(g["bf16_throughput"]) == {"fp32", "bf16", "speedup"}
    assert g["mfu"]["flops_per_step"] > 0 and g["mfu"]["mfu"] is None and "peak" in g["mfu"]["note"]
    assert "bf16 throughput (smit_demo, 32^3, batch 1)" in "\n".join(gpu_lines(g))


def test_window_count_matches_monai() -> None:
    from monai.inferers.utils import _get_scan_interval, dense_patch_slices

    for volume, roi, overlap in (
        ([256, 256, 128], 96, 0.25),
        ([256, 256, 128], 96, 0.5),
        ([64, 64, 64], 64, 0.5),
    ):
        interval = _get_scan_interval(volume, [roi] * 3, 3, (overlap,) * 3)
        assert count_windows(volume, [roi] * 3, overlap) == len(
            dense_patch_slices(volume, [roi] * 3, interval)
        )


def test_interleaved_timer_and_flop_counter() -> None:
    calls: list[str] = []
    times = interleaved(
        {"a": lambda i: calls.append(f"a{i}"), "b": lambda i: calls.append(f"b{i}")},
        repeats=2,
        device=torch.device("cpu"),
    )
    assert calls == ["a0", "b0", "a1", "b1", "a2", "b2"]  # warm-up round, then interleaved
    assert set(times["a"]) == {"wall_s", "cpu_s", "wall_min_s"}
    x, w = torch.randn(4, 8), torch.randn(8, 16)
    assert count_flops(lambda: x @ w) == 2 * 4 * 8 * 16


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match="'smrt' has no benchmark case.*smart"):
        bench_config("tiny", ["methods=[smrt]"])
    with pytest.raises(ConfigError, match="(?i)did you mean 'repeats'"):
        bench_config("tiny", ["repeat=2"])


@pytest.mark.slow
def test_tiny_bench_writes_every_key(tmp_path: Path) -> None:
    result = run_bench(bench_config("tiny"), tmp_path, say=lambda *_: None)
    saved = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    assert saved["schema"] == 1 and set(saved) >= {
        "created",
        "machine",
        "settings",
        "pretrain_steps",
        "data_loader",
        "sliding_window",
        "gpu",
        "seconds",
    }
    machine = saved["machine"]
    assert {"cpu", "cores", "torch", "monai", "date", "load_average"} <= set(machine)
    assert machine["torch"] == torch.__version__ and machine["cores"] >= 1
    (row,) = saved["pretrain_steps"]
    assert row["method"] == "smit" and row["preset"] == "smit_demo" and row["input"] == [32, 32, 32]
    assert row["step"]["wall_s"] > 0 and row["bare"]["wall_s"] > 0
    assert row["overhead_ratio"] == pytest.approx(row["step"]["cpu_s"] / row["bare"]["cpu_s"])
    assert row["flops_per_step"] > 0 and row["memory"]["peak_mib"] > 0
    loader = saved["data_loader"]["rows"][0]
    assert loader["workers"] == 0 and loader["cached_crops"] > 0 and loader["uncached_monai"] > 0
    assert saved["sliding_window"]["windows"] == 1 and saved["sliding_window"]["seconds"] > 0
    if not torch.cuda.is_available():
        assert saved["gpu"]["mfu"] == NO_GPU
    text = (tmp_path / "bench.md").read_text(encoding="utf-8")
    assert text == bench_markdown(result)
    assert "| smit | smit_demo |" in text and "not measured: no GPU" in text
