"""Masked L1 reconstruction loss over masked voxels only (SMIT eq. 1 MIP, SMART eq. 6 AMIP).

    L = sum(|x - x_hat| * m) / (sum(m) + eps)

with m the voxel mask (1 = masked), broadcast to the image: the mean absolute error over the
masked voxels (and channels). Unmasked voxels do not change the loss. With one channel this is
exactly the public SMIT code's formula (eps = 1e-5).
"""

from __future__ import annotations

from torch import Tensor, nn

from medmim.registry import LOSSES


@LOSSES.register("masked_l1")
class MaskedL1Loss(nn.Module):
    """Mean absolute error over masked voxels.

    Args:
        eps: added to the mask count (1e-5), so an empty mask gives 0 instead of NaN.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 1, 32, 32, 32)
        >>> m = torch.zeros(2, 1, 32, 32, 32, dtype=torch.bool); m[:, :, :16] = True
        >>> float(MaskedL1Loss()(x, x, m))
        0.0
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            pred: (B, C, D, H, W) reconstruction x_hat.
            target: (B, C, D, H, W) input x.
            mask: voxel mask broadcastable to `pred`, e.g. (B, 1, D, H, W) bool or float
                (`medmim.masking.utils.mask_to_voxels`).

        Returns:
            Scalar loss in float32.
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        try:
            m = mask.float().expand_as(pred)
        except RuntimeError as err:
            raise ValueError(
                f"mask {tuple(mask.shape)} does not broadcast to the image {tuple(pred.shape)}; "
                "upsample it with medmim.masking.utils.mask_to_voxels"
            ) from err
        diff = (pred.float() - target.float()).abs()
        return (diff * m).sum() / (m.sum() + self.eps)
