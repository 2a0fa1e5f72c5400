"""Extended prior regularization (PUMIT eq. 4): terms, weights, DDP averaging of p_bar."""

from __future__ import annotations

import math

import torch

from medmim.losses import prior as prior_module
from medmim.losses.prior import PriorRegularizationLoss


def test_terms_match_hand_computation() -> None:
    logits = torch.randn(2, 3, 4, 16, dtype=torch.float64)
    p = logits.softmax(-1).reshape(-1, 16)
    p_bar = p.mean(0)
    kl_bar = float((p_bar * (p_bar * 16).log()).sum())  # KL(p_bar || U)
    mean_h = float(-(p * p.log()).sum(-1).mean())
    out = PriorRegularizationLoss(prior_weight=0.03, entropy_weight=1.0)(logits)
    assert math.isclose(float(out.prior), kl_bar, rel_tol=1e-5)
    assert math.isclose(float(out.entropy), mean_h, rel_tol=1e-5)
    assert math.isclose(float(out.loss), 0.03 * kl_bar + mean_h, rel_tol=1e-5)
    # eq. 4 form: w_q KL(p_bar||U) - w_e mean KL(p_i||U) = loss - w_e log K
    eq4 = 0.03 * kl_bar - float(((p * (p * 16).log()).sum(-1)).mean())
    assert math.isclose(float(out.loss) - math.log(16), eq4, rel_tol=1e-5, abs_tol=1e-9)
    assert math.isclose(
        float(out.perplexity), math.exp(-float((p_bar * p_bar.log()).sum())), rel_tol=1e-5
    )


def test_extremes() -> None:
    k = 8
    uniform_usage_sharp = torch.eye(k) * 50.0  # each token one-hot on a different code
    out = PriorRegularizationLoss()(uniform_usage_sharp)
    assert float(out.prior) < 1e-6 and float(out.entropy) < 1e-6
    collapsed = torch.zeros(5, k)
    collapsed[:, 0] = 50.0  # every token on code 0
    out = PriorRegularizationLoss()(collapsed)
    assert math.isclose(float(out.prior), math.log(k), rel_tol=1e-4)
    out = PriorRegularizationLoss()(torch.zeros(5, k))  # uniform tokens
    assert math.isclose(float(out.entropy), math.log(k), rel_tol=1e-6) and float(out.prior) < 1e-6


def test_gradients_push_usage_apart_and_tokens_sharp() -> None:
    logits = torch.zeros(4, 6, requires_grad=True)
    with torch.no_grad():
        logits[:, 0] = 1.0  # all tokens lean to code 0
    PriorRegularizationLoss(prior_weight=1.0, entropy_weight=0.0)(logits).loss.backward()
    assert bool((logits.grad[:, 0] > 0).all())  # descending lowers code 0
    logits.grad = None
    PriorRegularizationLoss(prior_weight=0.0, entropy_weight=1.0)(logits).loss.backward()
    assert bool((logits.grad[:, 0] < 0).all())  # sharpening raises the leading code


def test_ddp_uses_global_mean_with_local_gradient(monkeypatch) -> None:
    other = torch.tensor([0.7, 0.1, 0.1, 0.1])  # the other rank's p_bar

    monkeypatch.setattr(prior_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(prior_module.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(prior_module.dist, "all_reduce", lambda t: t.add_(other))
    logits = torch.randn(3, 4, requires_grad=True)
    local = logits.softmax(-1).mean(0)
    p_bar = prior_module.global_mean_distribution(local)
    torch.testing.assert_close(p_bar, (local + other) / 2)
    p_bar.sum().backward()
    logits2 = logits.detach().clone().requires_grad_(True)
    logits2.softmax(-1).mean(0).sum().backward()
    torch.testing.assert_close(logits.grad, logits2.grad)  # gradient of the local share, weight 1
