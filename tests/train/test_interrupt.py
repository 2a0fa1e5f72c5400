"""SIGTERM and Ctrl-C: finish the step, save last.ckpt, exit 143 / 130, resume exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from toy_training import ToyVolumes, toy_config

from medmim.train.interrupt import RunInterrupted
from medmim.train.loop import pretrain

ARGS = ("train.ckpt_every=100", "train.log_every=1", "train.max_steps=16")
SCRIPT = """
import sys
sys.path.insert(0, {toy_dir!r})
import torch
torch.set_num_threads(1)
from toy_training import ToyVolumes, toy_config
from medmim.train.interrupt import RunInterrupted
from medmim.train.loop import pretrain
try:
    pretrain(toy_config({root!r}, *sys.argv[1:]), dataset=ToyVolumes())
except RunInterrupted as exc:
    print("interrupted", exc.step, flush=True)
    sys.exit(exc.exit_code)
"""


def _rows(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text(encoding="utf-8").splitlines()) if path.is_file() else 0


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_and_the_run_resumes_exactly(tmp_path: Path, sig: int, code: int) -> None:
    root = tmp_path / "runs"
    script = tmp_path / "run.py"
    script.write_text(
        SCRIPT.format(toy_dir=str(Path(__file__).parent), root=str(root)), encoding="utf-8"
    )
    env = {**os.environ, "TOY_STEP_SLEEP": "0.3", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), "name=sig", *ARGS],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while _rows(root / "sig") < 3:  # no checkpoint has been written yet (ckpt_every=100)
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()  # type: ignore[union-attr]
        time.sleep(0.05)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, out
    ckpt = torch.load(root / "sig" / "checkpoints" / "last.ckpt", weights_only=True)
    assert 3 <= ckpt["step"] < 16 and f"interrupted {ckpt['step']}" in out
    assert "received: finishing this step and saving last.ckpt" in (
        root / "sig" / "train.log"
    ).read_text(encoding="utf-8")

    resumed = pretrain(toy_config(root, "name=sig", "resume=true", *ARGS), dataset=ToyVolumes())
    straight = pretrain(toy_config(root, "name=straight", *ARGS), dataset=ToyVolumes())
    a = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["step"] == b["step"] == 16
    assert all(torch.equal(a["method"][k], b["method"][k]) for k in b["method"])


def test_exit_codes_and_message() -> None:
    exc = RunInterrupted(signal.SIGTERM, 7, Path("runs/x/checkpoints/last.ckpt"))
    assert exc.exit_code == 143 and "SIGTERM at step 7; saved runs/x/checkpoints/last.ckpt" in str(
        exc
    )
    assert RunInterrupted(signal.SIGINT, 1, Path("c")).exit_code == 130


def test_resume_command_drops_an_old_resume_flag(monkeypatch) -> None:
    from medmim.cli.pretrain import resume_command

    monkeypatch.setattr(
        sys, "argv", ["medmim", "pretrain", "--config", "smart_demo", "name=a b", "resume=false"]
    )
    assert resume_command() == "medmim pretrain --config smart_demo 'name=a b' resume=true"
    assert json.dumps(resume_command())  # a plain string


def test_a_stop_between_check_steps_saves_only_checked_weights(tmp_path: Path, monkeypatch) -> None:
    """A signal after a step that is not a check step: the guard's pending count is read before
    the save, so a NaN step since the last check is rolled back, not saved."""
    from toy_training import ToyAutoencoder

    forward = ToyAutoencoder.forward

    def signalling(self, batch, step):
        if step == 3:
            os.kill(
                os.getpid(), signal.SIGTERM
            )  # caught by the run's handler: stop after this step
        return forward(self, batch, step)

    monkeypatch.setattr(ToyAutoencoder, "forward", signalling)
    cfg = toy_config(tmp_path, "method.nan_at=[2]", "train.log_every=100", "train.ckpt_every=100")
    with pytest.raises(RunInterrupted):
        pretrain(cfg, dataset=ToyVolumes())
    ckpt = torch.load(tmp_path / "toy" / "checkpoints" / "last.ckpt", weights_only=True)
    # step 2 is NaN; its update makes step 3 NaN too: two non-finite steps, both undone
    assert ckpt["step"] == 4 and ckpt["counters"]["nonfinite_total"] == 2
    assert all(v.isfinite().all() for v in ckpt["method"].values() if v.is_floating_point())
    log = (tmp_path / "toy" / "train.log").read_text(encoding="utf-8")
    assert "non-finite loss or gradients in the last 3 steps: rolled back" in log
