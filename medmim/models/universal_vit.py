"""PUMIT's universal ViT (Luo et al. 2024, "Universal ViT" and "Transformer Architecture").

A plain ViT whose patch embedding is a SAC downsampling conv (kernel = stride = 16): at degree
of anisotropy DA the patch is `(16 >> DA, 16, 16)` voxels, i.e. physically near-isotropic, and a
2D image (one slice) gets `(1, 16, 16)` patches. Then a [CLS] token, EVA-02 blocks (SwiGLU,
separate q/k/v, fused attention) with additive 3D RoPE on the patch tokens, and a final
LayerNorm. Any input whose D, H, W are multiples of the adapted patch works: the learnable
absolute position table (`pos_embed_shape`) is resampled to the token grid (area when shrinking,
trilinear when growing) and RoPE is rebuilt per grid.

Choices (paper vs the public code, switchable):
- `attn_sub_ln=True`: EVA-02's sub-LayerNorm inside the attention, as the paper says the block
  "follows EVA-02"; the code drops it (`False`).
- `pos_embed_on_mask=True`: mask tokens receive the absolute position embedding (BEiT/EVA-02,
  which the paper's MIM follows); the code gives them none, only RoPE (`False`).
- `norm_eps=1e-6` (EVA-02); the code uses 1e-5.

Spacing is passed per call (`spacing=(B, 3)` in (s_D, s_H, s_W) order, one DA per batch); without
it a volume is taken as isotropic (DA 0) and a one-slice input as 2D.

Example:
    >>> vit = UniversalViT(embed_dim=24, depth=2, num_heads=2, pos_embed_shape=(2, 2, 2))
    >>> out = vit.forward_features(torch.randn(1, 1, 8, 32, 32), spacing=(2.0, 1.0, 1.0))
    >>> out["grid"], out["patch"].shape
    ((1, 2, 2), torch.Size([1, 4, 24]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from medmim.layers.eva import EVABlock
from medmim.layers.rope import Rope3D
from medmim.layers.sac import MAX_DA, Anisotropy, SACConv3d, infer_anisotropy
from medmim.models._backbone import check_mask, jsonable, register_presets
from medmim.registry import BACKBONES
from medmim.types import Features

Spacing = Tensor | Sequence[float] | None


def resample_grid(table: Tensor, size: Sequence[int]) -> Tensor:
    """Resize a (1, C, d0, h0, w0) table to `size`: area on shrinking axes, then trilinear."""
    size = tuple(int(s) for s in size)
    mid = tuple(min(a, b) for a, b in zip(table.shape[2:], size))
    if mid != tuple(table.shape[2:]):
        table = F.interpolate(table, size=mid, mode="area")
    if mid != size:
        table = F.interpolate(table, size=size, mode="trilinear", align_corners=False)
    return table


@BACKBONES.register("universal_vit")
class UniversalViT(nn.Module):
    """Universal ViT: SAC patch embedding, [CLS], EVA-02 blocks, additive 3D RoPE.

    Args:
        in_channels: image channels (PUMIT: 3 with gray replicated; medmim data: 1).
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads (head_dim must be a multiple of 4 for RoPE).
        patch_size: isotropic power-of-two patch (16).
        mlp_ratio: SwiGLU hidden / width (8/3).
        qkv_bias: q and v biases.
        attn_sub_ln: EVA-02 attention sub-LN (paper) or not (code).
        norm_eps: LayerNorm epsilon.
        pos_embed_shape: (d0, h0, w0) of the absolute position table, or None for RoPE only.
        pos_embed_on_mask: add the absolute position embedding to mask tokens too.
        rope_base_hw: in-plane RoPE base (10^4).
        rope_base_d: depth RoPE base (2333).
        max_da: upper clip of the degree of anisotropy.
    """

    def __init__(
        self,
        in_channels: int = 1,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        patch_size: int = 16,
        mlp_ratio: float = 8 / 3,
        qkv_bias: bool = True,
        attn_sub_ln: bool = True,
        norm_eps: float = 1e-6,
        pos_embed_shape: Sequence[int] | None = (5, 10, 10),
        pos_embed_on_mask: bool = True,
        rope_base_hw: float = 10000.0,
        rope_base_d: float = 2333.0,
        max_da: int = MAX_DA,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "name": "universal_vit",
            **jsonable({k: v for k, v in locals().items() if k not in ("self", "__class__")}),
        }
        self.in_channels, self.embed_dim, self.patch_size, self.max_da = (
            in_channels,
            embed_dim,
            patch_size,
            max_da,
        )
        self.pos_embed_on_mask = pos_embed_on_mask
        self.patch_embed = SACConv3d(in_channels, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = (
            nn.Parameter(torch.zeros(1, embed_dim, *pos_embed_shape)) if pos_embed_shape else None
        )
        self.rope = Rope3D(embed_dim // num_heads, rope_base_hw, rope_base_d)
        self.blocks = nn.ModuleList(
            EVABlock(embed_dim, num_heads, mlp_ratio, qkv_bias, attn_sub_ln, norm_eps)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.grad_checkpointing = False
        self.feature_dims = dict.fromkeys(("patch", "cls", "pooled", "bottleneck"), embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        """BEiT/EVA-02 init: trunc-normal(0.02) tokens and linears, residual outputs / sqrt(2 l)."""
        for p in (self.cls_token, self.mask_token, self.pos_embed):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        with torch.no_grad():
            for layer, block in enumerate(self.blocks, start=1):
                block.attn.proj.weight.div_(math.sqrt(2.0 * layer))
                block.mlp.w3.weight.div_(math.sqrt(2.0 * layer))

    # ------------------------------------------------------------------ geometry
    def anisotropy(self, input_shape: Sequence[int], spacing: Spacing = None) -> Anisotropy:
        """The input's SAC state: DA from `spacing` (see `medmim.layers.sac.infer_anisotropy`)."""
        return infer_anisotropy(tuple(input_shape)[-3:], spacing, self.max_da)

    def effective_patch(
        self, input_shape: Sequence[int], spacing: Spacing = None
    ) -> tuple[int, int, int]:
        """The patch in voxels at this input's DA: (max(16 >> DA, 1), 16, 16)."""
        p = self.patch_size
        return max(p >> self.anisotropy(input_shape, spacing).da, 1), p, p

    @property
    def has_cls_attention(self) -> bool:
        """Whether `forward_features` returns `cls` and `attn`: always (the [CLS] token)."""
        return True

    def mask_grid(
        self, input_shape: Sequence[int], spacing: Spacing = None
    ) -> tuple[int, int, int]:
        """Token (= masking) grid (d, h, w) for an input of shape (..., D, H, W)."""
        shape = tuple(int(s) for s in tuple(input_shape)[-3:])
        patch = self.effective_patch(shape, spacing)
        if any(s % p or s == 0 for s, p in zip(shape, patch)):
            raise ValueError(
                f"UniversalViT: input size {shape} is not a multiple of the patch {patch} at its "
                "degree of anisotropy; crop to e.g. "
                f"{tuple(max(p, s // p * p) for s, p in zip(shape, patch))}"
                " or pass the right spacing"
            )
        return tuple(s // p for s, p in zip(shape, patch))  # type: ignore[return-value]

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass (saves memory)."""
        self.grad_checkpointing = enabled

    # ------------------------------------------------------------------ forward
    def embed(
        self, x: Tensor, mask: Tensor | None = None, spacing: Spacing = None
    ) -> tuple[Tensor, tuple[int, int, int]]:
        """SAC patch embedding, mask tokens, position embedding and [CLS].

        Returns:
            tokens (B, 1 + N, C) and the grid (d, h, w).
        """
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"UniversalViT: expected (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}"
            )
        grid = self.mask_grid(x.shape, spacing)
        tokens, _ = self.patch_embed(x, self.anisotropy(x.shape, spacing))
        tokens = tokens.flatten(2).transpose(1, 2)
        pos = (
            resample_grid(self.pos_embed, grid).flatten(2).transpose(1, 2)
            if self.pos_embed is not None
            else None
        )
        if mask is not None:
            check_mask(mask, x.shape[0], grid, "UniversalViT")
            masked = mask.flatten(1).unsqueeze(-1)
            tokens = torch.where(masked, self.mask_token.to(tokens.dtype), tokens)
            if pos is not None and not self.pos_embed_on_mask:
                pos = pos * ~masked
        if pos is not None:
            tokens = tokens + pos
        return torch.cat(
            [self.cls_token.expand(x.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1
        ), grid

    def forward_features(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        spacing: Spacing = None,
        return_features: bool = True,
    ) -> Features:
        """Run the ViT (keys as in `medmim.types`).

        Args:
            x: (B, C_in, D, H, W); D, H, W multiples of `effective_patch`.
            mask: (B, d, h, w) bool on `mask_grid(x.shape, spacing)`, True = replaced by the mask
                token.
            spacing: (3,) or (B, 3) voxel spacing (s_D, s_H, s_W); None = isotropic (or 2D if
                D = 1).
            return_features: also return every block's token map (skip it to save memory in MIM).

        Returns:
            patch (B, N, C) and cls (B, C) after the final LayerNorm; attn (B, N) the last block's
            [CLS] -> patch attention averaged over heads (no gradient); pooled (B, C) mean of
            `patch`; bottleneck (B, C, d, h, w) = `patch` as a map; features: one (B, C, d, h, w)
            map per block (residual stream before the final norm, [CLS] removed), shallowest
            first, for UNETR-style decoders; grid (d, h, w).
        """
        tokens, grid = self.embed(x, mask, spacing)
        rope = self.rope(grid)
        maps: list[Tensor] = []
        attn = None
        for i, block in enumerate(self.blocks):
            if i == len(self.blocks) - 1:
                attn = block.cls_attention(tokens, rope)
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, rope, use_reentrant=False)
            else:
                tokens = block(tokens, rope)
            if return_features:
                maps.append(tokens[:, 1:].transpose(1, 2).unflatten(2, grid))
        tokens = self.norm(tokens)
        patch = tokens[:, 1:]
        out: Features = {
            "patch": patch,
            "cls": tokens[:, 0],
            "pooled": patch.mean(dim=1),
            "bottleneck": patch.transpose(1, 2).unflatten(2, grid),
            "grid": grid,
        }
        if attn is not None:
            out["attn"] = attn
        if return_features:
            out["features"] = maps
        return out

    def forward(self, x: Tensor, mask: Tensor | None = None, spacing: Spacing = None) -> Features:
        """Same as `forward_features` (so hooks, DDP and torch.compile see a plain module call)."""
        return self.forward_features(x, mask, spacing)


#: Sizes. `uvit_b16`: the paper's ViT-B (768 wide, 12 blocks, 12 heads of 64, patch 16, position
#: table 5x10x10 for the 80x160x160 MIM crops). `uvit_demo`: a CPU-trainable size.
UVIT_PRESETS: dict[str, dict[str, Any]] = {
    "uvit_b16": {"embed_dim": 768, "depth": 12, "num_heads": 12, "pos_embed_shape": (5, 10, 10)},
    "uvit_demo": {"embed_dim": 96, "depth": 4, "num_heads": 4, "pos_embed_shape": (2, 4, 4)},
}
register_presets(UniversalViT, UVIT_PRESETS)
