from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from medmim.config import apply_overrides, load_config, save_config, validate
from medmim.errors import ConfigError


@dataclass
class Optim:
    lr: float = 1e-3
    betas: list = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class Schema:
    name: str = "run"
    optim: Optim = field(default_factory=Optim)
    model: dict[str, Any] = field(default_factory=lambda: {"name": "swin"})


def write(tmp: Path, name: str, data: dict) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_base_chain_and_overrides(tmp_path: Path) -> None:
    write(tmp_path, "base", {"name": "a", "optim": {"lr": 0.1}})
    child = write(tmp_path, "child", {"base": "base.yaml", "optim": {"betas": [0.5, 0.6]}})
    cfg = load_config(child, ["optim.lr=0.01", "model.depth=4"], schema=Schema)
    assert cfg.name == "a" and cfg.optim.lr == 0.01 and list(cfg.optim.betas) == [0.5, 0.6]
    assert cfg.model.depth == 4  # registry sections accept options; the registry checks them


def test_unknown_override_key_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "c", {"optim": {"lr": 0.1}})
    with pytest.raises(ConfigError, match="Did you mean 'lr'"):
        load_config(path, ["optim.lrr=1"], schema=Schema)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(path, ["optim.lr"], schema=Schema)


def test_schema_rejects_bad_type_and_unknown_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(write(tmp_path, "d", {"optim": {"lr": "fast"}}), schema=Schema)
    with pytest.raises(ConfigError, match="Did you mean 'optim'"):
        validate(OmegaConf.create({"optm": {}}), Schema)


def test_plus_adds_key_and_save_roundtrip(tmp_path: Path) -> None:
    cfg = apply_overrides(OmegaConf.create({"a": 1}), ["+b.c=[1, 2]"])
    save_config(cfg, tmp_path / "out" / "config.yaml")
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text(encoding="utf-8")) == {
        "a": 1,
        "b": {"c": [1, 2]},
    }


def test_unknown_preset_suggests() -> None:
    with pytest.raises(ConfigError, match="no preset"):
        load_config("no_such_preset_xyz")
