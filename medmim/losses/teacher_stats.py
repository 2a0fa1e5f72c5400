"""Collapse statistics of a self-distillation teacher, for a trainer's health check.

Two cosines over the teacher's head outputs (logits before centring or Sinkhorn-Knopp), after a
per-sample mean over tokens for patch outputs:

- `mean_pairwise_cosine`: between DIFFERENT samples of one view. Near 1 the teacher maps every
  input to the same output (collapse: its targets cannot tell inputs apart).
- `mean_paired_cosine`: between two views of the SAME sample. A teacher that learns something
  gives views of one sample closer outputs than two samples: cos_views clearly above cos_batch.

Both are cheap: the mean off-diagonal cosine of n unit rows z_i is
(||sum_i z_i||^2 - sum_i ||z_i||^2) / (n (n - 1)), O(n K) instead of an n x n Gram matrix.
Per rank, no gradient, float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def per_sample(output: Tensor) -> Tensor:
    """(B, K) global or (B, N, K) patch logits -> (B, K) float32 (mean over the tokens)."""
    return (
        output.detach()
        .reshape(output.shape[0], -1, output.shape[-1])
        .mean(dim=1, dtype=torch.float32)
    )


@torch.no_grad()
def mean_pairwise_cosine(x: Tensor) -> Tensor | None:
    """Mean cosine similarity over the ordered pairs (i, j), i != j, of the rows of x (n, K).

    Returns:
        A 0-d float32 tensor, or None when n < 2 (no pair).
    """
    if len(x) < 2:
        return None
    z = F.normalize(x.float(), dim=-1)
    total = z.sum(dim=0)
    n = len(z)
    return (total.dot(total) - z.pow(2).sum()) / (n * (n - 1))


@torch.no_grad()
def mean_paired_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Mean over i of cos(a_i, b_i): a, b (n, K) -> 0-d float32 tensor."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1).mean()


@torch.no_grad()
def teacher_health(teacher: Sequence[Tensor], paired: bool) -> dict[str, Tensor]:
    """`cos_batch` (views averaged; absent when B < 2) and, if `paired`, `cos_views` (views 1, 2).

    Args:
        teacher: per view, (B, K) or (B, N, K) teacher logits.
        paired: whether the views are views of the same samples to compare (global families).
    """
    rows = [per_sample(t) for t in teacher]
    stats: dict[str, Tensor] = {}
    cos = [c for c in map(mean_pairwise_cosine, rows) if c is not None]
    if cos:
        stats["cos_batch"] = torch.stack(cos).mean()
    if paired and len(rows) >= 2:
        stats["cos_views"] = mean_paired_cosine(rows[0], rows[1])
    return stats
