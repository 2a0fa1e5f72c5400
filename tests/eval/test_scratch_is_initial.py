"""`scratch` under seed S is the initial student encoder of a pretraining run with train.seed=S.

The pretraining session seeds everything and then builds the method
(`medmim.train.session`: `seed_everything(seed)` then `METHODS.build(...)`), and a method builds
its student backbone before anything else draws random numbers; `scratch:<export>` seeds torch
and builds the same backbone spec (`medmim.eval.encoders._build_scratch`). So the demo's scratch
encoder (scratch seed = pretraining seed) holds exactly the weights its pretrained encoders
started from, and scratch's attention maps are their initial maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from medmim.eval.encoders import load_encoder_or_scratch
from medmim.eval.export import export
from medmim.registry import METHODS
from medmim.train.checkpoint import seed_everything
from medmim.types import TrainContext

TINY_SWIN: dict[str, Any] = {
    "name": "swin",
    "embed_dim": 12,
    "depths": [1, 1, 1, 1],
    "num_heads": [3, 3, 3, 3],
}
TINY_VIT: dict[str, Any] = {
    "name": "vit",
    "embed_dim": 24,
    "depth": 2,
    "num_heads": 2,
    "patch_size": 8,
    "pos_grid": [4, 4, 4],
}
TINY_HEAD: dict[str, Any] = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16}
CONTEXT = TrainContext(steps_per_epoch=10, total_steps=100, in_channels=1, crop_size=(32, 32, 32))


def initial_encoder(
    seed: int, name: str = "smart", backbone: dict[str, Any] = TINY_SWIN, **options: Any
) -> torch.nn.Module:
    """The student encoder of a tiny run before its first step (as the session builds it)."""
    seed_everything(seed)
    spec = {"name": name, **TINY_HEAD, **options}
    return METHODS.build(spec, backbone=dict(backbone), context=CONTEXT).encoder


def export_of(method_encoder: torch.nn.Module, folder: Path) -> Path:
    """`medmim export` of a checkpoint holding `method_encoder` (its spec and weights)."""
    ckpt = {
        "encoder": method_encoder.state_dict(),
        "encoder_config": dict(method_encoder.config),
        "config": {"data": {"crop_size": [32, 32, 32]}, "method": {"name": "smart"}},
        "step": 0,
    }
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, folder / "last.ckpt")
    return export(folder / "last.ckpt", folder / "export")


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not differ, f"{len(differ)} of {len(sa)} tensors differ, e.g. {differ[:5]}"


@pytest.mark.parametrize(
    "seed, options", [(0, {}), (7, {"backbone": {**TINY_SWIN, "sa_stage": 2}})]
)
def test_scratch_equals_the_initial_student_encoder(
    tmp_path: Path, seed: int, options: dict[str, Any]
) -> None:
    student = initial_encoder(seed, **options)
    folder = export_of(student, tmp_path / "run")
    scratch, meta = load_encoder_or_scratch(f"scratch:{folder}", seed=seed)
    assert meta["method"] == "scratch" and meta["pretrained"] is False
    assert scratch.config == student.config
    assert_same_state(scratch, student)
    # the bare form the demo may use, with the export as reference, is the same encoder
    bare, _ = load_encoder_or_scratch("scratch", reference=folder, seed=seed)
    assert_same_state(bare, student)


@pytest.mark.parametrize(
    "name, backbone",
    [
        ("smit", TINY_SWIN),
        ("ibot", TINY_VIT),
        ("attmask", TINY_VIT),
        ("mst", TINY_VIT),
        ("smart_vit", TINY_VIT),
    ],
)
def test_the_other_methods_also_build_their_backbone_first(
    tmp_path: Path, name: str, backbone: dict[str, Any]
) -> None:
    """The demo's scratch takes the architecture of another method when SMART is not run."""
    student = initial_encoder(5, name, backbone)
    scratch, _ = load_encoder_or_scratch(f"scratch:{export_of(student, tmp_path / 'run')}", seed=5)
    assert_same_state(scratch, student)


def test_another_seed_is_another_init(tmp_path: Path) -> None:
    """Not vacuous: the equality above holds only for the same seed."""
    folder = export_of(initial_encoder(0), tmp_path / "run")
    scratch, _ = load_encoder_or_scratch(f"scratch:{folder}", seed=1)
    student = initial_encoder(0)
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in scratch.state_dict().items())


def test_scratch_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    load_encoder_or_scratch("scratch:swin_demo", seed=0)
    assert torch.equal(torch.rand(4), expected)
