"""3D ViT with a [CLS] token, a mask token and the last block's [CLS] attention.

Used by the ViT baselines (iBOT, AttMask, MST) and by SMART-on-ViT. The masking grid is the
patch grid (one cell = one 16^3 patch). A masked patch embedding is replaced by the learned mask
token before the position embedding is added (iBOT/AttMask `masked_embed`). The position
embedding is learned on `pos_grid` and trilinearly resized to other grids, so any input whose
sides are multiples of the patch size works (e.g. 96 x 96 x 64).

Attention is fused (`F.scaled_dot_product_attention`) everywhere; the last block additionally
computes the [CLS] query row with an explicit softmax (O(N) extra work), which is the AttMask
score: the mean over heads of softmax(q_cls K^T / sqrt(d)) with the [CLS] self slot dropped.

Example:
    >>> vit = ViTEncoder(embed_dim=48, depth=2, num_heads=4, pos_grid=(2, 2, 2))
    >>> out = vit.forward_features(torch.randn(1, 1, 64, 64, 32))
    >>> out["grid"], out["patch"].shape, out["attn"].shape
    ((4, 4, 2), torch.Size([1, 32, 48]), torch.Size([1, 32]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import MLPBlock
from monai.networks.layers import DropPath
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from medmim.errors import ConfigError
from medmim.layers.class_attention import (
    float32_softmax_scores,
    init_token,
    init_transformer_weights,
)
from medmim.models._backbone import check_input, check_mask, grid_of, jsonable, register_presets
from medmim.registry import BACKBONES
from medmim.types import Features


class Attention(nn.Module):
    """Multi-head self-attention (fused), optionally with the [CLS] row's probabilities.

    Args:
        dim: token width.
        num_heads: heads; `dim` must be divisible by it.
        qkv_bias: q/k/v biases.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"ViT: embed_dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, cls_attn: bool = False) -> tuple[Tensor, Tensor | None]:
        """X (B, T, C) -> (B, T, C) and, if `cls_attn`, probabilities (B, h, T) of
        query 0 (float32).
        """
        b, t, c = x.shape
        q, k, v = (
            self.qkv(x).reshape(b, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        )
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, c)
        probs = None
        if cls_attn:
            scale = (c // self.num_heads) ** -0.5
            probs = float32_softmax_scores(q[:, :, :1], k, scale)[:, :, 0]
        return self.proj(out), probs


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(LN x)); x + DropPath(MLP(LN x))."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), 0.0, act="GELU")
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, cls_attn: bool = False) -> tuple[Tensor, Tensor | None]:
        """(B, T, C) -> (B, T, C), and the [CLS] attention (B, h, T) if `cls_attn`, else None."""
        out, probs = self.attn(self.norm1(x), cls_attn)
        x = x + self.drop_path(out)
        return x + self.drop_path(self.mlp(self.norm2(x))), probs


