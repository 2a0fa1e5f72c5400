"""Run the demo: check the output folder's settings, run the stages, write the reports.

`run_demo(cfg, out)` is what `medmim demo` calls. Rerunning it on the same folder skips the
finished stages; a folder made with other settings is refused (`restart=True` clears it).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import torch

from medmim.bench.machine import describe, load_average, machine_info
from medmim.demo.config import DemoConfig, as_dict
from medmim.demo.stages import StageRunner
from medmim.demo.study import plan
from medmim.errors import ConfigError

SETTINGS = "demo.json"


def check_settings(cfg: DemoConfig, out: Path, restart: bool) -> None:
    """Refuse to mix two settings in one folder; write `OUT/demo.json` for a new one."""
    path = out / SETTINGS
    if restart and out.exists():
        shutil.rmtree(out)
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        changed = {k: (old.get(k), v) for k, v in as_dict(cfg).items() if old.get(k) != v}
        if changed:
            what = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in list(changed.items())[:4])
            raise ConfigError(
                f"{out} holds a demo made with other settings ({what}); its finished stages "
                f"would not match. Use another --out, or --restart to delete it and start over"
            )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(as_dict(cfg), indent=1) + "\n", encoding="utf-8")


def _run_log(runner: StageRunner, wall: float, loads: tuple) -> str:
    """The stage table of OUT/report.md: each stage's wall time, plus the machine's load."""
    rows = ["| stage | seconds |", "|---|---|"]
    total = 0.0
    for r in runner.timings():
        rows.append(f"| {r['stage']} | {r['seconds']:.0f} |")
        total += r["seconds"]
    for f in runner.failures():
        rows.append(f"| {f['stage']} | FAILED: {f['error'][:120]} |")
    rows.append(f"| **all stages** | **{total:.0f}** ({total / 60:.1f} min) |")
    start, end = loads
    return "\n".join(rows) + (
        f"\n\nThis invocation: {wall:.0f} s wall ({len(runner.skipped)} stage(s) done before were "
        f"skipped). Load average (1 min) at start {start[0] if start else '?'}, at end "
        f"{end[0] if end else '?'}: above the core count means other work shared the CPU and "
        "the times are longer than on an idle machine."
    )


def write_reports(
    cfg: DemoConfig, out: Path, runner: StageRunner, wall: float, loads: tuple
) -> Path:
    """OUT/report.md (comparison) and OUT/details.md (every command's own tables)."""
    from medmim.demo.report import write_demo_report
    from medmim.eval.report import write_report

    folders = [p for p in sorted((out / "pretrain").glob("*")) if (p / "metrics.jsonl").is_file()]
    folders += [p for p in sorted((out / "eval").glob("*/*")) if (p / "results.json").is_file()]
    if folders:
        write_report(folders, out / "details.md", "medmim demo: every result")
    else:
        (out / "details.md").write_text(
            "# medmim demo: every result\n\nNo results yet.\n", encoding="utf-8"
        )
    machine = machine_info()
    (out / "machine.json").write_text(json.dumps(machine, indent=1) + "\n", encoding="utf-8")
    return write_demo_report(
        cfg, out, _run_log(runner, wall, loads), f"Machine: {describe(machine)}."
    )


def run_demo(
    cfg: DemoConfig, out: str | Path, *, restart: bool = False, keep_going: bool = True
) -> int:
    """Run (or continue) the whole study in `out`; returns 0, or 1 if a stage failed."""
    out = Path(out)
    check_settings(cfg, out, restart)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    stages = plan(cfg, out)
    runner = StageRunner(out, total=len(stages) + 1, keep_going=keep_going)
    t0, load0 = time.perf_counter(), load_average()
    runner.say(f"medmim demo -> {out} ({len(stages)} stages; {describe(machine_info())})")
    with warnings.catch_warnings():  # MONAI's deprecation notices are noise to a demo user
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"monai\..*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"monai\..*")
        for name, title, fn in stages:
            runner.run(name, title, fn)
    runner.done += 1
    runner.say(f"\n=== [{runner.done}/{runner.total}] report ===")
    report = write_reports(cfg, out, runner, time.perf_counter() - t0, (load0, load_average()))
    wall = time.perf_counter() - t0
    runner.say(f"\nwrote {report} ({wall / 60:.1f} min)")
    if runner.failed:
        runner.say(
            f"{len(runner.failed)} stage(s) failed: {', '.join(runner.failed)}; see "
            f"{out / 'stages'}/*.failed.json, fix, and rerun the same command to retry them"
        )
        return 1
    return 0
