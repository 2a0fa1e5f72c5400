"""Turn token-grid attention (SMART's SATT, the ViT [CLS] attention) into input-resolution volumes.

Used by attention-guided masking visualisations and by `medmim attention`.

Example:
    >>> satt = torch.softmax(torch.randn(2, 6 * 6 * 4), dim=1)          # (B, N) on a 6x6x4 grid
    >>> vol = attention_to_volume(satt, (6, 6, 4), (96, 96, 64), normalize="minmax")
    >>> vol.shape, float(vol.amin()), float(vol.amax())
    (torch.Size([2, 96, 96, 64]), 0.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from medmim.errors import ConfigError, did_you_mean
from medmim.types import Features

MODES = ("trilinear", "nearest")
NORMALIZATIONS = ("none", "minmax", "max", "sum")


def attention_to_volume(
    attn: Tensor,
    grid: Sequence[int],
    size: Sequence[int],
    mode: str = "trilinear",
    normalize: str = "none",
    eps: float = 1e-12,
) -> Tensor:
    """Reshape (B, N) token attention to its (d, h, w) grid and upsample it to `size`.

    Args:
        attn: (B, N) or (N,) attention over the tokens, row-major over `grid` (N = d*h*w).
        grid: (d, h, w) token grid the attention lives on (`features["grid"]`).
        size: (D, H, W) output size, usually the input's spatial shape.
        mode: "trilinear" (smooth, align_corners=False) or "nearest" (each voxel holds its
            token's value, so a nearest map of a distribution sums to N_vox / N per unit mass).
        normalize: applied per sample after upsampling: "none"; "minmax" to [0, 1]; "max" divides
            by the maximum; "sum" makes every volume sum to 1 (a distribution over voxels).
        eps: guard against division by zero (constant maps become 0 under "minmax").

    Returns:
        (B, D, H, W) float32 volume, or (D, H, W) if `attn` was 1-D.
    """
    if mode not in MODES:
        raise ConfigError(
            f"mode='{mode}' is not known.{did_you_mean(mode, MODES)} Use one of {MODES}"
        )
    if normalize not in NORMALIZATIONS:
        raise ConfigError(
            f"normalize='{normalize}' is not known.{did_you_mean(normalize, NORMALIZATIONS)} "
            f"Use one of {NORMALIZATIONS}"
        )
    squeeze = attn.ndim == 1
    attn = attn.unsqueeze(0) if squeeze else attn
    grid, size = tuple(int(g) for g in grid), tuple(int(s) for s in size)
    if attn.ndim != 2 or len(grid) != 3 or attn.shape[1] != grid[0] * grid[1] * grid[2]:
        raise ValueError(
            f"attention of shape {tuple(attn.shape)} does not fit grid {grid}: expected (B, "
            f"{'*'.join(map(str, grid))})"
        )
    vol = attn.detach().float().reshape(attn.shape[0], 1, *grid)
    kwargs = {"align_corners": False} if mode == "trilinear" else {}
    vol = F.interpolate(vol, size=size, mode=mode, **kwargs)[:, 0]
    vol = _normalize(vol, normalize, eps)
    return vol[0] if squeeze else vol


def _normalize(vol: Tensor, how: str, eps: float) -> Tensor:
    flat = vol.flatten(1)
    if how == "minmax":
        low = flat.amin(1).view(-1, 1, 1, 1)
        span = (flat.amax(1) - flat.amin(1)).view(-1, 1, 1, 1)
        return torch.where(span > eps, (vol - low) / span.clamp_min(eps), torch.zeros_like(vol))
    if how == "max":
        return vol / flat.amax(1).clamp_min(eps).view(-1, 1, 1, 1)
    if how == "sum":
        return vol / flat.sum(1).clamp_min(eps).view(-1, 1, 1, 1)
    return vol


def features_to_volume(
    features: Features, size: Sequence[int], mode: str = "trilinear", normalize: str = "minmax"
) -> Tensor:
    """`attention_to_volume` on a backbone's `forward_features` output (its `attn` and `grid`).

    Args:
        features: the dict returned by `forward_features`; needs "attn" (B, N) and "grid".
        size: (D, H, W) of the input.
        mode: upsampling, "trilinear" or "nearest" (see `attention_to_volume`).
        normalize: per-sample normalisation, e.g. "minmax" (see `attention_to_volume`).

    Returns:
        (B, D, H, W) float32.
    """
    if "attn" not in features:
        raise ConfigError(
            "this backbone returns no 'attn' (e.g. a Swin built with sa_depth=0); use an encoder "
            "with a semantic-attention block or a [CLS] token"
        )
    return attention_to_volume(
        features["attn"], features["grid"], size, mode=mode, normalize=normalize
    )
