"""The training monitor: metrics.jsonl rows and the distillation health warnings in train.log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from medmim.train.monitor import LOG_FILE, Monitor


def _run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, entropy: float, other: float = 0.5
) -> list[str]:
    monitor = Monitor(tmp_path, 0, total_steps=100, progress=False)
    try:
        with caplog.at_level(logging.WARNING, logger="medmim.train"):
            for step in (1, 10, 20, 30, 40):
                monitor.log_step(
                    step,
                    {
                        "loss": 7.0,
                        "teacher/entropy/cls": entropy,
                        "teacher/entropy/patch": other,
                        "teacher/cos_batch/patch": 0.2,
                    },
                )
    finally:
        monitor.close()
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_warns_once_when_targets_stay_uniform_for_a_fifth(tmp_path, caplog) -> None:
    warnings = _run(tmp_path, caplog, 0.999)  # uniform from step 20 (past the first fifth) to 40
    assert len(warnings) == 1
    assert warnings[0].startswith("step 40: distillation health: the teacher's 'cls' targets")
    assert "entropy / ln K 0.999" in warnings[0] and "'patch'" not in warnings[0]
    assert "WARNING step 40: distillation health" in (tmp_path / LOG_FILE).read_text(
        encoding="utf-8"
    )
    rows = [
        json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert rows[-1]["teacher/entropy/cls"] == pytest.approx(0.999)


def test_warns_when_the_teacher_collapses(tmp_path, caplog) -> None:
    warnings = _run(tmp_path, caplog, 0.5, other=0.01)
    assert len(warnings) == 1 and "'patch' targets have collapsed" in warnings[0]


def test_no_warning_when_the_targets_carry_information(tmp_path, caplog) -> None:
    assert _run(tmp_path, caplog, 0.9) == []
