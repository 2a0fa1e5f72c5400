"""Extended prior distribution regularization of soft tokens (PUMIT eq. 2-4).

With token distributions p_i = softmax(l_i) over a codebook of K entries and their batch
average p_bar = mean_i p_i (the distribution of the token at a uniformly random position, eq. 3),
PUMIT minimises `w_q KL(p_bar || U) - w_e mean_i KL(p_i || U)` (eq. 4): the first term spreads
codebook usage (diversity), the second sharpens each token. Since KL(q || U) = log K - H(q), this is

    L = w_q * KL(p_bar || U) + w_e * mean_i H(p_i)  - w_e log K,

and we return the two non-negative terms `prior = KL(p_bar || U)` and `entropy = mean_i H(p_i)`
with `loss = w_q * prior + w_e * entropy` (eq. 4 up to the constant, same gradient). The public
code's `-H(p_bar)` differs from `prior` by the constant log K. Weights: the README's training
command uses w_q = 0.03, w_e = 1 (defaults here); the code's config file says 1.0 / 0.2.

Under DDP (torch.distributed initialised, world size > 1) p_bar is averaged over all ranks, with
the gradient flowing through the local rank's share only (as the code):
`p_bar = p_bar_global.detach() - p_bar_local.detach() + p_bar_local`. Computed in float32;
p_bar is clamped at 1e-12 inside the log (the code has no epsilon and can give NaN in fp16).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from medmim.registry import LOSSES


class PriorRegularization(NamedTuple):
    """Terms of the extended prior regularization (all 0-d tensors).

    Attributes:
        loss: w_q * prior + w_e * entropy.
        prior: KL(p_bar || U) in nats (0 = uniform codebook usage, log K = one code).
        entropy: mean_i H(p_i) in nats (0 = one-hot tokens, log K = uniform tokens).
        perplexity: exp(H(p_bar)), the effective number of codes in use (no gradient).
    """

    loss: Tensor
    prior: Tensor
    entropy: Tensor
    perplexity: Tensor


def global_mean_distribution(p_local: Tensor) -> Tensor:
    """Average a (K,) distribution over DDP ranks; the gradient flows through the local term."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return p_local
    total = p_local.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size() - p_local.detach() + p_local


@LOSSES.register("prior_regularization")
class PriorRegularizationLoss(nn.Module):
    """Extended prior distribution regularization (eq. 4) on token logits.

    Args:
        prior_weight: w_q on KL(p_bar || U) (README 0.03).
        entropy_weight: w_e on mean_i H(p_i) (README 1.0).
    """

    def __init__(self, prior_weight: float = 0.03, entropy_weight: float = 1.0) -> None:
        super().__init__()
        self.prior_weight, self.entropy_weight = float(prior_weight), float(entropy_weight)

    def forward(self, logits: Tensor) -> PriorRegularization:
        """Compute the terms.

        Args:
            logits: (..., K) token logits (any leading dims: batch, grid).

        Returns:
            `PriorRegularization` with the loss and its terms.
        """
        logits = logits.float().reshape(-1, logits.shape[-1])
        k = logits.shape[-1]
        log_p = logits.log_softmax(dim=-1)
        p = log_p.exp()
        entropy = -(p * log_p).sum(dim=-1).mean()
        p_bar = global_mean_distribution(p.mean(dim=0))
        neg_h_bar = (p_bar * p_bar.clamp_min(1e-12).log()).sum()
        prior = neg_h_bar + math.log(k)
        loss = self.prior_weight * prior + self.entropy_weight * entropy
        return PriorRegularization(loss, prior, entropy, torch.exp(-neg_h_bar.detach()))
