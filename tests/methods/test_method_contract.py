"""Contract tests over every registered method and a one-step smoke test of every packaged
preset of the self-distillation methods.

`test_pretrain_method_contract` checks what the training loop relies on (`PretrainMethod`) for
every method, PUMIT's two stages included. The other tests check the parts of the
self-distillation methods (`SelfDistillation`): an EMA teacher that starts as a copy, centres in
the state_dict, two views per batch, `teacher/*` logs, projection heads whose last layers are
frozen at first. PUMIT has none of these (stage 1 is a VQ autoencoder with a GAN, stage 2 learns
from a frozen tokenizer's soft tokens on one view, no teacher), so they run over the
self-distillation methods only; PUMIT's own parts are tested in test_pumit.py."""

from __future__ import annotations

import math

import pytest
import torch
from method_helpers import (
    BACKBONE_OF,
    CONTEXT,
    TINY_HEAD,
    TINY_SWIN,
    TINY_VIT,
    build,
    build_pumit,
    make_batch,
    make_pumit_batch,
    write_pumit_tokenizer,
)
from torch import nn

from medmim.config import list_presets, load_config, to_dict
from medmim.errors import ConfigError
from medmim.methods.base import PretrainMethod
from medmim.methods.distillation import SelfDistillation
from medmim.models.tokenizer import TOKENIZERS
from medmim.registry import BACKBONES, METHODS
from medmim.train.config import RunConfig
from medmim.types import StepOutput, TrainContext

# The package's own methods only: other test modules may register toy methods in the same session.
ALL_METHODS = [
    n for n in METHODS.names() if METHODS.get(n).__module__.startswith("medmim.methods.")
]
#: the self-distillation methods (see the module docstring for why PUMIT's are not among them).
METHOD_NAMES = [n for n in ALL_METHODS if issubclass(METHODS.get(n), SelfDistillation)]
PUMIT_METHODS = ["pumit_tokenizer", "pumit_mim"]


def test_every_method_has_a_tiny_backbone_and_both_presets() -> None:
    assert sorted(BACKBONE_OF) == sorted(METHOD_NAMES), (
        "add the new method to method_helpers.BACKBONE_OF"
    )
    assert sorted(ALL_METHODS) == sorted([*METHOD_NAMES, *PUMIT_METHODS]), (
        "a new method joins a family here"
    )
    for name in ALL_METHODS:
        assert name in list_presets() and f"{name}_demo" in list_presets(), name


@pytest.fixture(scope="module")
def pumit_tokenizer(tmp_path_factory) -> str:
    return write_pumit_tokenizer(tmp_path_factory.mktemp("pumit") / "last.ckpt")


