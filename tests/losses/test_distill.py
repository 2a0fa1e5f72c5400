import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medmim.losses import distill
from medmim.losses.distill import DistillationLoss
from medmim.registry import LOSSES

K = 16


def ce(
    student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, tt: float
) -> torch.Tensor:
    """Reference: -sum softmax((t - c)/tt) * log softmax(s / 0.1), per token."""
    return -(F.softmax((teacher - center) / tt, -1) * F.log_softmax(student / 0.1, -1)).sum(-1)


def test_center_is_a_1xK_buffer_in_the_state_dict() -> None:
    loss = LOSSES.build({"name": "distill", "out_dim": K})
    assert loss.center.shape == (1, K)
    assert "center" in loss.state_dict() and "center" in dict(loss.named_buffers())
    assert (torch.randn(3, 5, K) - loss.center).shape == (3, 5, K)  # broadcasts over patches


def test_teacher_temperature_schedule() -> None:
    # 30 epochs of 10 steps: np.linspace(0.04, 0.07, 30)[epoch] (DINO/iBOT/SMIT), then 0.07
    loss = DistillationLoss(out_dim=K, warmup_steps=300, steps_per_epoch=10)
    official = np.linspace(0.04, 0.07, 30)
    assert [loss.teacher_temp(10 * e + 9) for e in range(30)] == pytest.approx(
        official.tolist(), abs=1e-12
    )
    assert loss.teacher_temp(0) == 0.04 and loss.teacher_temp(290) == 0.07
    assert loss.teacher_temp(300) == 0.07 and loss.teacher_temp(10_000) == 0.07
    delayed = DistillationLoss(
        out_dim=K, warmup_steps=300, warmup_delay=300, steps_per_epoch=10
    )  # SMIT code, patches
    assert delayed.teacher_temp(299) == 0.04 and delayed.teacher_temp(300 + 145) == pytest.approx(
        official[14]
    )
    assert DistillationLoss(out_dim=K).teacher_temp(0) == 0.07  # no warm-up: final value at once


def test_global_loss_is_cross_view_and_matches_hand_computation() -> None:
    loss = DistillationLoss(out_dim=K, warmup_steps=100)  # tau_t = 0.04 at step 0
    s = [torch.randn(4, K), torch.randn(4, K)]
    t = [torch.randn(4, K), torch.randn(4, K)]
    got = loss.global_loss(s, t, step=0)
    zero = torch.zeros(1, K)
    want = (ce(s[1], t[0], zero, 0.04).mean() + ce(s[0], t[1], zero, 0.04).mean()) / 2
    assert torch.allclose(got, want, atol=1e-5)
    same_view = (ce(s[0], t[0], zero, 0.04).mean() + ce(s[1], t[1], zero, 0.04).mean()) / 2
    assert not torch.allclose(got, same_view)


def test_center_update_value() -> None:
    loss = DistillationLoss(out_dim=K, warmup_steps=100)
    t = [torch.randn(4, K), torch.randn(4, K)]
    loss.global_loss([torch.randn(4, K)] * 2, t, step=0)
    first = 0.1 * torch.cat(t).mean(0, keepdim=True)
    assert torch.allclose(loss.center, first, atol=1e-5)
    t2 = [torch.randn(4, K), torch.randn(4, K)]
    loss.global_loss([torch.randn(4, K)] * 2, t2, step=1)
    assert torch.allclose(
        loss.center, 0.9 * first + 0.1 * torch.cat(t2).mean(0, keepdim=True), atol=1e-5
    )
    # the new center is used from the next call on
    s = [torch.randn(4, K), torch.randn(4, K)]
    want = (
        ce(s[1], t2[0], loss.center, 0.04).mean() + ce(s[0], t2[1], loss.center, 0.04).mean()
    ) / 2
    assert torch.allclose(loss.global_loss(s, t2, step=0, update_center=False), want, atol=1e-5)


def test_patch_loss_averages_over_masked_tokens_only() -> None:
    loss = DistillationLoss(out_dim=K, warmup_steps=100)
    s = [torch.randn(2, 8, K), torch.randn(2, 8, K)]
    t = [torch.randn(2, 8, K), torch.randn(2, 8, K)]
    m = [torch.zeros(2, 2, 2, 2, dtype=torch.bool) for _ in range(2)]  # grid-shaped masks
    m[0][0, 0, 0, :] = True  # sample 0 of view 0: tokens 0, 1
    m[0][1, 1, 1, 1] = True  # sample 1 of view 0: token 7
    m[1][0] = True  # view 1: sample 0 all tokens, sample 1 none
    got = loss.patch_loss(s, t, m, step=0, update_center=False)
    zero = torch.zeros(1, K)
    c0, c1 = ce(s[0], t[0], zero, 0.04), ce(s[1], t[1], zero, 0.04)
    view0 = (c0[0, :2].mean() + c0[1, 7]) / 2
    view1 = (c1[0].mean() + 0.0) / 2  # a sample with no masked token contributes 0
    assert torch.allclose(got, (view0 + view1) / 2, atol=1e-5)
    s_changed = [x.clone() for x in s]
    s_changed[0][0, 3] += 5.0  # an unmasked token
    s_changed[1][1] += 5.0  # a sample without masked tokens
    assert torch.allclose(loss.patch_loss(s_changed, t, m, step=0, update_center=False), got)


