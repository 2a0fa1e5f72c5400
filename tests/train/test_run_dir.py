import logging
from collections import namedtuple
from pathlib import Path

import pytest
from toy_training import ToyVolumes, toy_config

from medmim.errors import ConfigError
from medmim.train import run_dir as rd
from medmim.train.loop import pretrain


def test_existing_run_is_not_overwritten(tmp_path: Path) -> None:
    run = tmp_path / "a"
    rd.check_run_dir(run, resume=False)  # creates it
    assert (run / "checkpoints").is_dir() and (run / "figures").is_dir()
    rd.check_run_dir(run, resume=False)  # an empty folder is not a run yet
    (run / "config.yaml").write_text("name: a\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"already holds a run; choose another name=..., or delete"
    ):
        rd.check_run_dir(run, resume=False)  # no checkpoint: nothing to resume
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(
        ConfigError,
        match=r"already holds a run; continue it with medmim pretrain --resume "
        r".*a \(or resume=true\)",
    ):
        rd.check_run_dir(run, resume=False)


def test_resume_needs_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"resume=true but .*last.ckpt does not exist .*; drop resume=true"
    ):
        rd.check_run_dir(tmp_path / "b", resume=True)


def test_unwritable_run_dir_fails_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the output folder should be", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"cannot write to run directory .*runs/toy.* set output_dir="
    ):
        pretrain(toy_config(blocker), dataset=ToyVolumes())


