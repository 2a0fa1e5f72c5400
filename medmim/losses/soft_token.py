"""Soft-token MIM cross-entropy (PUMIT eq. 6).

For every masked position i the ViT predicts logits y_i over the K codebook entries and the
frozen tokenizer gives the soft token q_i = softmax(l_i) (no temperature). The loss is

    L_MIM = 1/|M| sum_{i in M} -sum_k q_ik log softmax(y_i)_k,

averaged over all masked tokens of the batch. Since CE(q, p) = KL(q || p) + H(q), the KL (which
is 0 at a perfect prediction) and the targets' entropy are returned for logging too.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from medmim.registry import LOSSES


class SoftTokenCE(NamedTuple):
    """Soft-token cross-entropy and its parts (0-d tensors; only `loss` carries a gradient).

    Attributes:
        loss: mean cross-entropy over masked tokens.
        kl: mean KL(q || softmax(y)) over masked tokens.
        target_entropy: mean H(q) over masked tokens.
        accuracy: fraction of masked tokens where argmax y == argmax q.
    """

    loss: Tensor
    kl: Tensor
    target_entropy: Tensor
    accuracy: Tensor


@LOSSES.register("soft_token_ce")
class SoftTokenCrossEntropyLoss(nn.Module):
    """Cross-entropy of predicted token logits against soft token targets on masked tokens."""

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> SoftTokenCE:
        """Compute eq. 6.

        Args:
            logits: (B, N, K) predictions, or (M, K) already gathered at masked positions.
            targets: (B, N, K) or (M, K) soft tokens (rows sum to 1), no gradient needed.
            mask: (B, N) bool, True = masked (the positions that count); None = all rows count.

        Returns:
            `SoftTokenCE`.

        Raises:
            ValueError: on shape mismatch or when no token is masked.
        """
        if logits.shape != targets.shape:
            raise ValueError(
                f"soft-token CE: logits {tuple(logits.shape)} "
                f"and targets {tuple(targets.shape)} differ"
            )
        if mask is not None:
            if tuple(mask.shape) != tuple(logits.shape[:-1]):
                raise ValueError(
                    f"soft-token CE: mask {tuple(mask.shape)} does not match logits "
                    f"{tuple(logits.shape[:-1])}"
                )
            logits, targets = logits[mask], targets[mask]
        logits, targets = (
            logits.reshape(-1, logits.shape[-1]).float(),
            targets.reshape(-1, targets.shape[-1]).float(),
        )
        if logits.shape[0] == 0:
            raise ValueError(
                "soft-token CE: no masked token in the batch (mask ratio too low for the grid?)"
            )
        ce = -(targets * logits.log_softmax(dim=-1)).sum(dim=-1).mean()
        with torch.no_grad():
            h = -(torch.special.xlogy(targets, targets)).sum(dim=-1).mean()
            acc = (logits.argmax(dim=-1) == targets.argmax(dim=-1)).float().mean()
        return SoftTokenCE(ce, ce.detach() - h, h, acc)
