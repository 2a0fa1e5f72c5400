"""Segmentation decoders on top of a pretrained encoder (SMIT §3, UNETR).

Two decoders, registered in `DECODERS`:

- `swin_unetr`: MONAI's `SwinUNETR`, built with the architecture of our Swin encoder
  (embed width, depths, heads, window, patch size read off the encoder's MONAI
  `SwinTransformer`), whose `.swinViT` receives the encoder's weights with a strict load. This is
  the decoder of SMIT's fine-tuning code (`Trans_Unetr`: res-block skips at full, 1/2, ... 1/16
  resolution and transposed-conv up blocks). SMIT uses batch norm in the decoder (the class
  default); MONAI and we default to instance norm (`norm_name`), which behaves the same at
  batch size 1-4 crops and does not depend on the batch.
- `unetr`: UNETR's decoder (Hatamizadeh et al. 2022) on a plain 3D ViT: intermediate token maps
  are projected and upsampled with `UnetrPrUpBlock`, the last one is decoded with
  `UnetrUpBlock`s and a `UnetOutBlock` gives the logits. Generalised from patch 16 (4
  upsamplings) to any power-of-two patch size. PUMIT's universal ViT fits as it is: its
  `features` are its per-block maps, and downstream it runs at DA 0 (cubic 16^3 patches; see
  `medmim.eval.slice_first`).

Both take the encoder instance (`DECODERS.build({"name": ..., "out_channels": C},
encoder=enc)`) and return a module mapping `(B, C_in, D, H, W)` to logits `(B, C, D, H, W)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from monai.networks.nets import SwinUNETR
from monai.networks.nets.swin_unetr import PatchMerging, PatchMergingV2, SwinTransformer
from torch import Tensor, nn

from medmim.errors import ConfigError
from medmim.registry import DECODERS


def find_swin(encoder: nn.Module) -> SwinTransformer:
    """The MONAI `SwinTransformer` inside `encoder` (or `encoder` itself)."""
    for module in encoder.modules():
        if isinstance(module, SwinTransformer):
            return module
    raise ConfigError(
        f"decoder 'swin_unetr' needs a Swin encoder (a MONAI SwinTransformer inside); got"
        f" {type(encoder).__name__}. Use decoder 'unetr' for a ViT."
    )


def swin_hyperparameters(swin: SwinTransformer) -> dict[str, Any]:
    """The `SwinUNETR` keyword arguments that rebuild `swin` exactly (read off its modules)."""
    stages = [getattr(swin, f"layers{i + 1}")[0] for i in range(swin.num_layers)]
    first = stages[0].blocks[0]
    merge = stages[0].downsample
    if isinstance(merge, PatchMerging):
        downsample = "merging"
    elif isinstance(merge, PatchMergingV2):
        downsample = "mergingv2"
    else:
        raise ConfigError(f"swin_unetr: unsupported patch merging {type(merge).__name__}")
    patch = set(swin.patch_embed.patch_size)
    if len(patch) != 1:
        raise ConfigError(f"swin_unetr: MONAI SwinUNETR needs a cubic patch, got {patch}")
    return {
        "in_channels": swin.patch_embed.proj.in_channels,
        "feature_size": swin.embed_dim,
        "patch_size": patch.pop(),
        "depths": tuple(len(s.blocks) for s in stages),
        "num_heads": tuple(s.blocks[0].num_heads for s in stages),
        "window_size": tuple(swin.window_size),
        "mlp_ratio": first.mlp_ratio,
        "qkv_bias": first.attn.qkv.bias is not None,
        "patch_norm": swin.patch_norm,
        "use_v2": swin.use_v2,
        "downsample": downsample,
    }


@DECODERS.register("swin_unetr")
def build_swin_unetr(
    encoder: nn.Module,
    out_channels: int,
    norm_name: str = "instance",
    dropout_path_rate: float = 0.0,
    use_checkpoint: bool = False,
) -> SwinUNETR:
    """MONAI `SwinUNETR` whose `swinViT` holds `encoder`'s Swin weights (strict load).

    Args:
        encoder: our Swin backbone (anything with a MONAI `SwinTransformer` inside). Every
            weight of that `SwinTransformer` is copied, and nothing else: the pretraining-only
            parameters outside it (mask token, semantic-attention block, its norms) are not
            part of the segmenter.
        out_channels: classes including background.
        norm_name: decoder normalisation ("instance" or "batch" as in SMIT).
        dropout_path_rate: stochastic depth in the Swin stages during fine-tuning.
        use_checkpoint: activation checkpointing in the Swin stages.

    Returns:
        `SwinUNETR`: (B, C_in, D, H, W) -> (B, out_channels, D, H, W); D, H, W multiples of
        `patch_size ** 5` (32 for patch 2).
    """
    swin = find_swin(encoder)
    hp = swin_hyperparameters(swin)
    if hp["feature_size"] % 12:
        raise ConfigError(
            f"swin_unetr: MONAI SwinUNETR needs an embed width divisible by 12, the encoder has"
            f" {hp['feature_size']}. Use decoder 'unetr' or an encoder with embed_dim 12/24/48/96."
        )
    model = SwinUNETR(
        out_channels=out_channels,
        norm_name=norm_name,
        dropout_path_rate=dropout_path_rate,
        use_checkpoint=use_checkpoint,
        **hp,
    )
    source = swin.state_dict()
    extra = sorted(source.keys() - model.swinViT.state_dict().keys())
    if extra:  # a weight the segmenter would silently drop: the architectures disagree
        raise ConfigError(
            f"swin_unetr: MONAI SwinUNETR({hp}) has no place for the encoder's Swin weights"
            f" {extra[:8]}{' ...' if len(extra) > 8 else ''}; the encoder is not a MONAI"
            " SwinTransformer this MONAI version can rebuild"
        )
    model.swinViT.load_state_dict(source, strict=True)  # every SwinUNETR key, shapes checked
    return model


def _skip_indices(num_maps: int, levels: int) -> list[int]:
    """UNETR's choice of skips among `num_maps` maps for patch 2^levels, 0-based.

    UNETR (patch 16, 4 levels) takes z3, z6, z9 of z1..z12: the j/k-th fractions of the maps.
    This gives [2, 5, 8] for 12 per-block maps and [0, 1, 2] for the 4 maps (blocks 3, 6, 9, 12)
    that `ViTEncoder` returns by default; the last map is the bottleneck, never a skip.
    """
    return [max(0, round(j * num_maps / levels) - 1) for j in range(1, levels)]


@DECODERS.register("unetr")
class UNETRDecoder(nn.Module):
    """UNETR decoder on a ViT encoder's intermediate token maps.

    With patch size p = 2^k, k-1 intermediate maps are projected to resolutions p/2 ... p/2^{k-1}
    (`UnetrPrUpBlock` with k-j-1 extra transposed convs for the skip at 1/2^j), the input gets a
    `UnetrBasicBlock`, and the last map is decoded upwards by k `UnetrUpBlock`s, channels
    `feature_size * 2^j` at resolution 1/2^j (UNETR: 16/32/64/128 for feature_size 16, p 16).

    Args:
        encoder: a backbone whose `forward_features` returns `features` (list of token maps
            (B, C, d, h, w) on the patch grid, one per block or a selection) and `bottleneck`.
        out_channels: classes including background.
        img_size: (D, H, W) of a training/inference window, used for one dry forward that reads
            the patch size and the channel widths.
        feature_size: UNETR's base width.
        norm_name: decoder normalisation.
        feature_indices: which entries of `features` serve as skips (finest resolution first);
            default UNETR's evenly spaced blocks.
    """

    def __init__(
        self,
        encoder: nn.Module,
        out_channels: int,
        img_size: Sequence[int] = (96, 96, 96),
        feature_size: int = 16,
        norm_name: str = "instance",
        feature_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        probe = self._probe(encoder, tuple(img_size))
        levels = probe["levels"]
        self.feature_indices = list(feature_indices or _skip_indices(probe["num_maps"], levels))
        if len(self.feature_indices) != levels - 1:
            raise ConfigError(
                f"unetr: patch size {2**levels} needs {levels - 1} feature_indices, got"
                f" {self.feature_indices}"
            )
        cin, hid, f = probe["in_channels"], probe["hidden"], feature_size
        self.stem = UnetrBasicBlock(3, cin, f, 3, 1, norm_name, res_block=True)
        self.skips = nn.ModuleList(
            UnetrPrUpBlock(
                spatial_dims=3,
                in_channels=hid,
                out_channels=f * 2**j,
                num_layer=levels - j - 1,
                kernel_size=3,
                stride=1,
                upsample_kernel_size=2,
                norm_name=norm_name,
                conv_block=True,
                res_block=True,
            )
            for j in range(1, levels)
        )
        widths = [f * 2**j for j in range(levels)] + [hid]
        self.ups = nn.ModuleList(
            UnetrUpBlock(3, widths[j + 1], widths[j], 3, 2, norm_name, res_block=True)
            for j in reversed(range(levels))
        )
        self.out = UnetOutBlock(3, f, out_channels)

    @staticmethod
    def _probe(encoder: nn.Module, img_size: tuple[int, int, int]) -> dict[str, int]:
        cin = _in_channels(encoder)
        with torch.no_grad():
            feats = encoder.forward_features(torch.zeros(1, cin, *img_size))
        grid = feats["bottleneck"].shape[2:]
        ratios = {s // g for s, g in zip(img_size, grid)}
        patch = ratios.pop() if len(ratios) == 1 else 0
        if patch < 2 or patch & (patch - 1) or any(s % patch for s in img_size):
            raise ConfigError(
                f"unetr: needs a power-of-two cubic patch size dividing img_size {img_size}; the"
                f" encoder maps it to a grid {tuple(grid)}"
            )
        return {
            "in_channels": cin,
            "hidden": feats["bottleneck"].shape[1],
            "levels": int(math.log2(patch)),
            "num_maps": len(feats["features"]),
        }

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, D, H, W) -> logits (B, out_channels, D, H, W)."""
        feats = self.encoder.forward_features(x)
        maps = [feats["features"][i] for i in self.feature_indices]
        skips = [self.stem(x)] + [block(m) for block, m in zip(self.skips, maps)]
        y = feats["bottleneck"]
        for up, skip in zip(self.ups, reversed(skips)):
            y = up(y, skip)
        return self.out(y)


def _in_channels(encoder: nn.Module) -> int:
    """Input channels of `encoder`: its config's `in_channels`, else its first conv's."""
    cin = getattr(encoder, "config", {}).get("in_channels")
    if cin is None:
        conv = next((m for m in encoder.modules() if isinstance(m, nn.Conv3d)), None)
        cin = conv.in_channels if conv is not None else 1
    return int(cin)


def default_decoder(encoder: nn.Module) -> str:
    """`swin_unetr` for a Swin encoder, `unetr` otherwise."""
    return (
        "swin_unetr" if any(isinstance(m, SwinTransformer) for m in encoder.modules()) else "unetr"
    )
