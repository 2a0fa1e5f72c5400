"""bench.json -> bench.md: the tables a README's performance section shows."""

from __future__ import annotations

from typing import Any

from medmim.bench.machine import describe
from medmim.eval.report import markdown_table


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:,.{max(0, digits - len(str(int(abs(x)))))}f}"


def steps_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the pretraining-step measurements, one row per method."""
    header = [
        "method",
        "preset",
        "input",
        "step s",
        "bare s",
        "step / bare",
        "peak MiB",
        "GFLOP / step",
        "GFLOP/s",
    ]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["method"], "–", "–", f"error: {r['error'][:80]}", "", "", "", "", ""])
            continue
        mem = (r.get("memory") or {}).get("peak_mib")
        flops = r.get("flops_per_step")
        step, bare = r["step"], r["bare"]
        clock = r["ratio_clock"].split("_")[0]
        best = step["wall_min_s"] / bare["wall_min_s"]
        views = " x1 view" if r["method"].startswith("pumit") else " x2 views"
        body.append(
            [
                r["method"],
                r["preset"],
                "x".join(map(str, r["input"])) + views + f" x{r['batch_per_view']}",
                f"{_f(step['wall_min_s'])} / {_f(step['wall_s'])}",
                f"{_f(bare['wall_min_s'])} / {_f(bare['wall_s'])}",
                f"{r['overhead_ratio']:.2f} ({clock}), {best:.2f} (min)",
                _f(mem, 4) if mem is not None else "–",
                _f(flops / 1e9 if flops else None, 4),
                _f(flops / step["wall_min_s"] / 1e9 if flops else None, 4),
            ]
        )
    return markdown_table(header, body)


def data_table(d: dict[str, Any]) -> str:
    """Markdown table of the data loader's two-view samples per second per worker count."""
    body = [
        [
            str(r["workers"]),
            _f(r["uncached_monai"]),
            _f(r["cached_crops"]),
            _f(r["cached_crops_and_intensity_aug"]),
            f"{r['speedup_crops']:.0f}x / {r['speedup_with_aug']:.0f}x",
        ]
        for r in d["rows"]
    ]
    return markdown_table(
        [
            "workers",
            "uncached MONAI",
            "cached, crops",
            "cached, crops + intensity aug",
            "speed-up (crops / with aug)",
        ],
        body,
    )


def gpu_lines(g: dict[str, Any]) -> list[str]:
    """Markdown bullets of the GPU figures: bf16 throughput, largest batch and MFU."""
    if isinstance(g.get("bf16_throughput"), str):
        return [
            f"- bf16 throughput: {g['bf16_throughput']}",
            f"- largest batch at 96^3 / 128^3: {g['largest_batch']}",
            f"- model FLOP utilisation: {g['mfu']}",
        ]
    t, m = g["bf16_throughput"], g["mfu"]
    sizes = ", ".join(f"{k}: {v}" for k, v in g["largest_batch"].items())
    mfu = f"{100 * m['mfu']:.1f}%" if m.get("mfu") else f"– ({m.get('note')})"
    return [
        f"- bf16 throughput ({g['preset']}, {g['size']}^3, batch {g['batch']}): "
        f"{t['bf16']['volumes_per_s']:.2f} volumes/s vs fp32 {t['fp32']['volumes_per_s']:.2f} "
        f"({t['speedup']:.2f}x)",
        f"- largest batch (bf16 training step, {g['preset']}): {sizes}",
        f"- model FLOP utilisation: {mfu} ({_f(m.get('achieved_tflops'))} of "
        f"{_f(m.get('peak_tflops'))} TFLOP/s peak bf16)",
    ]


def bench_markdown(result: dict[str, Any]) -> str:
    """The whole bench.md text."""
    m = result["machine"]
    parts = [
        "# medmim bench",
        "",
        f"{describe(m)}; {m['torch_threads']} torch threads; device {result['device']}; "
        f"load average at end {(m.get('load_average_end') or ['?'])[0]}; "
        f"{result['seconds']:.0f} s.",
        "",
        "## Pretraining step vs bare encoder passes",
        "",
        "Seconds: fastest / median of interleaved rounds (wall clock). *bare* = the backbone "
        "passes the step needs: student forward + backward on both views (masked; the loss "
        "touches every output, attention maps included, so it can cost more than a method's "
        "own use of the backbone) and the teacher's forward. step / bare from the median "
        "process CPU time on a CPU (robust to other load) or wall time on a GPU, and from the "
        "fastest rounds; a ratio near 1 means no measurable overhead. Peak memory: growth of the "
        "resident set during one step (CPU, fresh process) or the allocator's peak (GPU). "
        "GFLOP/s from the fastest round.",
        "",
        steps_table(result["pretrain_steps"]),
        "",
    ]
    if d := result.get("data_loader"):
        parts += [
            "## Data loader: two-view samples per second",
            "",
            f"{len(d['scans'])} phantoms ({d['phantom_size']}), {d['crop']}^3 views at "
            f"{d['spacing_mm']} mm, batch 2; cache built in {d['cache_build_s']:.1f} s.",
            "",
            data_table(d),
            "",
        ]
    if s := result.get("sliding_window"):
        parts += [
            "## Sliding-window inference",
            "",
            f"{s['model']}, {s['params']:,} parameters, on a {'x'.join(map(str, s['volume']))} "
            f"volume: **{s['seconds']:.1f} s** ({s['windows']} windows of {s['roi'][0]}^3, "
            f"overlap {s['overlap']}, {s['sw_batch_size']} per batch, {s['precision']}, "
            f"{s['device']}).",
            "",
        ]
    parts += ["## GPU", "", *gpu_lines(result["gpu"]), ""]
    return "\n".join(parts)
