"""The (A)MIP head h^Pred: a one-layer linear decoder from the bottleneck to voxels.

SMIT eq. 1 / SMART eq. 6: "a 1-layer linear projection" with as many outputs per bottleneck cell
as voxels it covers. Concretely (as in the public SMIT code): Conv3d(C -> C_out * s^3, kernel 1)
on the bottleneck (B, C, d, h, w), then a 3D pixel shuffle by s to (B, C_out, d s, h s, w s), no
activation. s = input size / bottleneck size per axis: 32 for the Swin stage-4 map (96^3 -> 3^3),
16 for a ViT with 16^3 patches. Non-cubic scales are allowed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from medmim.errors import ConfigError
from medmim.registry import HEADS


def pixel_shuffle_3d(x: Tensor, scale: Sequence[int]) -> Tensor:
    """Rearrange channels into space: (B, C s1 s2 s3, d, h, w) -> (B, C, d s1, h s2, w s3).

    The channel axis is read as (C, s1, s2, s3), row-major (einops:
    'b (c s1 s2 s3) d h w -> b c (d s1) (h s2) (w s3)'), the 3D form of `nn.PixelShuffle`.
    """
    s1, s2, s3 = (int(s) for s in scale)
    b, ch, d, h, w = x.shape
    c = ch // (s1 * s2 * s3)
    if c * s1 * s2 * s3 != ch:
        raise ValueError(f"{ch} channels do not split into C * {s1}*{s2}*{s3}")
    x = x.reshape(b, c, s1, s2, s3, d, h, w)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, d * s1, h * s2, w * s3)


@HEADS.register("mip")
class MIPHead(nn.Module):
    """Linear voxel decoder: 1x1x1 conv + 3D pixel shuffle (SMIT/SMART MIP and AMIP).

    Args:
        in_channels: bottleneck channels C.
        out_channels: image channels C_out.
        scale: s, voxels per bottleneck cell along each axis (one int or (s1, s2, s3)).

    Example:
        >>> import torch
        >>> head = MIPHead(in_channels=768, out_channels=1, scale=32)
        >>> head(torch.randn(2, 768, 3, 3, 2)).shape
        torch.Size([2, 1, 96, 96, 64])
    """

    def __init__(
        self, in_channels: int, out_channels: int = 1, scale: int | Sequence[int] = 32
    ) -> None:
        super().__init__()
        self.scale = (int(scale),) * 3 if isinstance(scale, int) else tuple(int(s) for s in scale)
        if len(self.scale) != 3 or any(s < 1 for s in self.scale):
            raise ConfigError(
                f"head option 'scale' must be one or three positive ints, got {scale}"
            )
        self.out_channels = int(out_channels)
        self.proj = nn.Conv3d(in_channels, self.out_channels * math.prod(self.scale), kernel_size=1)

    @staticmethod
    def scale_for(
        input_shape: Sequence[int], bottleneck_shape: Sequence[int]
    ) -> tuple[int, int, int]:
        """S per axis for an input (D, H, W) and a bottleneck (d, h, w); each must
        divide exactly.
        """
        if any(int(i) % int(b) for i, b in zip(input_shape, bottleneck_shape)):
            raise ValueError(
                f"input {tuple(input_shape)} is not a multiple of the bottleneck "
                f"{tuple(bottleneck_shape)}"
            )
        return tuple(int(i) // int(b) for i, b in zip(input_shape, bottleneck_shape))  # type: ignore[return-value]

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct voxels.

        Args:
            x: (B, C, d, h, w) bottleneck.

        Returns:
            (B, C_out, d s1, h s2, w s3) reconstruction, no activation.
        """
        return pixel_shuffle_3d(self.proj(x), self.scale)
