import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from toy_training import ToyAutoencoder

from medmim.errors import ConfigError
from medmim.train import checkpoint as ck


def draws() -> tuple:
    return random.random(), random.gauss(0, 1), float(np.random.rand()), torch.rand(3).tolist()


@pytest.mark.parametrize(
    ("fault", "expected", "match"),
    [
        (OSError(28, "No space left on device"), ck.DiskFullError, "no space left on"),
        (KeyboardInterrupt(), KeyboardInterrupt, ""),  # a second Ctrl-C during the write
    ],
)
def test_atomic_save_failure_mid_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch, fault, expected, match
) -> None:
    path = tmp_path / "last.ckpt"
    ck.atomic_save({"step": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def dying_save(obj, f):  # writes half a checkpoint, then the "disk" fails / Ctrl-C lands
        real_save({"step": 2, "w": torch.zeros(1000)}, f)
        f.truncate(100)
        raise fault

    monkeypatch.setattr(ck.torch, "save", dying_save)
    with pytest.raises(expected, match=match):
        ck.atomic_save({"step": 2}, path)
    monkeypatch.setattr(ck.torch, "save", real_save)
    loaded = ck.load_checkpoint(path)
    assert loaded["step"] == 1 and torch.equal(loaded["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_stale_temp_of_a_killed_writer_is_removed(tmp_path: Path) -> None:
    writer = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )  # a writer that is gone
    (tmp_path / f".last.ckpt.tmp-{int(writer.stdout)}").write_bytes(b"half")
    ck.atomic_save({"step": 3}, tmp_path / "last.ckpt")
    ck.remove_stale_temps(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_rng_states_round_trip_through_weights_only_load(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    ck.atomic_save({"rng": [ck.capture_rng()]}, tmp_path / "r.ckpt")
    first = draws()
    state = torch.load(tmp_path / "r.ckpt", weights_only=True)["rng"][0]
    ck.restore_rng(state)
    assert draws() == first


def test_unsafe_values_are_named_before_saving() -> None:
    ck.check_weights_only_safe({"a": [1, 2.0, "x", None, (torch.ones(1),)], "b": {"c": True}})
    with pytest.raises(TypeError, match=r"checkpoint\['data'\]\['state'\] is a numpy.ndarray"):
        ck.check_weights_only_safe({"data": {"state": np.zeros(2)}})


def test_keep_copy_survives_later_writes(tmp_path: Path) -> None:
    ck.atomic_save({"step": 4}, tmp_path / ck.LAST)
    kept = ck.keep_copy(tmp_path, 4)
    ck.atomic_save({"step": 8}, tmp_path / ck.LAST)
    assert kept.name == "step-000004.ckpt" and ck.load_checkpoint(kept)["step"] == 4
    assert ck.load_checkpoint(tmp_path / ck.LAST)["step"] == 8


def test_load_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="bad.ckpt: not a readable medmim checkpoint"):
        ck.load_checkpoint(bad)
    with pytest.raises(ConfigError, match="missing.ckpt: no checkpoint there"):
        ck.load_checkpoint(tmp_path / "missing.ckpt")


def test_init_encoder_from_checkpoint_and_exported_dir(tmp_path: Path) -> None:
    source = ToyAutoencoder({"name": "toy_encoder", "dim": 8})
    state = source.encoder.state_dict()
    ck.atomic_save({"encoder": state, "encoder_config": source.encoder.config}, tmp_path / "a.ckpt")
    export = tmp_path / "export"
    export.mkdir()
    save_file(state, str(export / "encoder.safetensors"))
    (export / "encoder.json").write_text(
        json.dumps({"backbone": source.encoder.config}), encoding="utf-8"
    )
    for path in (tmp_path / "a.ckpt", export):
        target = ToyAutoencoder({"name": "toy_encoder", "dim": 8})
        ck.init_encoder_from(target, path)
        for key, value in state.items():
            assert torch.equal(target.student.state_dict()[key], value)
            assert torch.equal(target.teacher.state_dict()[key], value)  # on_encoder_loaded hook


def test_init_encoder_from_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    source = ToyAutoencoder({"name": "toy_encoder", "dim": 8})
    ck.atomic_save(
        {"encoder": source.encoder.state_dict(), "encoder_config": source.encoder.config},
        tmp_path / "a.ckpt",
    )
    wider = ToyAutoencoder({"name": "toy_encoder", "dim": 16})
    with pytest.raises(
        ConfigError,
        match=r"a.ckpt: .* 8 of another shape \[.pos_embed \(1, 8, 4, 4, 4\) "
        r"\(here \(1, 16, 4, 4, 4\)\).*saved from backbone .*'dim': 8",
    ):
        ck.init_encoder_from(wider, tmp_path / "a.ckpt")
    state = source.encoder.state_dict()
    state["extra.weight"] = state.pop("mix.weight")
    ck.atomic_save({"encoder": state}, tmp_path / "b.ckpt")
    with pytest.raises(
        ConfigError, match=r"1 missing \['mix.weight'\], 1 unexpected \['extra.weight'\]"
    ):
        ck.init_encoder_from(source, tmp_path / "b.ckpt")
    with pytest.raises(ConfigError, match="neither encoder.safetensors"):
        ck.init_encoder_from(source, tmp_path)
