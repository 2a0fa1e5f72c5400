"""The training monitor's near-uniform-targets warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from medmim.train.monitor import Monitor


def _run(tmp_path: Path, caplog: pytest.LogCaptureFixture, entropy: float, other: float = 0.5) -> list[str]:
    monitor = Monitor(tmp_path, 0, total_steps=100, progress=False)
    try:
        with caplog.at_level(logging.WARNING, logger="medmim.train"):
            for step in (1, 10, 20, 30, 40):
                monitor.log_step(step, {"loss": 7.0, "teacher/entropy/itd": entropy,
                                        "teacher/entropy/mpd": other})
    finally:
        monitor.close()
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_warns_once_when_targets_stay_uniform_past_a_fifth(tmp_path, caplog) -> None:
    warnings = _run(tmp_path, caplog, 0.999)
    assert len(warnings) == 1
    assert warnings[0].startswith("step 20:") and "itd 0.999" in warnings[0] and "ln K" in warnings[0]
    assert "mpd" not in warnings[0]  # only the families at uniform are named
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[-1]["teacher/entropy/itd"] == pytest.approx(0.999)


def test_no_warning_when_the_targets_carry_information(tmp_path, caplog) -> None:
    assert _run(tmp_path, caplog, 0.9) == []
