"""Hinge GAN: loss values, the gate (eq. 5), the discriminator's private update and its state."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from medmim.layers.sac import Anisotropy
from medmim.losses.gan import (
    BufferedAdamW,
    GANGate,
    HingeGANLoss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from medmim.models.discriminator import PatchDiscriminator


def test_hinge_values() -> None:
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-3.0, 0.0])
    # 0.5 * (mean(relu(1 - [2, .5])) + mean(relu(1 + [-3, 0]))) = 0.5 * (0.25 + 0.5)
    assert math.isclose(float(hinge_discriminator_loss(real, fake)), 0.375)
    assert math.isclose(float(hinge_generator_loss(fake)), 1.5)


def test_gate_switches_on_only_while_both_last_and_ema_are_small() -> None:
    gate = GANGate(threshold=0.025, momentum=0.9, ema_init=0.1)
    assert not gate.active  # last = +inf
    gate.update(0.0)
    assert math.isclose(float(gate.ema), 0.09) and not gate.active
    steps = 0
    while not gate.active:
        gate.update(0.0)
        steps += 1
    assert steps == 13  # 0.1 * 0.9^14 = 0.0229 <= 0.025 < 0.1 * 0.9^13
    gate.update(0.5)  # one bad step: last is large -> off at once
    assert not gate.active


def _tiny() -> HingeGANLoss:
    return HingeGANLoss(PatchDiscriminator(1, (8, 8), num_groups=4), weight=0.5)


def test_generator_term_gets_gradient_only_into_the_image() -> None:
    gan = _tiny()
    fake = torch.randn(2, 1, 4, 16, 16, requires_grad=True)
    g, weight = gan.generator_loss(fake, Anisotropy(da=0))
    assert weight == 0.0  # gate starts off
    g.backward()
    assert fake.grad is not None and float(fake.grad.abs().sum()) > 0
    assert all(p.grad is None and not p.requires_grad for p in gan.discriminator.parameters())


def test_discriminator_steps_with_its_own_optimizer_and_averages_micro_batches() -> None:
    gan = _tiny()
    params = list(gan.discriminator.parameters())
    before = [p.detach().clone() for p in params]
    real, fake = torch.randn(2, 1, 4, 16, 16), torch.randn(2, 1, 4, 16, 16)
    losses = [float(gan.accumulate(real, fake, Anisotropy(da=0))) for _ in range(2)]
    assert all(torch.equal(p, b) for p, b in zip(params, before))  # nothing moves before step()
    assert not any(p.requires_grad for p in params)
    d = gan.step(lr=1e-2)
    assert math.isclose(d, sum(losses) / 2, rel_tol=1e-6)
    assert math.isclose(float(gan.gate.last), d)
    assert any(not torch.equal(p, b) for p, b in zip(params, before))
    assert all(p.grad is None for p in params)
    assert gan.step(lr=1e-2) is None  # nothing accumulated


def test_discriminator_learns_to_separate() -> None:
    torch.manual_seed(0)
    gan = _tiny()
    real, fake = torch.ones(1, 1, 4, 8, 8), -torch.ones(1, 1, 4, 8, 8)
    first = float(gan.accumulate(real, fake, Anisotropy(da=0)))
    gan.step(lr=1e-2)
    for _ in range(9):
        gan.accumulate(real, fake, Anisotropy(da=0))
        last = gan.step(lr=1e-2)
    assert last < 0.5 * first


def test_optimizer_state_travels_in_the_state_dict_as_tensors() -> None:
    gan = _tiny()
    gan.accumulate(torch.randn(1, 1, 4, 16, 16), torch.randn(1, 1, 4, 16, 16), Anisotropy(da=0))
    gan.step(lr=1e-2)
    state = gan.state_dict()
    assert all(torch.is_tensor(v) for v in state.values())
    other = _tiny()
    other.load_state_dict(state)
    torch.testing.assert_close(other.optimizer.exp_avg_0, gan.optimizer.exp_avg_0)
    assert int(other.optimizer.steps) == 1 and float(other.gate.last) == float(gan.gate.last)


def test_buffered_adamw_matches_torch_adamw() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    ref = copy.deepcopy(net)
    params = list(net.parameters())
    ours = BufferedAdamW(params, weight_decay=0.05, betas=(0.9, 0.99))
    groups = [
        {"params": [p for p in ref.parameters() if p.ndim > 1], "weight_decay": 0.05},
        {"params": [p for p in ref.parameters() if p.ndim <= 1], "weight_decay": 0.0},
    ]
    torch_opt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.99))
    for lr in (1e-2, 5e-3, 2e-3):
        grads = [torch.randn_like(p) for p in params]
        ours.step(grads, lr)
        for group in torch_opt.param_groups:
            group["lr"] = lr
        for p, g in zip(ref.parameters(), grads):
            p.grad = g.clone()
        torch_opt.step()
    for a, b in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)


def test_engine_optimizer_never_sees_the_discriminator() -> None:
    wrapper = nn.Module()
    wrapper.net = nn.Linear(2, 2)
    wrapper.gan = _tiny()
    trainable = [n for n, p in wrapper.named_parameters() if p.requires_grad]
    assert trainable == ["net.weight", "net.bias"]
