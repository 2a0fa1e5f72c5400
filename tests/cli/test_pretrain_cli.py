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
    monkeypatch.setattr(data_pretrain, "build_pretrain_dataset", lambda cfg, run_dir, seed: ToyVolumes())
    path = tmp_path / "toy.yaml"
    OmegaConf.save(toy_config(tmp_path / "runs"), path)
    return path


def test_pretrain_command_trains_and_refuses_to_overwrite(preset: Path, capsys) -> None:
    assert main(["pretrain", "--config", str(preset), "name=cli", "train.max_steps=2"]) == 0
    assert "run directory:" in capsys.readouterr().out
    ckpt = torch.load(preset.parent / "runs" / "cli" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["config"]["train"]["max_steps"] == 2
    assert main(["pretrain", "--config", str(preset), "name=cli"]) == 2
    assert "already holds a run; pass resume=true" in capsys.readouterr().err


def test_pretrain_print_config_and_bad_override(preset: Path, capsys) -> None:
    assert main(["pretrain", "--config", str(preset), "--print-config", "optim.lr=0.5"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out
    assert main(["pretrain", "--config", str(preset), "optim.lrr=0.5"]) == 2
    assert "Did you mean 'lr'?" in capsys.readouterr().err
    assert main(["pretrain", "--config", str(preset), "train.precision=fp8"]) == 2
    assert "train.precision: 'fp8' is not one of auto, fp32, bf16, fp16" in capsys.readouterr().err
