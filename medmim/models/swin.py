"""3D Swin encoder with a mask token and SMART's semantic-attention block ("SMARTFormer").

The Swin itself is MONAI's `SwinTransformer` (patch 2, window 4, blocks then patch merging in each
of the 4 stages), kept as the submodule `swinViT` so that its weights load with `strict=True` into
`monai.networks.nets.SwinUNETR(...).swinViT` (see `medmim.eval.export.load_into_swinunetr`).

Around it (SMART, Jiang et al. 2024, sec. 3.2 and Fig. 2):

- a learnable mask token replaces the patch embeddings of masked cells right after the patch
  embedding (SMIT/SMART code). The mask lives on the grid of the SA stage's tokens (default stage 3:
  one cell = 16^3 voxels) and is expanded to the patch grid by repeat_interleave;
- the semantic-attention block (two CaiT class-attention blocks, LayerScale 1e-4) reads the tokens
  of `sa_stage` (1-4, paper Table 5; default 3 = the img/16 tokens with 8C channels) and returns a
  [CLS] and SATT (eq. 1). It is a side branch: stage 4 runs on the untouched stage tokens.

Stage k (1-4) means MONAI's k-th output map: blocks of stage k, then its patch merging, so its
tokens are at img / (patch * 2^k) with C * 2^k channels (stage 4 merges too: 16C at img/32).

Example:
    >>> enc = SwinEncoder(embed_dim=12, depths=(2, 2, 2, 2), num_heads=(3, 3, 3, 3))
    >>> out = enc.forward_features(torch.randn(1, 1, 64, 64, 32))
    >>> out["grid"], out["patch"].shape, out["attn"].shape
    ((4, 4, 2), torch.Size([1, 32, 96]), torch.Size([1, 32]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import Tensor, nn

from medmim.layers.class_attention import SemanticAttention, init_token
from medmim.masking.utils import upsample_mask
from medmim.models._backbone import (
    check_choice,
    check_input,
    check_mask,
    grid_of,
    jsonable,
    register_presets,
)
from medmim.registry import BACKBONES
from medmim.types import Features


@BACKBONES.register("swin")
class SwinEncoder(nn.Module):
    """MONAI 3D Swin + mask token + semantic-attention block, with the backbone contract.

    Args:
        in_channels: image channels.
        embed_dim: C, the width of the patch embedding (SwinUNETR's `feature_size`; a multiple of 12
            if you want to load the weights into SwinUNETR).
        depths: Swin blocks per stage (4 stages).
        num_heads: attention heads per stage.
        window_size: window edge (isotropic; MONAI needs a tuple, built here).
        patch_size: patch-embedding edge (2).
        mlp_ratio: MLP width multiple of the Swin blocks.
        qkv_bias: q/k/v biases in the Swin blocks (SwinUNETR default True; the SMIT MICCAI code
            False).
        patch_norm: LayerNorm after the patch embedding (SwinUNETR default False; SMIT code True).
        drop_path_rate: stochastic depth, linear over all Swin blocks.
        sa_stage: stage whose tokens the SA block reads and whose grid is the masking grid (1-4).
        sa_depth: class-attention blocks in the SA block (SMART: 2); 0 = no SA block (plain SMIT
            encoder: no `cls` / `attn` outputs).
        sa_heads: heads of the SA block; default `num_heads[sa_stage - 1]` (SMART code).
        layer_scale_init: LayerScale init of the SA block.
        pool_stage: stage whose normalised tokens are average-pooled into `pooled` (GITD). 4 =
            after stage 4, as the paper says; 3 = the SA-stage tokens, as the public code does.
        normalize_features: apply MONAI's parameter-free layer norm to `features` (as SwinUNETR).
        token_init: init of the mask and [CLS] tokens, "trunc_normal" (std 0.02) or "zeros".
        use_checkpoint: activation checkpointing in every Swin block (MONAI's option).
        use_flash_attention: MONAI's fused window attention when no gradient is recorded
            (teacher forwards); training is unchanged.
    """

    def __init__(
        self,
        in_channels: int = 1,
        embed_dim: int = 48,
        depths: Sequence[int] = (2, 2, 8, 2),
        num_heads: Sequence[int] = (4, 4, 8, 16),
        window_size: int = 4,
        patch_size: int = 2,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        patch_norm: bool = False,
        drop_path_rate: float = 0.0,
        sa_stage: int = 3,
        sa_depth: int = 2,
        sa_heads: int | None = None,
        layer_scale_init: float = 1e-4,
        pool_stage: int = 4,
        normalize_features: bool = True,
        token_init: str = "trunc_normal",
        use_checkpoint: bool = False,
        use_flash_attention: bool = True,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "name": "swin",
            **jsonable({k: v for k, v in locals().items() if k not in ("self", "__class__")}),
        }
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(
                f"SwinEncoder: depths and num_heads need 4 stages, got {list(depths)} / "
                f"{list(num_heads)}"
            )
        check_choice("sa_stage", sa_stage, 1, 4)
        check_choice("pool_stage", pool_stage, 1, 4)
        self.in_channels, self.embed_dim, self.patch_size = in_channels, embed_dim, patch_size
        self.sa_stage, self.pool_stage = sa_stage, pool_stage
        self.normalize_features = normalize_features
        self.swinViT = SwinTransformer(
            in_chans=in_channels,
            embed_dim=embed_dim,
            window_size=(window_size,) * 3,
            patch_size=(patch_size,) * 3,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_path_rate=drop_path_rate,
            patch_norm=patch_norm,
            use_checkpoint=use_checkpoint,
            use_flash_attention=use_flash_attention,
        )
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim, 1, 1, 1))
        init_token(self.mask_token, token_init, "token_init")
        width = self.stage_width(sa_stage)
        heads = sa_heads or num_heads[sa_stage - 1]
        self.sa: SemanticAttention | None = None
        if sa_depth > 0:
            self.sa = SemanticAttention(
                width, heads, sa_depth, layer_scale_init=layer_scale_init, cls_init=token_init
            )
        self.norm = nn.LayerNorm(width)  # shared by the patch tokens and the [CLS] (SMART code)
        self.pool_norm = (
            nn.LayerNorm(self.stage_width(pool_stage)) if pool_stage != sa_stage else None
        )
        #: channels of each output (for heads): patch/cls, pooled, bottleneck (16C at img/32).
        self.feature_dims = {
            "patch": width,
            "cls": width,
            "pooled": self.stage_width(pool_stage),
            "bottleneck": self.stage_width(4),
        }
        self.bottleneck_stride = patch_size * 16

    # ------------------------------------------------------------------ geometry
    def stage_width(self, stage: int) -> int:
        """Channels of stage `stage`'s output map (C * 2^stage; stage 0 = patch embedding)."""
        return self.embed_dim * 2**stage

    @property
    def has_cls_attention(self) -> bool:
        """Whether `forward_features` returns `cls` and `attn`: only with the SA block
        (sa_depth > 0).
        """
        return self.sa is not None

    @property
    def mask_cell(self) -> int:
        """Edge in voxels of one masking-grid cell (patch * 2^sa_stage; 16 by default)."""
        return self.patch_size * 2**self.sa_stage

    def mask_grid(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """The masking grid (d, h, w) for an input of shape (..., D, H, W)."""
        grid_of(input_shape[-3:], self.patch_size * 16, "SwinEncoder")
        return grid_of(input_shape[-3:], self.mask_cell, "SwinEncoder")

    def swinunetr_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that give `SwinUNETR(out_channels=..., **kw).swinViT` this
        encoder's keys.
        """
        c = self.config
        keys = (
            "in_channels",
            "depths",
            "num_heads",
            "patch_size",
            "mlp_ratio",
            "qkv_bias",
            "patch_norm",
        )
        return {
            **{k: c[k] for k in keys},
            "feature_size": c["embed_dim"],
            "window_size": c["window_size"],
        }

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Switch MONAI's activation checkpointing of every Swin block on or off."""
        for module in self.swinViT.modules():
            if hasattr(module, "use_checkpoint"):
                module.use_checkpoint = enabled

    # ------------------------------------------------------------------ forward
    def embed(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Patch embedding with masked cells replaced by the mask token.

        Args:
            x: (B, C_in, D, H, W).
            mask: (B, d, h, w) bool on the masking grid, True = masked, or None.

        Returns:
            (B, C, D/p, H/p, W/p) embeddings.
        """
        check_input(x, self.in_channels, self.patch_size * 16, "SwinEncoder")
        x0 = self.swinViT.patch_embed(x)
        if mask is not None:
            check_mask(mask, x.shape[0], self.mask_grid(x.shape), "SwinEncoder")
            cells = upsample_mask(mask, 2**self.sa_stage).unsqueeze(1)
            x0 = torch.where(cells, self.mask_token.to(x0.dtype), x0)
        return self.swinViT.pos_drop(x0)

    def forward_features(self, x: Tensor, mask: Tensor | None = None) -> Features:
        """Run the encoder (see `medmim.types` for the keys).

        Args:
            x: (B, C_in, D, H, W), each of D, H, W divisible by 32 (patch 2 and four merges).
            mask: (B, d, h, w) bool on `mask_grid(x.shape)`, True = masked.

        Returns:
            patch (B, N, C_k) LN(stage-k tokens), N = d*h*w row-major, C_k = C * 2^sa_stage;
            cls (B, C_k) LN(SA [CLS]); attn (B, N) SATT (eq. 1, float32, rows sum to <= 1);
            pooled (B, C_p) mean of the normalised `pool_stage` tokens; bottleneck
            (B, 16C, D/32, ...) the raw stage-4 map; features the 5 MONAI maps (patch embedding,
            stages 1-4), finest first; grid (d, h, w).
        """
        maps = [self.embed(x, mask)]
        for stage in (
            self.swinViT.layers1,
            self.swinViT.layers2,
            self.swinViT.layers3,
            self.swinViT.layers4,
        ):
            maps.append(stage[0](maps[-1].contiguous()))
        grid = tuple(maps[self.sa_stage].shape[2:])
        tokens = maps[self.sa_stage].flatten(2).transpose(1, 2)
        out: Features = {"patch": self.norm(tokens), "grid": grid, "bottleneck": maps[4]}
        if self.sa is not None:
            cls, out["attn"] = self.sa(tokens)
            out["cls"] = self.norm(cls)
        if self.pool_norm is None:
            out["pooled"] = out["patch"].mean(dim=1)
        else:
            out["pooled"] = self.pool_norm(maps[self.pool_stage].flatten(2).transpose(1, 2)).mean(
                dim=1
            )
        out["features"] = [self.swinViT.proj_out(m, self.normalize_features) for m in maps]
        return out

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Features:
        """Same as `forward_features` (so hooks, DDP and torch.compile see a plain module call)."""
        return self.forward_features(x, mask)


#: Sizes. SMIT (MICCAI 2022 code): C 48, depths 2,2,4,2, heads 4,4,4,4. SMART (paper sec. 4.3):
#: C 48 (8C = 384 at the SA stage), depths 2,2,8,2, heads 4,4,8,16, student drop path 0.1.
#: Demo: a CPU-trainable size. Tests use `{"name": "swin", ...}` with tiny kwargs.
SWIN_PRESETS: dict[str, dict[str, Any]] = {
    "swin_demo": {"embed_dim": 24, "depths": (2, 2, 2, 2), "num_heads": (3, 3, 6, 12)},
    "swin_smit": {
        "embed_dim": 48,
        "depths": (2, 2, 4, 2),
        "num_heads": (4, 4, 4, 4),
        "drop_path_rate": 0.1,
    },
    "swin_smart": {
        "embed_dim": 48,
        "depths": (2, 2, 8, 2),
        "num_heads": (4, 4, 8, 16),
        "drop_path_rate": 0.1,
    },
}
register_presets(SwinEncoder, SWIN_PRESETS)
