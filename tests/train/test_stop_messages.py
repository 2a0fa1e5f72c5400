"""What `medmim pretrain` says when a run stops on a signal, a second Ctrl-C or a full disk
while writing a log: the exit code and the command that continues the run (issue 14)."""

from __future__ import annotations

import errno
import signal
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from toy_training import toy_config

import medmim.train.loop as loop
from medmim.cli.main import main
from medmim.train.interrupt import RunInterrupted, StopRequest


def test_a_second_ctrl_c_stops_at_once() -> None:
    before = signal.getsignal(signal.SIGINT)
    with StopRequest() as stop:
        signal.raise_signal(signal.SIGINT)  # the first: recorded, the step goes on
        assert stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # the second: now
    assert signal.getsignal(signal.SIGINT) is before  # the old handler is back


@pytest.fixture
def preset(tmp_path: Path) -> Path:
    path = tmp_path / "toy.yaml"
    OmegaConf.save(toy_config(tmp_path / "runs"), path)
    return path


def _stopping_with(exc: BaseException):
    def pretrain(cfg, *args, **kwargs):
        raise exc

    return pretrain


def test_signal_exit_prints_the_resume_command(preset: Path, monkeypatch, capsys) -> None:
    run = preset.parent / "runs" / "sig"
    monkeypatch.setattr(
        loop,
        "pretrain",
        _stopping_with(RunInterrupted(signal.SIGTERM, 5, run / "checkpoints" / "last.ckpt")),
    )
    assert main(["pretrain", "--config", str(preset), "name=sig"]) == 143
    err = capsys.readouterr().err
    assert "SIGTERM at step 5; saved" in err
    assert f"Continue with:\n  medmim pretrain --resume {run}" in err


def test_an_immediate_stop_says_whether_there_is_a_checkpoint(
    preset: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(loop, "pretrain", _stopping_with(KeyboardInterrupt()))
    assert main(["pretrain", "--config", str(preset), "name=k"]) == 130
    assert "no checkpoint was written yet, so run the same command again" in capsys.readouterr().err
    last = preset.parent / "runs" / "k" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"x")
    assert main(["pretrain", "--config", str(preset), "name=k"]) == 130
    err = capsys.readouterr().err
    assert f"continue from {last} with:\n  medmim pretrain --resume {last.parent.parent}" in err


def test_a_full_disk_on_a_log_write_is_named(preset: Path, monkeypatch, capsys) -> None:
    run = preset.parent / "runs" / "full"
    monkeypatch.setattr(
        loop,
        "pretrain",
        _stopping_with(
            OSError(errno.ENOSPC, "No space left on device", str(run / "metrics.jsonl"))
        ),
    )
    assert main(["pretrain", "--config", str(preset), "name=full"]) == 2
    err = capsys.readouterr().err
    assert f"stopped: no space left on {run}" in err and "metrics.jsonl" in err
    assert "Fix the disk" in err and f"medmim pretrain --resume {run}" in err
    assert "Traceback" not in err
