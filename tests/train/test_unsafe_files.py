"""A checkpoint or YAML file that would run code when loaded is refused, and the code never
runs: checkpoints are read with `torch.load(weights_only=True)`, YAML with `yaml.safe_load`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medmim.config import apply_overrides, load_config
from medmim.errors import ConfigError, DataError
from medmim.train import checkpoint as ck


class Payload:
    """Unpickling this calls `open(marker, 'w')`: a harmless stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_that_runs_code_is_refused_unrun(tmp_path: Path) -> None:
    from medmim.eval.export import export

    marker = tmp_path / "ran"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    path = run / "checkpoints" / "last.ckpt"
    torch.save({"step": 1, "method": {}, "optimizer": {}, "encoder": Payload(marker)}, path)
    with pytest.raises(ConfigError, match="last.ckpt: not a readable medmim checkpoint") as err:
        ck.load_checkpoint(path)
    assert "weights_only=False" not in str(err.value)  # never the advice to load it unsafely
    with pytest.raises(ConfigError, match="last.ckpt: not a readable medmim checkpoint"):
        ck.load_resume_checkpoint(run / "checkpoints")
    with pytest.raises(DataError, match="weights_only=True"):
        export(path)
    assert not marker.exists()


def test_executable_yaml_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    preset = tmp_path / "evil.yaml"
    preset.write_text(
        f"name: x\noptim: !!python/object/apply:builtins.open ['{marker}', 'w']\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"evil.yaml: cannot read YAML .*python/object"):
        load_config(preset)
    from omegaconf import OmegaConf

    cfg = apply_overrides(
        OmegaConf.create({"a": 1}), [f"a=!!python/object/apply:builtins.open ['{marker}', 'w']"]
    )
    assert isinstance(cfg.a, str)  # an override value that is not safe YAML stays text
    assert not marker.exists()