def test_full_disk_fails_before_training(tmp_path: Path, monkeypatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(rd.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(
        ConfigError, match=r"0.00 GiB free but this run needs about 0.07 GiB \(6 checkpoints"
    ):
        pretrain(toy_config(tmp_path, "train.keep_every=4"), dataset=ToyVolumes())
    assert not (tmp_path / "toy" / "config.yaml").exists()
    assert not list((tmp_path / "toy" / "checkpoints").iterdir())


def test_resume_config_changes(tmp_path: Path, caplog) -> None:
    (tmp_path / "config.yaml").write_text(
        "model: {name: vit, dim: 8}\noptim: {lr: 0.1}\n"
        "train: {max_steps: 10, log_every: 1}\nresume: false\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING):
        changed = rd.check_resume_config(
            tmp_path,
            {
                "model": {"name": "vit", "dim": 8},
                "optim": {"lr": 0.01},
                "train": {"max_steps": 20, "log_every": 5},
                "resume": True,
            },
        )
    assert (
        changed == ["optim.lr", "train.max_steps"]
        and "optim.lr changed: 0.1 -> 0.01" in caplog.text
    )
    with pytest.raises(
        ConfigError,
        match=r"other settings than it was started with \(model.dim: 8 -> 16.*"
        r"medmim pretrain --resume",
    ):
        rd.check_resume_config(tmp_path, {"model": {"name": "vit", "dim": 16}})


def test_resume_refuses_data_changes_and_allows_new_defaults(tmp_path: Path) -> None:
    """Issue 13: a forgotten data.recipe override on resume is refused, with every difference;
    a key the saved config lacks (added to medmim later) is unchanged when at its default."""
    (tmp_path / "config.yaml").write_text(
        "data: {recipe: {intensity: mr_zscore, window: [-750, 1750]}, crop_size: [64, 64, 64]}\n"
        "train: {max_steps: 10}\n",
        encoding="utf-8",
    )
    with pytest.raises(
        ConfigError,
        match=r"data.crop_size: \[64, 64, 64\] -> \[96, 96, 96\]; "
        r"data.recipe.intensity: 'mr_zscore' -> 'ct'",
    ):
        rd.check_resume_config(
            tmp_path,
            {
                "data": {
                    "recipe": {"intensity": "ct", "window": [-750, 1750]},
                    "crop_size": [96, 96, 96],
                },
                "train": {"max_steps": 10},
            },
        )
    same = {
        "data": {
            "recipe": {"intensity": "mr_zscore", "window": [-750, 1750]},
            "crop_size": [64, 64, 64],
            "recipe_check": True,
            "plan": "",
        },
        "train": {"max_steps": 20},
    }
    assert rd.check_resume_config(tmp_path, same) == ["train.max_steps"]
    same["data"]["recipe_check"] = False  # not the default: a change of what is checked
    with pytest.raises(ConfigError, match="data.recipe_check: None -> False"):
        rd.check_resume_config(tmp_path, same)


def test_checkpoint_estimate_counts_tensors_and_skips_extra_state() -> None:
    import torch
    from torch import nn

    class WithExtraState(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 3)  # 15 float32 parameters
            self.register_buffer("count", torch.zeros(2, dtype=torch.int64))  # 16 bytes

        def get_extra_state(self) -> dict:
            return {"gate": "open", "steps": 7}  # a non-tensor state_dict value

        def set_extra_state(self, state: dict) -> None:
            pass

    module = WithExtraState()
    assert not torch.is_tensor(module.state_dict()["_extra_state"])
    state, moments = 15 * 4 + 16, 2 * 15 * 4
    assert rd.estimate_checkpoint_bytes(module) == int(1.05 * (state + moments)) + 2**20


@pytest.mark.parametrize(
    "name", ["../escape", "", "  ", "/abs/run", "a/b", "..", ".", "a\\b", " x"]
)
def test_run_name_must_be_one_folder_under_output_dir(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"is not a run name: give one folder name"):
        pretrain(toy_config(tmp_path / "runs", f"name='{name}'"), dataset=ToyVolumes())
    assert not (tmp_path / "escape").exists() and not (tmp_path / "runs").exists()


def test_plain_run_names_pass() -> None:
    for name in ("smart_ct", "run-1", "v1.2", "toy"):
        rd.check_run_name(name)


def test_a_run_directory_in_use_is_refused_and_released_after(tmp_path: Path) -> None:
    import os

    from medmim.train.lock import RunLock

    holder = RunLock(tmp_path / "runs" / "dual").acquire()  # another process's run, in effect
    try:
        with pytest.raises(
            ConfigError,
            match=rf"dual is in use by another medmim process \(pid {os.getpid()}\); wait",
        ):
            pretrain(
                toy_config(tmp_path / "runs", "name=dual", "train.max_steps=2"),
                dataset=ToyVolumes(),
            )
    finally:
        holder.release()
    run = pretrain(
        toy_config(tmp_path / "runs", "name=dual", "train.max_steps=2"), dataset=ToyVolumes()
    )
    RunLock(run).acquire().release()  # the finished run let go of its lock
    pretrain(
        toy_config(tmp_path / "runs", "name=dual", "resume=true", "train.max_steps=4"),
        dataset=ToyVolumes(),
    )


def test_stale_temp_cleanup_spares_live_writers(tmp_path: Path) -> None:
    import os

    from medmim.train.checkpoint import remove_stale_temps

    live = tmp_path / f".last.ckpt.tmp-{os.getpid()}"
    dead = tmp_path / ".last.ckpt.tmp-999999999"
    for f in (live, dead):
        f.write_bytes(b"x")
    remove_stale_temps(tmp_path)
    assert live.exists() and not dead.exists()


def test_truncated_config_yaml_on_resume_uses_the_checkpoint(tmp_path: Path, caplog) -> None:
    run = pretrain(toy_config(tmp_path, "name=t", "train.max_steps=2"), dataset=ToyVolumes())
    text = (run / "config.yaml").read_text(encoding="utf-8")
    (run / "config.yaml").write_text(text[: len(text) // 3] + "\n  - [unclosed", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="medmim"):
        pretrain(
            toy_config(tmp_path, "name=t", "resume=true", "train.max_steps=4"), dataset=ToyVolumes()
        )
    assert (
        "config.yaml cannot be parsed" in caplog.text
        and "config stored in the checkpoint" in caplog.text
    )
    assert "name: t" in (run / "config.yaml").read_text(encoding="utf-8")  # rewritten whole


def test_a_second_process_on_a_running_run_is_refused(tmp_path: Path) -> None:
    """Two `pretrain` processes on one run directory: the second is refused while the first
    trains (it holds the lock from another process), and the first's files are untouched."""
    import os
    import subprocess
    import sys
    import time

    import torch
    from toy_training import write_script

    root = tmp_path / "runs"
    marker = tmp_path / "hanging"
    env = {**os.environ, "TOY_HANG_AT_STEP": "3", "TOY_HANG_MARKER": str(marker)}
    first = subprocess.Popen(
        [
            sys.executable,
            str(write_script(tmp_path, root)),
            "name=dual",
            "train.ckpt_every=1",
            "train.max_steps=6",
        ],
        env=env,
    )
    try:
        deadline = time.time() + 120
        while not marker.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), "the first run did not reach its hanging step"
        before = (root / "dual" / "metrics.jsonl").read_bytes()
        for resume in ("resume=false", "resume=true"):
            with pytest.raises(
                ConfigError, match=rf"dual is in use by another medmim process \(pid {first.pid}\)"
            ):
                pretrain(
                    toy_config(root, "name=dual", resume, "train.max_steps=6"), dataset=ToyVolumes()
                )
        assert (root / "dual" / "metrics.jsonl").read_bytes() == before
        assert (
            torch.load(root / "dual" / "checkpoints" / "last.ckpt", weights_only=True)["step"] == 3
        )
    finally:
        first.kill()
        first.wait()
    # the killed run's lock died with it: the run resumes
    pretrain(
        toy_config(root, "name=dual", "resume=true", "train.max_steps=6"), dataset=ToyVolumes()
    )
