"""Soft-token CE (PUMIT eq. 6): masked tokens only, CE = KL + H(q), parity with torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medmim.losses.soft_token import SoftTokenCrossEntropyLoss


def test_equals_torch_soft_label_cross_entropy_on_masked_tokens() -> None:
    logits = torch.randn(2, 6, 10)
    q = torch.randn(2, 6, 10).softmax(-1)
    mask = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 0, 0, 1, 1, 0]], dtype=torch.bool)
    out = SoftTokenCrossEntropyLoss()(logits, q, mask)
    ref = F.cross_entropy(logits[mask], q[mask])
    torch.testing.assert_close(out.loss, ref)
    changed = logits.clone()
    changed[~mask] = 100.0  # visible tokens do not count
    torch.testing.assert_close(SoftTokenCrossEntropyLoss()(changed, q, mask).loss, ref)


def test_ce_is_kl_plus_target_entropy_and_perfect_prediction() -> None:
    q = torch.randn(7, 5).softmax(-1)
    out = SoftTokenCrossEntropyLoss()(torch.randn(7, 5), q)
    h = -(q * q.log()).sum(-1).mean()
    torch.testing.assert_close(out.target_entropy, h)
    torch.testing.assert_close(out.loss.detach(), out.kl + out.target_entropy)
    perfect = SoftTokenCrossEntropyLoss()(q.log(), q)
    assert float(perfect.kl.abs()) < 1e-5 and float(perfect.accuracy) == 1.0


def test_errors() -> None:
    loss = SoftTokenCrossEntropyLoss()
    with pytest.raises(ValueError, match="no masked token"):
        loss(torch.randn(1, 3, 4), torch.rand(1, 3, 4), torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="differ"):
        loss(torch.randn(1, 3, 4), torch.rand(1, 3, 5))