@pytest.mark.parametrize("name", ALL_METHODS)
def test_pretrain_method_contract(name: str, pumit_tokenizer: str) -> None:
    """What the loop relies on: one step gives a finite scalar loss, `loss/*` logs and detached
    (D, H, W) visuals; gradients reach the encoder; `encoder_config()` rebuilds the encoder;
    `frozen_parameters` lists the method's own parameters; the state_dict restores exactly."""
    pumit = name in PUMIT_METHODS
    make = (lambda: build_pumit(name, pumit_tokenizer)) if pumit else (lambda: build(name))
    method, batch = make(), make_pumit_batch() if pumit else make_batch()
    method.train()
    assert isinstance(method, PretrainMethod) and method.method_name == name
    out = method(batch, step=0)
    assert isinstance(out, StepOutput) and out.loss.dim() == 0 and math.isfinite(out.loss.item())
    losses = [float(v) for k, v in out.logs.items() if k.startswith("loss/")]
    assert losses and all(math.isfinite(v) for v in losses)
    for key, vol in out.visuals.items():
        assert vol.shape == batch["views"][0].shape[-3:] and not vol.requires_grad, key
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.encoder.parameters())
    registry = TOKENIZERS if name == "pumit_tokenizer" else BACKBONES
    assert registry.build(method.encoder_config()).config == method.encoder.config
    own = {id(p) for p in method.parameters()}
    for step in (0, 10**6):
        frozen = method.frozen_parameters(step)
        assert all(isinstance(p, nn.Parameter) and id(p) in own for p in frozen)
    method.on_optimizer_step(0)
    fresh = make()
    fresh.load_state_dict(method.state_dict())
    for key, value in method.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_one_step_contract(name: str) -> None:
    method = build(name)
    assert isinstance(method, PretrainMethod) and method.method_name == name
    batch = make_batch()
    out = method(batch, step=0)
    assert isinstance(out, StepOutput) and out.loss.dim() == 0 and math.isfinite(out.loss.item())
    losses = {k: float(v) for k, v in out.logs.items() if k.startswith("loss/")}
    assert losses and all(math.isfinite(v) for v in losses.values())
    assert {"mask/ratio", "teacher/momentum", "teacher/temp"} <= set(out.logs)
    assert out.logs["teacher/momentum"] == pytest.approx(0.996) and out.logs[
        "teacher/temp"
    ] == pytest.approx(0.04)
    assert {"view", "mask"} <= set(out.visuals)
    for key, vol in out.visuals.items():
        assert vol.shape == (32, 32, 32) and not vol.requires_grad, key
    out.loss.backward()

    # gradients reach the student only; the teacher holds no trainable parameter
    teacher = list(method.teacher.parameters())
    assert teacher and all(not p.requires_grad and p.grad is None for p in teacher)
    student_grads = [
        p.grad for n, p in method.student.named_parameters() if n.startswith("backbone.")
    ]
    assert any(g is not None and g.abs().sum() > 0 for g in student_grads)
    assert method.encoder is method.student["backbone"]
    assert BACKBONES.build(method.encoder_config()).config == method.encoder.config


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_teacher_is_a_copy_at_step_0_then_follows_the_ema(name: str) -> None:
    method = build(name)
    student = method.student.state_dict()
    teacher = {k: v.clone() for k, v in method.teacher.module.state_dict().items()}
    assert teacher and set(teacher) <= set(student)
    for key, value in teacher.items():
        assert torch.equal(value, student[key]), key
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    m = method.momentum_at(5)
    assert 0.996 < m < 1.0
    method.on_optimizer_step(5)
    after = method.teacher.module.state_dict()
    key = next(k for k in teacher if k.endswith("weight") and teacher[k].is_floating_point())
    assert torch.allclose(after[key], m * teacher[key] + (1 - m) * (teacher[key] + 1.0), atol=1e-6)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_the_heads_last_layers_are_frozen_for_the_first_steps(name: str) -> None:
    """`frozen_parameters(step)`: every student parameter of a head's last layer (those DINO
    finds by the name "last_layer") before `freeze_last_layer_steps`, nothing after."""
    context = TrainContext(
        steps_per_epoch=10, total_steps=100, crop_size=(32, 32, 32), freeze_last_layer_steps=10
    )
    method = METHODS.build(
        {"name": name, **TINY_HEAD}, backbone=dict(BACKBONE_OF[name]), context=context
    )
    by_name = {id(p) for n, p in method.student.named_parameters() if "last_layer" in n}
    frozen = method.frozen_parameters(9)
    assert by_name and {id(p) for p in frozen} == by_name and len(frozen) == len(by_name)
    assert not method.frozen_parameters(10) and not build(name).frozen_parameters(0)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_state_dict_holds_teacher_and_centres_and_round_trips(name: str) -> None:
    method = build(name)
    method(make_batch(), step=0)  # moves the centres off zero
    state = method.state_dict()
    centres = [k for k in state if k.endswith(".center")]
    assert len(centres) >= 2 and any(state[k].abs().sum() > 0 for k in centres)
    assert any(k.startswith("teacher.") for k in state)
    fresh = build(name)
    fresh.load_state_dict(state)
    for key in centres:
        assert torch.equal(fresh.state_dict()[key], state[key])


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_loss_falls_when_overfitting_one_batch(name: str) -> None:
    """The student fits one fixed batch. The target is held still (EMA momentum 1, centre
    momentum 1): with a moving centre on a 2-volume batch the teacher's distribution flattens
    and the distillation CE rises toward its entropy, whatever the student does."""
    torch.manual_seed(0)
    method = build(name, momentum_start=1.0, center_momentum=1.0)
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=2e-3)
    batch, losses = make_batch(), []
    for step in range(12):
        out = method(batch, step)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        method.on_optimizer_step(step)
        losses.append(out.loss.item())
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.8 * first, losses


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_bad_batches_and_options_fail_clearly(name: str) -> None:
    method = build(name)
    x = make_batch()["views"][0]
    with pytest.raises(ValueError, match="at least 2"):
        method({"views": [x]}, step=0)
    with pytest.raises(ConfigError, match="no option 'out_dimm'"):
        build(name, out_dimm=3)