def test_patch_center_is_token_then_batch_mean() -> None:
    loss = DistillationLoss(out_dim=K)
    t = [torch.randn(2, 8, K), torch.randn(2, 8, K)]
    masks = [torch.ones(2, 8, dtype=torch.bool)] * 2
    loss.patch_loss([torch.randn(2, 8, K)] * 2, t, masks, step=0)
    assert torch.allclose(loss.center, 0.1 * torch.cat(t).mean((0, 1))[None], atol=1e-5)


def test_center_is_all_reduced_under_ddp(monkeypatch) -> None:
    other_rank = torch.randn(3, K)  # what a second rank's teacher produced

    def fake_all_reduce(tensor: torch.Tensor) -> None:
        tensor += torch.cat([other_rank.sum(0, keepdim=True), torch.full((1, 1), 3.0)], dim=1)

    monkeypatch.setattr(distill.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distill.dist, "all_reduce", fake_all_reduce)
    loss = DistillationLoss(out_dim=K)
    t = [torch.randn(2, K), torch.randn(2, K)]
    loss.update_center(t)
    assert torch.allclose(
        loss.center, 0.1 * torch.cat([*t, other_rank]).mean(0, keepdim=True), atol=1e-5
    )


def test_gradients_reach_the_student_only_and_bf16_works() -> None:
    loss = DistillationLoss(out_dim=K)
    s = [torch.randn(2, K, requires_grad=True), torch.randn(2, K, requires_grad=True)]
    t = [torch.randn(2, K, requires_grad=True), torch.randn(2, K, requires_grad=True)]
    loss.global_loss(s, t, step=0).backward()
    assert all(x.grad is not None for x in s) and all(x.grad is None for x in t)
    out = loss.global_loss(
        [x.detach().bfloat16() for x in s], [x.detach().bfloat16() for x in t], 0
    )
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_bad_input() -> None:
    loss = DistillationLoss(out_dim=K)
    with pytest.raises(TypeError, match="list of tensors"):
        loss.global_loss(torch.randn(2, K), torch.randn(2, K), 0)
    with pytest.raises(ValueError, match=">= 2"):
        loss.global_loss([torch.randn(2, K)], [torch.randn(2, K)], 0)
    with pytest.raises(ValueError, match="does not match patch tokens"):
        loss.patch_loss([torch.randn(2, 8, K)], [torch.randn(2, 8, K)], [torch.ones(2, 9)], 0)


def test_teacher_entropy_is_one_for_uniform_targets_and_low_for_sharp_ones() -> None:
    loss = DistillationLoss(out_dim=64, warmup_teacher_temp=0.04, teacher_temp=0.04)
    assert loss.teacher_entropy is None
    loss.teacher_probs(torch.zeros(8, 64), step=0)  # identical logits: uniform
    assert float(loss.teacher_entropy) == pytest.approx(1.0, abs=1e-6)
    sharp = torch.zeros(8, 64)
    sharp[torch.arange(8), torch.arange(8)] = 1.0  # cos 1 vs 0, / 0.04: near one-hot
    loss.teacher_probs(sharp, step=0)
    assert float(loss.teacher_entropy) < 0.05
    # patch logits (B, N, K) are sampled, not all kept
    loss.teacher_probs(torch.zeros(4, 600, 64), step=0)
    assert float(loss.teacher_entropy) == pytest.approx(1.0, abs=1e-6)


def test_multi_crop_pairs_every_student_view_with_every_other_teacher_view() -> None:
    loss = DistillationLoss(out_dim=K, warmup_steps=100)  # tau_t = 0.04 at step 0
    t = [torch.randn(3, K), torch.randn(3, K)]  # the two global views
    s = [torch.randn(3, K) for _ in range(4)]  # the same two global views, then 2 local crops
    got = loss.global_loss(s, t, step=0)
    zero = torch.zeros(1, K)
    pairs = [(q, v) for q in range(2) for v in range(4) if v != q]
    assert len(pairs) == 2 * 3
    want = sum(ce(s[v], t[q], zero, 0.04).mean() for q, v in pairs) / len(pairs)
    assert torch.allclose(got, want, atol=1e-5)
    # the centre follows the teacher's (global) views only
    assert torch.allclose(loss.center, 0.1 * torch.cat(t).mean(0, keepdim=True), atol=1e-5)
    with pytest.raises(ValueError, match="student views"):
        loss.global_loss(s[:1], t, step=0)
    with pytest.raises(ValueError, match="shapes differ"):
        loss.global_loss([*s, torch.randn(2, K)], t, step=0)
    with pytest.raises(ValueError, match="same number|as many"):
        loss.patch_loss(
            [torch.randn(2, 8, K)] * 3, [torch.randn(2, 8, K)] * 2, [torch.ones(2, 8)] * 3, 0
        )
