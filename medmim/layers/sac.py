"""Spatially adaptive convolution (SAC; PUMIT, Luo et al. 2024, "Spatially Adaptive Convolution").

A volume whose slices are `r = 2^DA` times thicker than its in-plane pixels is, for a convolution
whose kernel equals its stride, the same as an isotropic volume in which every slice is repeated
`r` times. SAC exploits this: instead of resampling, it sums the depth taps of an isotropic kernel
that would fall on the same thick slice and shrinks the depth stride accordingly. The network is
built once with isotropic kernels and strides and then runs on any spacing, 2D images included
(one slice, "infinitely" thick: every depth kernel collapses to the sum of its taps).

The degree of anisotropy travels with the feature map as an explicit `Anisotropy` value next to
the tensor: every SAC module maps `(x, aniso) -> (y, aniso')`, and `SACSequential` threads the
pair through a stack in which plain modules (norms, activations) see only the tensor.

- DA = floor(log2(s_D / min(s_H, s_W))), clipped to [0, max_da] (PUMIT code: `int(r).bit_length()
  - 1` on r = clip(s_D / s_xy, 1, 32)). The paper writes the DA without naming the rounding; the
  public code floors, and so do we.
- `num_downsamples` counts the x2 in-plane downsamplings applied so far. `pending = max(DA -
  num_downsamples, 0)` in-plane halvings are still needed before the map is isotropic and depth may
  be downsampled; `depth_up = max(num_downsamples - DA, 0)` depth doublings are still owed on the
  way up.

Spacing order: `(s_D, s_H, s_W)` in the tensor's axis order (B, C, D, H, W); D is the slice axis.

Example:
    >>> conv = SACConv3d(1, 8, kernel_size=16, stride=16)
    >>> y, a = conv(torch.randn(1, 1, 4, 64, 64), Anisotropy(da=2))  # 4 mm slices, 1 mm pixels
    >>> tuple(y.shape), a.num_downsamples
    ((1, 8, 1, 4, 4), 4)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: The largest DA: 2^5 = 32 = twice the ViT patch, so any DA >= 5 behaves as a 2D image.
MAX_DA = 5


@dataclass(frozen=True)
class Anisotropy:
    """The spatial state that travels with a feature map through SAC layers.

    Attributes:
        da: degree of anisotropy of the network input (one int per batch).
        num_downsamples: x2 in-plane downsamplings applied so far (starts at 0).
    """

    da: int
    num_downsamples: int = 0

    @property
    def pending(self) -> int:
        """In-plane halvings still needed before depth may be downsampled."""
        return max(self.da - self.num_downsamples, 0)

    @property
    def depth_up(self) -> int:
        """Depth doublings still owed by upsampling layers."""
        return max(self.num_downsamples - self.da, 0)

    def downsampled(self, k: int) -> Anisotropy:
        """The state after a layer with in-plane stride 2^k."""
        return replace(self, num_downsamples=self.num_downsamples + k)

    def upsampled(self, k: int) -> Anisotropy:
        """The state after a layer with in-plane upsampling 2^k."""
        return replace(self, num_downsamples=self.num_downsamples - k)


def degree_of_anisotropy(spacing: Tensor | Sequence[float], max_da: int = MAX_DA) -> int:
    """DA = floor(log2(s_D / min(s_H, s_W))) clipped to [0, max_da], one value for the batch.

    Args:
        spacing: (3,) or (B, 3) voxel spacing in mm, `(s_D, s_H, s_W)`. A 2D image may use any
            huge or infinite depth spacing.
        max_da: upper clip (5: everything from 32x thicker slices on is treated as 2D).

    Returns:
        The batch's DA.

    Raises:
        ValueError: for a non-positive spacing, or a batch whose samples have different DAs (use
            `medmim.data.pumit.DABatchSampler`, which groups batches by DA).
    """
    s = torch.as_tensor(spacing, dtype=torch.float64).reshape(-1, 3)
    if not bool((s > 0).all()):
        raise ValueError(f"voxel spacing must be positive (s_D, s_H, s_W) in mm, got {s.tolist()}")
    ratio = (s[:, 0] / s[:, 1:].min(dim=1).values).clamp(1.0, float(2**max_da))
    # floor(log2(r)) == floor(log2(floor(r))) for r >= 1; the tolerance keeps 2.9999999 from
    # flooring
    das = {int(math.floor(r * (1 + 1e-6))).bit_length() - 1 for r in ratio.tolist()}
    if len(das) != 1:
        raise ValueError(
            f"the samples of one batch have different degrees of anisotropy {sorted(das)} "
            f"(spacing {s.tolist()}); SAC needs one DA per batch: group batches with "
            "medmim.data.pumit.DABatchSampler"
        )
    return das.pop()


def infer_anisotropy(
    spatial_shape: Sequence[int], spacing: Tensor | Sequence[float] | None, max_da: int = MAX_DA
) -> Anisotropy:
    """The input state of a SAC network: DA from `spacing`, else 0 (or `max_da` for one slice).

    Args:
        spatial_shape: (D, H, W) of the input.
        spacing: (3,) or (B, 3) `(s_D, s_H, s_W)`, or None for an isotropic volume / a 2D image.
        max_da: upper clip of the DA.
    """
    if spacing is None:
        return Anisotropy(da=max_da if int(spatial_shape[0]) == 1 else 0)
    return Anisotropy(da=degree_of_anisotropy(spacing, max_da))


def reduce_depth_taps(weight: Tensor, taps: int) -> Tensor:
    """Sum-pool a kernel's depth taps (dim 2) into `taps` contiguous groups.

    New tap j = sum_{t = j g}^{(j+1) g - 1} w[t] with g = K_d / taps (PUMIT's weight reduction).

    Args:
        weight: (C_out, C_in, K_d, K_h, K_w) conv or (C_in, C_out, K_d, ...) transposed-conv weight.
        taps: the new depth size; must divide K_d.
    """
    k = weight.shape[2]
    if taps == k:
        return weight
    if k % taps:
        raise ValueError(f"cannot sum {k} depth taps into {taps} equal groups")
    return weight.unflatten(2, (taps, k // taps)).sum(dim=3)


def _log2(stride: int, who: str) -> int:
    k = int(stride).bit_length() - 1
    if stride < 1 or 2**k != stride:
        raise ValueError(f"{who}: SAC strides must be powers of two, got {stride}")
    return k


class SACModule(nn.Module):
    """Marker base: modules whose forward is `(x, aniso) -> (y, aniso')`."""


class SACConv3d(nn.Conv3d, SACModule):
    """SAC variants "downsampling" (kernel = stride = 2^k, patchify) and "3x3x3 convolution".

    With p = `aniso.pending` > 0 the depth stride becomes max(s >> p, 1); the depth taps are summed
    in contiguous groups down to that stride (all of them when it is 1), and depth padding is 0.
    With p = 0 the layer is the plain isotropic conv. The bias is unchanged. Exact for kernel ==
    stride: the output equals the plain conv on the volume with each slice repeated 2^p times.
    Also accepts kernel 3 / stride 2 (PUMIT's discriminator): 1 x 3 x 3 with depth stride 1 while
    p > 0.

    Args:
        in_channels, out_channels: channels.
        kernel_size: isotropic kernel (1, 3, or equal to `stride`).
        stride: isotropic power-of-two stride.
        padding: isotropic zero padding of the plain conv.
        bias: learnable bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        self.log2_stride = _log2(stride, "SACConv3d")
        if stride > 1 and kernel_size not in (stride, 3):
            raise ValueError(
                "SACConv3d: a strided SAC conv needs kernel == stride or 3, got "
                f"{kernel_size}/{stride}"
            )

    def forward(self, x: Tensor, aniso: Anisotropy) -> tuple[Tensor, Anisotropy]:  # type: ignore[override]
        """(B, C_in, D, H, W) -> (B, C_out, D', H / s, W / s) with D' = D / max(s >> p, 1)."""
        p, s, k = aniso.pending, self.stride[1], self.kernel_size[0]
        out = aniso.downsampled(self.log2_stride)
        if p == 0:
            return super().forward(x), out
        s_d = max(s >> p, 1)
        if s_d > 1 and k != s:
            raise ValueError(f"SACConv3d: depth stride {s_d} needs kernel == stride, got {k}/{s}")
        if k == s and (x.shape[2] % s_d or x.shape[3] % s or x.shape[4] % s):
            raise ValueError(
                f"SACConv3d: input {tuple(x.shape[2:])} at DA {aniso.da} is not a multiple of the "
                f"adapted patch {(s_d, s, s)}; crop to a multiple of it"
            )
        weight = reduce_depth_taps(self.weight, s_d)
        pad = self.padding[1]
        return F.conv3d(x, weight, self.bias, (s_d, s, s), (0, pad, pad)), out


class SACConvTranspose3d(nn.ConvTranspose3d, SACModule):
    """SAC variant "upsampling": transposed conv with kernel = stride = 2^k.

    The depth stride (and kernel) is min(2^depth_up, s), so depth is upsampled only as many times
    as it was downsampled; the depth taps are summed in contiguous groups. Sum (the paper's and the
    code's choice, "to maintain the mean and variance of the output") makes the output the sum of
    the 2^(k - k_d) fine slices that the plain transposed conv would produce (the adjoint of the
    exact downsampling case), not their mean; the bias is added once.

    Args:
        in_channels, out_channels: channels.
        stride: isotropic power-of-two stride (= kernel).
        bias: learnable bias.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, stride, stride, bias=bias)
        self.log2_stride = _log2(stride, "SACConvTranspose3d")

    def forward(self, x: Tensor, aniso: Anisotropy) -> tuple[Tensor, Anisotropy]:  # type: ignore[override]
        """(B, C_in, D, H, W) -> (B, C_out, D * s_d, H * s, W * s)."""
        s = self.stride[1]
        s_d = min(2**aniso.depth_up, s)
        weight = reduce_depth_taps(self.weight, s_d)
        y = F.conv_transpose3d(x, weight, self.bias, (s_d, s, s))
        return y, aniso.upsampled(self.log2_stride)


class SACSequential(nn.Sequential):
    """`nn.Sequential` over `(x, aniso)`: SAC modules get the pair, the others only `x`."""

    def forward(self, x: Tensor, aniso: Anisotropy) -> tuple[Tensor, Anisotropy]:  # type: ignore[override]
        """Apply each module in turn: (B, C, D, H, W) `x` and `aniso` -> the new pair."""
        for module in self:
            if isinstance(module, SACModule):
                x, aniso = module(x, aniso)
            else:
                x = module(x)
        return x, aniso
