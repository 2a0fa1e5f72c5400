"""Sinkhorn-Knopp teacher targets, the alternative to centring (SwAV; DINOv2's teacher).

Instead of softmax((t - c) / tau_t), the teacher's R rows (samples or tokens) over K prototypes
are turned into a transport plan with equal prototype marginals (SwAV, Caron et al. 2020, eq. 3
and its appendix A.1; DINOv2, Oquab et al. 2023, sec. 3 "Sinkhorn-Knopp centering"):

    Q = exp(t / tau_t)                        (R, K)
    repeat n times (n = 3):
        Q[:, k] <- Q[:, k] / (K sum_r Q[r, k])   each prototype gets mass 1/K
        Q[r, :] <- Q[r, :] / (R sum_k Q[r, k])   each row gets mass 1/R
    P = R Q                                   each row sums to 1, each prototype to ~R/K

Under torch.distributed the prototype sums and R run over every rank (all-reduced), the row sums
are local. Computed in the log domain (log Q = t / tau_t + row and column offsets, sums by
logsumexp), so neither can exp(t / tau_t) overflow at tau_t = 0.04 nor can a whole row underflow
to 0; a prototype's global logsumexp takes two all-reduces (its maximum, then its sum of
exponentials). DINOv2's initial division by the total sum of Q is left out: the first prototype
normalisation cancels it.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor


def _distributed() -> bool:
    """Whether torch.distributed runs (then sums and maxima are all-reduced)."""
    return dist.is_available() and dist.is_initialized()


@torch.no_grad()
def sinkhorn_knopp(logits: Tensor, temp: float, iterations: int = 3) -> Tensor:
    """Sinkhorn-Knopp targets of teacher logits (module docstring), float32, no gradient.

    Args:
        logits: (R, K) teacher logits, one row per sample (or masked token); R may be 0 on a rank.
        temp: tau_t.
        iterations: prototype/row normalisation rounds (3, DINOv2).

    Returns:
        (R, K) targets; each row sums to 1 and each prototype column to about R_total / K
        (exactly, in the limit of many iterations).

    Example:
        >>> p = sinkhorn_knopp(torch.randn(6, 3), temp=1.0, iterations=100)
        >>> p.sum(1).allclose(torch.ones(6)), p.sum(0).allclose(torch.full((3,), 2.0), atol=1e-3)
        (True, True)
    """
    log_q = logits.float() / temp
    count = log_q.new_tensor([float(len(log_q))])
    if _distributed():
        dist.all_reduce(count)
    log_rows, log_protos = count.log(), math.log(log_q.shape[-1])
    for _ in range(iterations):
        log_q = log_q - (_global_logsumexp(log_q) + log_protos)  # each prototype: mass 1/K
        log_q = log_q - (log_q.logsumexp(dim=1, keepdim=True) + log_rows)  # each row: mass 1/R
    return (log_q + log_rows).exp()


def _global_logsumexp(log_q: Tensor) -> Tensor:
    """Log sum_r exp(log_q[r, k]) over the rows of every rank: (R, K) -> (1, K)."""
    if len(log_q):
        top = log_q.amax(dim=0, keepdim=True)
    else:
        top = log_q.new_full((1, log_q.shape[-1]), float("-inf"))
    if _distributed():
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    top = top.clamp_min(torch.finfo(log_q.dtype).min)  # -inf only where no rank has rows
    total = (log_q - top).exp().sum(dim=0, keepdim=True)
    if _distributed():
        dist.all_reduce(total)
    return top + total.log()
