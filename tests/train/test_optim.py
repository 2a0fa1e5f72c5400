import math

import pytest
import torch
from omegaconf import OmegaConf
from toy_training import ToyAutoencoder

from medmim.errors import ConfigError
from medmim.train.config import OptimConfig
from medmim.train.optim import (
    Schedule,
    apply_schedule,
    build_optimizer,
    clip_gradients,
    param_groups,
)
from medmim.types import TrainContext


def toy() -> ToyAutoencoder:
    return ToyAutoencoder({"name": "toy_encoder", "dim": 8})


def test_param_groups_exclude_norms_biases_and_tokens() -> None:
    decay, no_decay = param_groups(toy(), OptimConfig().no_decay_keys)
    assert decay["names"] == [
        "student.patch_embed.weight",
        "student.mix.weight",
        "head.proj.weight",
        "head.last_layer.weight",
        "decoder.weight",
    ]
    assert set(no_decay["names"]) == {
        "student.patch_embed.bias",
        "student.pos_embed",
        "student.mask_token",
        "student.norm.weight",
        "student.norm.bias",
        "student.mix.bias",
        "head.proj.bias",
        "head.last_layer.bias",
        "decoder.bias",
    }
    assert not any(n.startswith("teacher.") for n in decay["names"] + no_decay["names"])
    assert no_decay["weight_decay"] == 0.0 and decay["apply_wd"] and not no_decay["apply_wd"]


def test_param_groups_honour_no_weight_decay_and_keys() -> None:
    method = toy()
    method.no_weight_decay = lambda: {"decoder.weight"}  # type: ignore[method-assign]
    decay, no_decay = param_groups(method, ["last_layer"])
    assert "decoder.weight" in no_decay["names"] and "head.last_layer.weight" in no_decay["names"]
    assert "student.pos_embed" in decay["names"]  # 5-D token, only excluded by its name


def test_schedule_from_config_and_apply() -> None:
    cfg = OmegaConf.structured(
        OptimConfig(lr=1e-3, min_lr=1e-5, warmup_epochs=2, freeze_last_layer_epochs=0.5)
    )
    s = Schedule.from_config(cfg, steps_per_epoch=10, total_steps=100)
    assert s.warmup_steps == 20
    assert s.lr_at(0) == 0.0 and math.isclose(s.lr_at(10), 5e-4) and s.lr_at(20) == 1e-3
    assert s.lr_at(100) == 1e-5 and s.lr_at(60) < 1e-3
    assert math.isclose(s.wd_at(0), 0.04) and math.isclose(s.wd_at(100), 0.4)
    opt = build_optimizer(toy(), cfg)
    apply_schedule(opt, 0.5, 0.3)
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [(0.5, 0.3), (0.5, 0.0)]


def test_warmup_steps_overrides_warmup_epochs() -> None:
    cfg = OmegaConf.structured(OptimConfig(lr=1e-3, warmup_epochs=2, warmup_steps=7))
    s = Schedule.from_config(cfg, steps_per_epoch=10, total_steps=100)
    assert s.warmup_steps == 7 and s.lr_at(7) == 1e-3 and math.isclose(s.lr_at(3), 3e-3 / 7)
    cfg.warmup_steps = None
    assert Schedule.from_config(cfg, steps_per_epoch=10, total_steps=100).warmup_steps == 20
    from medmim.errors import ConfigError
    from medmim.train.session import resolve_config

    with pytest.raises(
        ConfigError, match=r"optim.warmup_steps: -1 is too small; use an integer >= 0"
    ):
        resolve_config({"optim": {"warmup_steps": -1}})
    assert resolve_config({"optim": {"warmup_steps": 0}}).optim.warmup_steps == 0


def test_frozen_parameters_without_gradients_keep_their_values_under_adamw() -> None:
    method = toy()
    method.context = TrainContext(freeze_last_layer_steps=1)
    opt = build_optimizer(method, OmegaConf.structured(OptimConfig()))
    apply_schedule(opt, 0.1, 0.5)
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    batch = {
        "views": [torch.rand(2, 1, 16, 16, 16), torch.rand(2, 1, 16, 16, 16)],
        "index": torch.arange(2),
    }
    method(batch, 0).loss.backward()
    assert not method.frozen_parameters(1) and len(method.frozen_parameters(0)) == 2
    for p in method.frozen_parameters(0):  # what the loop does
        p.grad = None
    opt.step()
    for name, p in method.named_parameters():
        if "last_layer" in name or name.startswith("teacher."):
            assert torch.equal(p, before[name]), name
        else:
            assert not torch.equal(p, before[name]), name


def test_clip_gradients_global_and_per_param() -> None:
    a, b = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(3))
    a.grad, b.grad = torch.full((4,), 3.0), torch.full((3,), 0.1)  # norms 6 and ~0.173
    total = clip_gradients([a, b], 1.0, "per_param")
    assert math.isclose(float(total), math.sqrt(36 + 0.03), rel_tol=1e-6)
    assert math.isclose(float(a.grad.norm()), 1.0, rel_tol=1e-5) and torch.allclose(
        b.grad, torch.full((3,), 0.1)
    )
    a.grad, b.grad = torch.full((4,), 3.0), torch.full((3,), 0.1)
    clip_gradients([a, b], 1.0, "global")
    assert math.isclose(float(torch.cat([a.grad, b.grad]).norm()), 1.0, rel_tol=1e-5)
    assert math.isclose(float(a.grad[0] / b.grad[0]), 30.0, rel_tol=1e-5)  # direction kept
    a.grad = torch.tensor([float("nan"), 0, 0, 0])
    assert math.isnan(float(clip_gradients([a], 0.0, "global")))
    with pytest.raises(ConfigError, match="clip_mode"):
        clip_gradients([b], 1.0, "norm")


@pytest.mark.parametrize(
    ("batch", "accumulate", "world", "expected"),
    [(1, 1, 1, 5e-4 / 256), (8, 1, 1, 1.5625e-5), (256, 1, 1, 5e-4), (4, 2, 4, 5e-4 * 32 / 256)],
)
def test_linear_lr_scaling(batch: int, accumulate: int, world: int, expected: float) -> None:
    from medmim.train.config import OptimConfig
    from medmim.train.optim import resolve_lr

    optim = OptimConfig(base_lr=5e-4, accumulate=accumulate)
    assert resolve_lr(optim, batch * accumulate * world) == pytest.approx(expected, rel=1e-12)


def test_lr_scaling_none_and_absolute_lr() -> None:
    from medmim.errors import ConfigError
    from medmim.train.config import OptimConfig
    from medmim.train.optim import resolve_lr

    assert resolve_lr(OptimConfig(base_lr=1e-3, lr_scaling="none"), 64) == 1e-3
    assert resolve_lr(OptimConfig(base_lr=1e-3, lr=2e-4), 64) == 2e-4  # lr given: used as is
    with pytest.raises(ConfigError, match="lr_scaling"):
        resolve_lr(OptimConfig(lr_scaling="sqrt"), 8)
