"""KoLeo regulariser: spread the embeddings of a batch uniformly over the sphere.

The Kozachenko-Leonenko differential-entropy estimator used as a loss (Sablayrolles et al.,
"Spreading vectors for similarity search", ICLR 2019, sec. 3.3; DINOv2, Oquab et al. 2023,
sec. 3 "KoLeo regularizer", weight 0.1 on the student's backbone [CLS] of each global crop):

    z_i   = x_i / ||x_i||
    rho_i = min_{j != i} ||z_i - z_j||          (nearest neighbour by the largest dot product)
    L     = -1/n sum_i log(rho_i + eps),  eps = 1e-8

Computed per rank (as DINOv2), in float32 outside autocast. The neighbour search carries no
gradient; the distance to the chosen neighbour does, so each point is pushed from its nearest one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medmim.registry import LOSSES


@LOSSES.register("koleo")
class KoLeoLoss(nn.Module):
    """-mean log distance of each L2-normalised row to its nearest other row (module docstring).

    Args:
        eps: added to the distance inside the log (1e-8) and used by the L2 normalisation.

    Example:
        >>> loss = KoLeoLoss()
        >>> loss(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # -log(sqrt(2))
        tensor(-0.3466)
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        """X (n, C) embeddings -> scalar loss; 0 (still attached to `x`) when n < 2."""
        if x.dim() != 2:
            raise ValueError(f"KoLeoLoss wants (n, C) embeddings, got shape {tuple(x.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = F.normalize(x.float(), dim=-1, eps=self.eps)
            if len(z) < 2:
                return z.sum() * 0.0  # no neighbour: no term, but keep the graph for DDP
            with torch.no_grad():
                dots = z @ z.T
                dots.fill_diagonal_(-2.0)  # below any cosine: a row is never its own neighbour
                nearest = dots.argmax(dim=1)
            dist = torch.linalg.vector_norm(z - z[nearest], dim=-1)
            return -(dist + self.eps).log().mean()
