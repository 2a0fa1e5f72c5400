"""Stages that run once: a banner before, a marker file after, skipped when rerun.

A stage is finished when `OUT/stages/<name>.json` exists; the marker holds its wall time, what it
returned and when it ended. An interrupted stage has no marker and runs again (pretraining then
continues from its last checkpoint). A failed stage is recorded in the marker folder as
`<name>.failed.json` and, with `keep_going`, the next stages still run.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGES_DIR = "stages"


def _slug(name: str) -> str:
    return name.replace("/", "-")


@dataclass
class StageRunner:
    """Runs named stages in order under `out/stages/`.

    Attributes:
        out: the demo's output folder.
        total: number of stages (for the `[i/total]` banners).
        keep_going: record a failing stage and go on (True) or raise (False).
        stream: where banners go (default: sys.stdout at the time of printing).
    """

    out: Path
    total: int
    keep_going: bool = True
    stream: Any = None
    done: int = 0
    started: float = field(default_factory=time.perf_counter)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def marker(self, name: str) -> Path:
        """The JSON marker that a finished stage `name` leaves under `out/stages/`."""
        return self.out / STAGES_DIR / f"{_slug(name)}.json"

    def is_done(self, name: str) -> bool:
        """Whether stage `name` finished in an earlier or this run (its marker exists)."""
        return self.marker(name).is_file()

    def result(self, name: str) -> dict[str, Any] | None:
        """The marker of a finished stage, or None."""
        path = self.marker(name)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def say(self, text: str) -> None:
        """Print a banner line to `stream` (default: sys.stdout), flushed."""
        print(text, file=self.stream or sys.stdout, flush=True)

    def run(
        self, name: str, title: str, fn: Callable[[], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Run `fn` unless `name` finished before; returns its marker (None if it failed)."""
        self.done += 1
        head = f"[{self.done}/{self.total}] {title}"
        if (old := self.result(name)) is not None:
            self.skipped.append(name)
            self.say(f"{head}: done before ({old['seconds']:.0f} s), skipped")
            return old
        elapsed = time.perf_counter() - self.started
        self.say(f"\n=== {head}  (demo time {elapsed / 60:.1f} min) ===")
        failed = self.out / STAGES_DIR / f"{_slug(name)}.failed.json"
        t0 = time.perf_counter()
        try:
            value = fn() or {}
        except Exception as exc:
            if not self.keep_going:
                raise
            self.failed.append(name)
            failed.parent.mkdir(parents=True, exist_ok=True)
            failed.write_text(
                json.dumps(
                    {
                        "stage": name,
                        "error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(),
                    },
                    indent=1,
                ),
                encoding="utf-8",
            )
            self.say(f"    FAILED: {type(exc).__name__}: {exc}\n    (details: {failed}); going on")
            return None
        seconds = time.perf_counter() - t0
        record = {
            "stage": name,
            "title": title,
            "seconds": seconds,
            "result": value,
            "finished": _dt.datetime.now().isoformat(timespec="seconds"),
        }
        path = self.marker(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
        tmp.replace(path)
        failed.unlink(missing_ok=True)
        self.say(f"    done in {seconds:.0f} s")
        return record

    def timings(self) -> list[dict[str, Any]]:
        """Every finished stage's marker, in the order they finished."""
        folder = self.out / STAGES_DIR
        records = (
            [
                json.loads(p.read_text(encoding="utf-8"))
                for p in folder.glob("*.json")
                if not p.name.endswith(".failed.json")
            ]
            if folder.is_dir()
            else []
        )
        return sorted(records, key=lambda r: r.get("finished", ""))

    def failures(self) -> list[dict[str, Any]]:
        """The failure records still standing (a stage that later succeeded has none)."""
        folder = self.out / STAGES_DIR
        return (
            [
                json.loads(p.read_text(encoding="utf-8"))
                for p in sorted(folder.glob("*.failed.json"))
            ]
            if folder.is_dir()
            else []
        )
