"""`medmim data plan`, then the plan in `medmim pretrain data.plan=` and downstream `--plan`;
the recipe-vs-modality check at pretraining start and downstream."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from medmim.cli.main import main
from medmim.data.phantoms import generate_phantoms

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))  # the toy method
sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))  # tiny exported encoders
from _downstream_data import NATIVE, TINY_VIT, write_export  # noqa: E402
from toy_training import toy_config  # noqa: E402


@pytest.fixture
def toy_preset(tmp_path: Path) -> Path:
    """The toy method (16^3 crops, batch 1) as a YAML preset; data.source set per test."""
    path = tmp_path / "toy.yaml"
    cfg = toy_config(tmp_path / "runs", "data.batch_size=1", "train.max_steps=1")
    OmegaConf.save(cfg, path)
    return path


def test_plan_of_phantoms_says_ct(tmp_path: Path, capsys) -> None:
    generate_phantoms(tmp_path / "ph", n=1, size="small")
    assert (
        main(["data", "plan", str(tmp_path / "ph" / "images"), "--out", str(tmp_path / "p.yaml")])
        == 0
    )
    out = capsys.readouterr().out
    assert "modality: CT" in out and "recipe: 'smart'" in out and "data.plan=" in out
    plan = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert plan["modality"] == "CT" and plan["recipe"]["intensity"] == "ct"


def test_plan_of_an_mri_says_mr(tmp_path: Path, mr_dir: Path, capsys) -> None:
    assert main(["data", "plan", str(mr_dir), "--out", str(tmp_path / "p.yaml")]) == 0
    out = capsys.readouterr().out
    assert "modality: MR" in out and "foreground z-score" in out
    assert yaml.safe_load((tmp_path / "p.yaml").read_text())["recipe"]["intensity"] == "mr_zscore"


def test_pretrain_refuses_a_ct_window_on_mr(toy_preset: Path, mr_dir: Path, capsys) -> None:
    args = ["pretrain", "--config", str(toy_preset), f"data.source={mr_dir}"]
    assert main([*args, "name=ct_on_mr"]) == 2
    err = capsys.readouterr().err
    assert "CT window" in err and "data.plan=plan.yaml" in err and "data.recipe=mr" in err
    assert "data.recipe_check=false" in err
    assert main([*args, "name=forced", "data.recipe_check=false"]) == 0


def test_recipe_mr_and_plan_reach_config_yaml(
    tmp_path: Path, toy_preset: Path, mr_dir: Path
) -> None:
    args = ["pretrain", "--config", str(toy_preset), f"data.source={mr_dir}"]
    assert main([*args, "name=mr", "data.recipe=mr"]) == 0
    saved = yaml.safe_load((tmp_path / "runs" / "mr" / "config.yaml").read_text())
    assert saved["data"]["recipe"]["intensity"] == "mr_zscore"
    plan = tmp_path / "plan.yaml"
    assert main(["data", "plan", str(mr_dir), "--out", str(plan)]) == 0
    planned = yaml.safe_load(plan.read_text())
    # the toy model takes 16^3 crops: a command-line crop wins over the plan's
    assert main([*args, "name=planned", f"data.plan={plan}", "data.crop_size=[16,16,16]"]) == 0
    plan.unlink()  # the run must not need the plan file again
    saved = yaml.safe_load((tmp_path / "runs" / "planned" / "config.yaml").read_text())
    for key, value in planned["recipe"].items():
        assert saved["data"]["recipe"][key] == value, key
    assert saved["data"]["plan"] == "" and saved["data"]["crop_size"] == [16, 16, 16]


def test_downstream_plan_and_force_recipe(tmp_path: Path, mr_dir: Path, capsys) -> None:
    export = write_export(tmp_path / "export", TINY_VIT, NATIVE, (32, 32, 32))
    base = [
        "attention",
        "--encoder",
        f"scratch:{export}",
        "--data",
        str(mr_dir),
        "--roi",
        "32",
        "--max-figures",
        "0",
        "--device",
        "cpu",
    ]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "the encoder's recipe applies a CT window" in err
    assert "--plan plan.yaml" in err and "--recipe mr" in err and "--force-recipe" in err
    plan = tmp_path / "plan.yaml"
    assert main(["data", "plan", str(mr_dir), "--out", str(plan)]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--plan", str(plan)]) == 0
    used = yaml.safe_load((tmp_path / "b" / "results.json").read_text())
    assert "mr_zscore" in str(used)
    with pytest.raises(SystemExit):  # --plan and --recipe exclude each other
        main([*base, "--out", str(tmp_path / "c"), "--plan", str(plan), "--recipe", "mr"])
