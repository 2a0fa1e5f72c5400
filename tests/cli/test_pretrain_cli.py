import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import medmim.data.pretrain as data_pretrain
from medmim.cli.main import main

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))  # the toy method and dataset
from toy_training import ToyVolumes, toy_config  # noqa: E402


@pytest.fixture
def preset(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(
        data_pretrain, "build_pretrain_dataset", lambda cfg, run_dir, seed: ToyVolumes()
    )
    path = tmp_path / "toy.yaml"
    OmegaConf.save(toy_config(tmp_path / "runs"), path)
    return path


def test_pretrain_command_trains_and_refuses_to_overwrite(preset: Path, capsys) -> None:
    assert main(["pretrain", "--config", str(preset), "name=cli", "train.max_steps=2"]) == 0
    assert "run directory:" in capsys.readouterr().out
    ckpt = torch.load(
        preset.parent / "runs" / "cli" / "checkpoints" / "last.ckpt", weights_only=True
    )
    assert ckpt["step"] == 2 and ckpt["config"]["train"]["max_steps"] == 2
    assert main(["pretrain", "--config", str(preset), "name=cli"]) == 2
    assert (
        "already holds a run; continue it with medmim pretrain --resume" in capsys.readouterr().err
    )


def test_pretrain_print_config_and_bad_override(preset: Path, capsys) -> None:
    assert main(["pretrain", "--config", str(preset), "--print-config", "optim.lr=0.5"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out
    assert main(["pretrain", "--config", str(preset), "optim.lrr=0.5"]) == 2
    assert "Did you mean 'lr'?" in capsys.readouterr().err
    assert main(["pretrain", "--config", str(preset), "train.precision=fp8"]) == 2
    assert "train.precision: 'fp8' is not one of auto, fp32, bf16, fp16" in capsys.readouterr().err


def test_resume_from_the_run_directory(preset: Path, capsys) -> None:
    """Issue 13: `--resume RUN_DIR` takes the saved settings; max_steps and the learning rate
    may change, the data and the model may not, and config.yaml keeps the saved recipe."""
    run = preset.parent / "runs" / "r"
    assert (
        main(["pretrain", "--config", str(preset), "name=r", "train.max_steps=2", "data.recipe=mr"])
        == 0
    )
    saved = (run / "config.yaml").read_text(encoding="utf-8")
    assert main(["pretrain", "--resume", str(run), "data.recipe=ct"]) == 2
    err = capsys.readouterr().err
    assert "data.recipe.intensity: 'mr_zscore' -> 'ct'" in err and f"--resume {run}" in err
    assert (run / "config.yaml").read_text(encoding="utf-8") == saved  # never rewritten
    assert main(["pretrain", "--resume", str(run), "train.max_steps=4", "optim.lr=0.005"]) == 0
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["step"] == 4 and ckpt["config"]["data"]["recipe"]["intensity"] == "mr_zscore"
    assert ckpt["config"]["optim"]["lr"] == 0.005
    # name=... resume=true without --config reads the same saved settings
    out = str(preset.parent / "runs")
    assert (
        main(["pretrain", "name=r", f"output_dir={out}", "resume=true", "train.max_steps=5"]) == 0
    )
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["step"] == 5
    assert main(["pretrain", "--resume", str(run), "--config", str(preset)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(preset.parent / "runs" / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_a_new_base_lr_on_resume_is_resolved_again(preset: Path) -> None:
    run = preset.parent / "runs" / "b"
    assert (
        main(
            [
                "pretrain",
                "--config",
                str(preset),
                "name=b",
                "train.max_steps=2",
                "optim.lr=null",
                "optim.base_lr=0.256",
            ]
        )
        == 0
    )  # 0.256 x 2 / 256
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["config"]["optim"][
        "lr"
    ] == pytest.approx(0.002)
    assert main(["pretrain", "--resume", str(run), "train.max_steps=3", "optim.base_lr=0.128"]) == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["config"]["optim"][
        "lr"
    ] == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("flag", "hint"),
    [
        ("--data", "data.source=/x"),
        ("--max-steps", "train.max_steps=/x"),
        ("--plan", "data.plan=/x"),
    ],
)
def test_downstream_flags_point_at_key_value_settings(flag: str, hint: str, capsys) -> None:
    assert main(["pretrain", "--config", "smart_demo", flag, "/x"]) == 2
    err = capsys.readouterr().err
    assert f"takes settings as key=value, not {flag}: write {hint}" in err
