"""Teacher health statistics: the O(nK) pairwise cosine, and what DistillationLoss records."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medmim.losses.distill import DistillationLoss
from medmim.losses.teacher_stats import mean_pairwise_cosine, teacher_health

K = 8


def test_pairwise_cosine_matches_the_gram_matrix() -> None:
    x = torch.randn(7, K)
    z = F.normalize(x, dim=-1)
    gram = z @ z.T
    want = (gram.sum() - gram.diagonal().sum()) / (7 * 6)
    assert float(mean_pairwise_cosine(x)) == pytest.approx(float(want), abs=1e-6)
    assert mean_pairwise_cosine(x[:1]) is None


def test_identical_rows_give_one_and_orthogonal_rows_zero() -> None:
    same = torch.randn(1, K).expand(5, K) * torch.arange(1.0, 6.0)[:, None]  # scale is ignored
    assert float(teacher_health([same, same], paired=True)["cos_batch"]) == pytest.approx(1.0)
    eye = torch.eye(K)[:4] * 3.0
    stats = teacher_health([eye, eye], paired=True)
    assert float(stats["cos_batch"]) == pytest.approx(0.0, abs=1e-6)
    assert float(stats["cos_views"]) == pytest.approx(1.0)  # the same sample in both views
    flipped = teacher_health([eye, -eye], paired=True)
    assert float(flipped["cos_views"]) == pytest.approx(-1.0)


def test_patch_outputs_are_averaged_over_tokens_per_sample() -> None:
    t = torch.randn(3, 10, K)
    stats = teacher_health([t], paired=False)
    assert "cos_views" not in stats
    assert float(stats["cos_batch"]) == pytest.approx(
        float(mean_pairwise_cosine(t.mean(1))), abs=1e-6
    )


def test_distillation_loss_records_ce_and_cosines() -> None:
    loss = DistillationLoss(out_dim=K)
    collapsed = torch.randn(1, K).expand(4, K)
    s = [torch.randn(4, K), torch.randn(4, K)]
    out = loss.global_loss(s, [collapsed, collapsed + 0.0], step=0)
    assert torch.equal(loss.stats["ce"], out.detach())
    assert float(loss.stats["cos_batch"]) == pytest.approx(1.0)
    assert float(loss.stats["cos_views"]) == pytest.approx(1.0)
    out = loss.patch_loss([torch.randn(2, 3, K)], [torch.randn(2, 3, K)], [torch.ones(2, 3)], 0)
    assert torch.equal(loss.stats["ce"], out.detach()) and set(loss.stats) == {"ce", "cos_batch"}
    loss.global_loss([torch.randn(1, K)] * 2, [torch.randn(1, K)] * 2, 0)  # B = 1: no pair
    assert set(loss.stats) == {"ce", "cos_views"}
