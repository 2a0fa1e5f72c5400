"""Patch discriminator of PUMIT's tokenizer training (public code `SimplePatchDiscriminator`).

All layers are SAC convs, so the discriminator, like the tokenizer, runs on any spacing: per
level a 3x3x3 stride-2 conv -> GroupNorm -> LeakyReLU(0.01) (1x3x3 with depth stride 1 while the
map is still anisotropic), then `num_post_convs` 3x3x3 stride-1 blocks and a 3x3x3 conv to one
logit per patch.

Example:
    >>> import torch
    >>> from medmim.layers.sac import Anisotropy
    >>> disc = PatchDiscriminator(channels=(16, 32), num_groups=8)
    >>> disc(torch.randn(2, 1, 8, 32, 32), Anisotropy(da=1)).shape
    torch.Size([2, 1, 4, 8, 8])
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from medmim.layers.sac import Anisotropy, SACConv3d, SACSequential


class PatchDiscriminator(nn.Module):
    """Hinge-GAN patch discriminator built from SAC convs.

    Args:
        in_channels: image channels.
        channels: widths of the stride-2 levels (paper 128, 256, 512).
        num_post_convs: stride-1 conv blocks after the last level (1).
        num_groups: GroupNorm groups (16).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (128, 256, 512),
        num_post_convs: int = 1,
        num_groups: int = 16,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in channels:
            layers += [
                SACConv3d(cin, cout, 3, 2, 1),
                nn.GroupNorm(num_groups, cout),
                nn.LeakyReLU(0.01),
            ]
            cin = cout
        for _ in range(num_post_convs):
            layers += [
                SACConv3d(cin, cin, 3, 1, 1),
                nn.GroupNorm(num_groups, cin),
                nn.LeakyReLU(0.01),
            ]
        layers.append(SACConv3d(cin, 1, 3, 1, 1))
        self.net = SACSequential(*layers)

    def forward(self, x: Tensor, aniso: Anisotropy) -> Tensor:
        """(B, C, D, H, W) in [-1, 1] -> patch logits (B, 1, d, h, w)."""
        logits, _ = self.net(x, Anisotropy(da=aniso.da))
        return logits
