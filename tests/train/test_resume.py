"""THE kill/resume test: SIGKILL a training process mid-run, resume it, and get bit-identical
weights, optimizer state and logged losses compared with a run that was never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from toy_training import ToyVolumes, toy_config, write_script

from medmim.train.loop import pretrain

ARGS = ("train.ckpt_every=4", "train.log_every=1")
TIMING = ("time/step_s", "speed/samples_per_s")


def metrics(run: Path) -> list[dict]:
    rows = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def kill_at_step_10(tmp_path: Path, root: Path) -> subprocess.Popen:
    """Start the toy run in a subprocess; it blocks at step 10 (last checkpoint: step 8)."""
    marker = tmp_path / "at-step-10"
    env = {
        **os.environ,
        "TOY_HANG_AT_STEP": "10",
        "TOY_HANG_MARKER": str(marker),
        "OMP_NUM_THREADS": "1",
    }
    script = write_script(tmp_path, root)
    proc = subprocess.Popen(
        [sys.executable, str(script), "name=killed", *ARGS],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before step 10:\n{proc.stdout.read()}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the run did not reach step 10 in 120 s")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()  # type: ignore[union-attr]
    return proc


@pytest.mark.slow
def test_sigkilled_run_resumes_exactly(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    proc = kill_at_step_10(tmp_path, root)
    assert proc.returncode == -signal.SIGKILL
    killed = root / "killed"
    assert torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["step"] == 8
    assert [r["step"] for r in metrics(killed)] == list(range(1, 11))  # 9, 10 were never saved

    resumed = pretrain(toy_config(root, "name=killed", "resume=true", *ARGS), dataset=ToyVolumes())
    straight = pretrain(toy_config(root, "name=straight", *ARGS), dataset=ToyVolumes())

    a = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["step"] == b["step"] == 16
    assert a["method"].keys() == b["method"].keys()
    for key in a["method"]:
        assert torch.equal(a["method"][key], b["method"][key]), key
    for pid, state in b["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(a["optimizer"]["state"][pid][key], value), (pid, key)
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])
    assert metrics(resumed) == metrics(straight)  # same losses at every step, rows 9-10 not doubled
    assert not list((resumed / "checkpoints").glob(".*tmp*"))


def test_corrupt_last_ckpt_falls_back_to_the_newest_kept_copy(tmp_path: Path, caplog) -> None:
    """last.ckpt unreadable: resume from the newest readable step-*.ckpt, say so, end the same."""
    import logging

    root = tmp_path / "runs"
    first = pretrain(
        toy_config(root, "name=r", "train.max_steps=8", "train.keep_every=4", "train.ckpt_every=4"),
        dataset=ToyVolumes(),
    )
    ckpts = first / "checkpoints"
    (ckpts / "last.ckpt").write_bytes(b"truncated")  # a broken write or disk
    (ckpts / "step-000008.ckpt").write_bytes(b"also broken")
    with caplog.at_level(logging.WARNING, logger="medmim.train"):
        resumed = pretrain(
            toy_config(
                root,
                "name=r",
                "resume=true",
                "train.max_steps=8",
                "train.keep_every=4",
                "train.ckpt_every=4",
            ),
            dataset=ToyVolumes(),
        )
    assert "resuming from the newest readable kept copy, step-000004.ckpt (step 4)" in caplog.text
    straight = pretrain(toy_config(root, "name=s", "train.max_steps=8"), dataset=ToyVolumes())
    a = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["step"] == b["step"] == 8
    assert all(torch.equal(a["method"][k], b["method"][k]) for k in b["method"])


def test_no_readable_checkpoint_is_a_named_error(tmp_path: Path) -> None:
    from medmim.errors import ConfigError
    from medmim.train.checkpoint import load_resume_checkpoint

    (tmp_path / "last.ckpt").write_bytes(b"x")
    with pytest.raises(
        ConfigError,
        match=r"last.ckpt: not a readable medmim checkpoint \(truncated, .*\) and there is "
        r"no kept step-\*.ckpt copy",
    ):
        load_resume_checkpoint(tmp_path)


def test_a_checkpoint_without_its_method_is_not_resumed(tmp_path: Path) -> None:
    from medmim.errors import ConfigError
    from medmim.train.checkpoint import load_resume_checkpoint

    torch.save({"step": 3, "optimizer": {}}, tmp_path / "last.ckpt")
    with pytest.raises(
        ConfigError, match=r"last.ckpt: not a resumable medmim checkpoint \(no 'method'"
    ):
        load_resume_checkpoint(tmp_path)


def test_an_empty_checkpoint_says_so(tmp_path: Path) -> None:
    from medmim.errors import ConfigError
    from medmim.train.checkpoint import load_checkpoint

    (tmp_path / "last.ckpt").write_bytes(b"")
    with pytest.raises(
        ConfigError, match=r"last.ckpt: not a readable medmim checkpoint \(an empty file"
    ):
        load_checkpoint(tmp_path / "last.ckpt")