TINY_MODEL = {
    "swin": ["model.embed_dim=12", "model.depths=[1,1,1,1]", "model.num_heads=[3,3,3,3]"],
    "vit": [
        "model.embed_dim=24",
        "model.depth=2",
        "model.num_heads=2",
        "model.patch_size=8",
        "model.pos_grid=[4,4,4]",
    ],
}


@pytest.mark.parametrize("preset", [p for n in METHOD_NAMES for p in (n, f"{n}_demo")])
def test_every_preset_builds_and_takes_one_step(preset: str) -> None:
    cfg = load_config(preset, schema=RunConfig)
    family = "vit" if str(cfg.model.name).startswith("vit") else "swin"
    tiny = [
        *TINY_MODEL[family],
        "data.crop_size=[32,32,32]",
        *(f"method.{k}={v}" for k, v in TINY_HEAD.items()),
    ]
    cfg = load_config(preset, tiny, schema=RunConfig)
    context = TrainContext(
        steps_per_epoch=5, total_steps=5 * int(cfg.train.epochs), crop_size=(32, 32, 32)
    )
    method = METHODS.build(to_dict(cfg.method), backbone=to_dict(cfg.model), context=context)
    assert method.method_name == cfg.method.name
    out = method(make_batch(), step=0)
    out.loss.backward()
    assert math.isfinite(out.loss.item())


def test_backbone_switch_on_a_backbone_without_it_is_refused() -> None:
    with pytest.raises(ConfigError, match="use method 'smart_vit'"):
        build("smart", backbone=TINY_VIT)
    with pytest.raises(ConfigError, match="gitd_stage"):
        build("smart_vit", backbone=TINY_VIT, gitd_stage=3)
    with pytest.raises(ConfigError, match="model.pool_stage=3 clashes with method.gitd_stage=4"):
        build("smart", backbone={**TINY_SWIN, "pool_stage": 3}, gitd_stage=4)
    assert CONTEXT.steps_per_epoch == 10


def test_masked_only_student_patch_head_matches_the_full_patch_loss() -> None:
    method = build("smart")
    x = torch.cat(make_batch(batch_size=2)["views"])
    mask = torch.rand(4, *method.encoder.mask_grid(x.shape)) < 0.5
    s, t = method.encoder(x, mask), method.teacher_features(x)
    head, loss = method.student["head"], method.losses["patch"]
    full = loss.patch_loss(
        list(head(s["patch"], tokens="patch").chunk(2)),
        list(method.teacher["head"](t["patch"], tokens="patch").chunk(2)),
        list(mask.chunk(2)),
        step=0,
        update_center=False,
    )
    fast = method.patch_distillation("patch", "head", s["patch"], t["patch"], mask, 2, step=0)
    assert fast.item() == pytest.approx(full.item(), rel=1e-5)