@BACKBONES.register("vit")
class ViTEncoder(nn.Module):
    """3D ViT encoder with the backbone contract.

    Args:
        in_channels: image channels.
        embed_dim: token width.
        depth: transformer blocks.
        num_heads: attention heads.
        patch_size: cubic patch edge in voxels (16).
        mlp_ratio: MLP width multiple.
        qkv_bias: q/k/v biases.
        drop_path_rate: stochastic depth, linear over the blocks.
        pos_grid: patch grid on which the position embedding is learned (96^3 / 16 = 6^3);
            other grids get a trilinear resize of it.
        feature_blocks: 1-based blocks whose outputs are returned as `features` (UNETR style);
            default: 4 evenly spaced blocks ending with the last one (3, 6, 9, 12 for depth 12).
        token_init: init of the [CLS] and mask tokens, "trunc_normal" or "zeros".
        use_checkpoint: activation checkpointing of every block.
    """

    def __init__(
        self,
        in_channels: int = 1,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        patch_size: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        pos_grid: Sequence[int] = (6, 6, 6),
        feature_blocks: Sequence[int] | None = None,
        token_init: str = "trunc_normal",
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "name": "vit",
            **jsonable({k: v for k, v in locals().items() if k not in ("self", "__class__")}),
        }
        self.in_channels, self.patch_size = in_channels, patch_size
        self.use_checkpoint = use_checkpoint
        self.pos_grid = tuple(int(g) for g in pos_grid)
        self.feature_blocks = tuple(feature_blocks or default_feature_blocks(depth))
        if any(not 1 <= b <= depth for b in self.feature_blocks):
            raise ConfigError(
                f"feature_blocks={list(self.feature_blocks)} must lie in 1..depth={depth}"
            )
        self.patch_embed = nn.Conv3d(
            in_channels, embed_dim, kernel_size=patch_size, stride=patch_size
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *self.pos_grid))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, r) for r in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.apply(init_transformer_weights)
        for p, how in ((self.cls_token, token_init), (self.mask_token, token_init)):
            init_token(p, how, "token_init")
        for p in (self.cls_pos, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        self.feature_dims = dict.fromkeys(("patch", "cls", "pooled", "bottleneck"), embed_dim)
        self.bottleneck_stride = patch_size

    @property
    def has_cls_attention(self) -> bool:
        """Whether `forward_features` returns `cls` and `attn`: always (the [CLS] token)."""
        return True

    def mask_grid(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """The masking (= patch) grid (d, h, w) for an input of shape (..., D, H, W)."""
        return grid_of(input_shape[-3:], self.patch_size, "ViTEncoder")

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Switch activation checkpointing of every block on or off."""
        self.use_checkpoint = enabled

    def position_embedding(self, grid: tuple[int, int, int]) -> Tensor:
        """The learned position embedding resized to `grid`: (1, d*h*w, C)."""
        pos = self.pos_embed
        if grid != self.pos_grid:
            pos = F.interpolate(pos, size=grid, mode="trilinear", align_corners=False)
        return pos.flatten(2).transpose(1, 2)

    def embed(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Tokens [CLS; patches] with masked patches replaced and positions added: (B, 1+N, C)."""
        check_input(x, self.in_channels, self.patch_size, "ViTEncoder")
        grid = self.mask_grid(x.shape)
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        if mask is not None:
            check_mask(mask, x.shape[0], grid, "ViTEncoder")
            tokens = torch.where(
                mask.flatten(1).unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens
            )
        tokens = tokens + self.position_embedding(grid).to(tokens.dtype)
        cls = (self.cls_token + self.cls_pos).expand(x.shape[0], -1, -1).to(tokens.dtype)
        return torch.cat([cls, tokens], dim=1)

    def forward_features(self, x: Tensor, mask: Tensor | None = None) -> Features:
        """Run the encoder (see `medmim.types` for the keys).

        Args:
            x: (B, C_in, D, H, W), sides divisible by `patch_size`.
            mask: (B, d, h, w) bool on the patch grid, True = masked.

        Returns:
            patch (B, N, C) final-norm patch tokens; cls (B, C); attn (B, N) last block's [CLS]
            attention, head mean, self slot dropped (rows sum to <= 1); pooled (B, C) mean of
            `patch`; bottleneck (B, C, d, h, w) = `patch` as a map; features the outputs of
            `feature_blocks` as (B, C, d, h, w) maps, shallowest first; grid (d, h, w).
        """
        grid = self.mask_grid(x.shape)
        h, probs, feats = self.embed(x, mask), None, []
        for i, block in enumerate(self.blocks, start=1):
            last = i == len(self.blocks)
            if self.use_checkpoint and torch.is_grad_enabled():
                h, p = checkpoint(block, h, last, use_reentrant=False)
            else:
                h, p = block(h, last)
            probs = p if last else probs
            if i in self.feature_blocks:
                feats.append(self._as_map(h[:, 1:], grid))
        h = self.norm(h)
        patch = h[:, 1:]
        assert probs is not None
        return {
            "patch": patch,
            "cls": h[:, 0],
            "attn": probs[:, :, 1:].mean(dim=1),
            "pooled": patch.mean(dim=1),
            "bottleneck": self._as_map(patch, grid),
            "features": feats,
            "grid": grid,
        }

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Features:
        """Same as `forward_features`."""
        return self.forward_features(x, mask)

    @staticmethod
    def _as_map(tokens: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """(B, N, C) row-major tokens -> (B, C, d, h, w)."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


def default_feature_blocks(depth: int) -> tuple[int, ...]:
    """Four evenly spaced 1-based blocks ending with the last: (3, 6, 9, 12) for depth 12."""
    step = max(1, depth // 4)
    return tuple(sorted({depth - i * step for i in range(4) if depth - i * step > 0}))


#: Sizes (patch 16). S and B are the standard ViT-S/B widths; `vit_smart` is the SMART paper's ViT
#: (sec. 4.3: 12 blocks, 768 wide, 8 heads). Student drop path 0.1 as in AttMask and SMART.
VIT_PRESETS: dict[str, dict[str, Any]] = {
    "vit_demo": {"embed_dim": 192, "depth": 6, "num_heads": 3, "pos_grid": (4, 4, 4)},
    "vit_s16": {"embed_dim": 384, "depth": 12, "num_heads": 6, "drop_path_rate": 0.1},
    "vit_b16": {"embed_dim": 768, "depth": 12, "num_heads": 12, "drop_path_rate": 0.1},
    "vit_smart": {"embed_dim": 768, "depth": 12, "num_heads": 8, "drop_path_rate": 0.1},
}
register_presets(ViTEncoder, VIT_PRESETS)
