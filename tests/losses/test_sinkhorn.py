"""Sinkhorn-Knopp teacher targets: the normalisation, a hand-computed case, the DDP reduction and
the `centering="sinkhorn"` switch of DistillationLoss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medmim.errors import ConfigError
from medmim.losses import sinkhorn
from medmim.losses.distill import DistillationLoss
from medmim.losses.sinkhorn import sinkhorn_knopp


def reference(logits: np.ndarray, temp: float, iterations: int) -> np.ndarray:
    """DINOv2's recipe written out in numpy on the (K, B) matrix: total, then prototypes (rows),
    then samples (columns), times B."""
    q = np.exp(logits.T / temp)  # (K, B)
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(axis=1, keepdims=True) / k
        q = q / q.sum(axis=0, keepdims=True) / b
    return (q * b).T


def test_hand_computed_symmetric_2x2_is_the_softmax() -> None:
    # exp(t / 1) = [[e, 1], [1, e]]: rows and columns already balanced, so P = softmax per row
    p = sinkhorn_knopp(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), temp=1.0)
    e = math.e
    assert torch.allclose(p, torch.tensor([[e / (e + 1), 1 / (e + 1)], [1 / (e + 1), e / (e + 1)]]))


def test_hand_computed_3x2_one_round() -> None:
    # 3 samples, 2 prototypes, tau = 1, one round. Q = exp(t) = [[1, 1], [e, 1], [1, e]];
    # prototype sums (e + 2, e + 2) -> Q / (2 (e + 2)); row sums (2, e + 1, e + 1) / (2 (e + 2)),
    # so P = 3 Q / (3 row sum) = each row divided by its own sum.
    t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    e = math.e
    want = torch.tensor([[0.5, 0.5], [e / (e + 1), 1 / (e + 1)], [1 / (e + 1), e / (e + 1)]])
    assert torch.allclose(sinkhorn_knopp(t, temp=1.0, iterations=1), want)
    assert torch.allclose(sinkhorn_knopp(t, temp=1.0), want)  # balanced: more rounds change nothing


def test_unbalanced_3x2_matches_the_numpy_recipe_with_exact_row_sums() -> None:
    t = np.array([[2.0, 0.0], [1.5, 0.2], [0.1, 0.3]], dtype=np.float64)
    for iterations in (1, 3):
        got = sinkhorn_knopp(torch.tensor(t, dtype=torch.float32), temp=0.5, iterations=iterations)
        assert np.allclose(got.numpy(), reference(t, 0.5, iterations), atol=1e-6)
        assert torch.allclose(got.sum(1), torch.ones(3))  # each sample's target is a distribution
    # the prototype marginals are pulled to B / K = 1.5 (exact in the limit)
    col3 = sinkhorn_knopp(torch.tensor(t, dtype=torch.float32), 0.5).sum(0)
    col1 = sinkhorn_knopp(torch.tensor(t, dtype=torch.float32), 0.5, iterations=1).sum(0)
    assert (col3 - 1.5).abs().max() < (col1 - 1.5).abs().max()
    many = sinkhorn_knopp(torch.tensor(t, dtype=torch.float32), 0.5, iterations=500)
    assert torch.allclose(many.sum(0), torch.full((2,), 1.5), atol=1e-4)


def test_sharp_temperature_does_not_overflow_and_a_prototype_shift_cancels() -> None:
    torch.manual_seed(0)
    t = torch.randn(16, 8) * 5.0
    p = sinkhorn_knopp(t, temp=0.04)  # exp(t / 0.04) alone overflows float32
    assert torch.isfinite(p).all() and torch.allclose(p.sum(1), torch.ones(16))
    shifted = t + torch.randn(1, 8)  # a constant per prototype cancels
    assert torch.allclose(sinkhorn_knopp(shifted, 1.0), sinkhorn_knopp(t, 1.0), atol=1e-5)
    big = torch.randn(64, 4)
    assert np.allclose(
        sinkhorn_knopp(big, 0.3).numpy(), reference(big.double().numpy(), 0.3, 3), atol=1e-5
    )


def test_sums_are_all_reduced_under_ddp(monkeypatch) -> None:
    """A second rank holding the same rows: the result is the 2R-row one, restricted to ours."""

    def fake_all_reduce(tensor: torch.Tensor, op=None) -> None:
        if op is None:  # SUM
            tensor.mul_(2.0)

    monkeypatch.setattr(sinkhorn, "_distributed", lambda: True)
    monkeypatch.setattr(sinkhorn.dist, "all_reduce", fake_all_reduce)
    t = torch.randn(5, 3)
    got = sinkhorn_knopp(t, temp=0.5)
    monkeypatch.setattr(sinkhorn, "_distributed", lambda: False)
    assert torch.allclose(got, sinkhorn_knopp(torch.cat([t, t]), temp=0.5)[:5], atol=1e-6)


def test_sinkhorn_centering_in_the_losses() -> None:
    loss = DistillationLoss(out_dim=4, warmup_steps=100, centering="sinkhorn")  # tau_t 0.04
    s = [torch.randn(3, 4), torch.randn(3, 4)]
    t = [torch.randn(3, 4), torch.randn(3, 4)]
    got = loss.global_loss(s, t, step=0)
    p = [sinkhorn_knopp(x, 0.04) for x in t]

    def ce(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -(target * F.log_softmax(student / 0.1, -1)).sum(-1).mean()

    assert torch.allclose(got, (ce(s[1], p[0]) + ce(s[0], p[1])) / 2, atol=1e-5)
    assert torch.equal(loss.center, torch.zeros(1, 4))  # the centre is not used, not updated
    entropy = -(p[1] * p[1].clamp_min(1e-12).log()).sum(-1).mean() / math.log(4)
    assert float(loss.teacher_entropy) == pytest.approx(float(entropy), abs=1e-6)


def test_sinkhorn_patch_targets_come_from_the_masked_tokens_only() -> None:
    loss = DistillationLoss(out_dim=4, centering="sinkhorn")  # tau_t 0.07
    s, t = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    m = torch.tensor([[1, 1, 0, 0, 0], [0, 1, 0, 1, 1]], dtype=torch.bool)
    got = loss.patch_loss([s], [t], [m], step=0)
    p = sinkhorn_knopp(t[m], 0.07)  # 5 masked tokens of the view
    ce = -(p * F.log_softmax(s[m] / 0.1, -1)).sum(-1)
    assert torch.allclose(got, (ce[:2].mean() + ce[2:].mean()) / 2, atol=1e-5)
    t2 = t.clone()
    t2[~m] += 3.0  # unmasked teacher tokens do not matter
    assert torch.allclose(loss.patch_loss([s], [t2], [m], step=0), got)
    assert torch.equal(loss.center, torch.zeros(1, 4))


def test_bad_centering_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'sinkhorn'"):
        DistillationLoss(out_dim=4, centering="sinkhorne")
