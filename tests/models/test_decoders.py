"""Decoders: output shapes, strict weight loading into MONAI SwinUNETR, UNETR on the 3D ViT."""

from __future__ import annotations

import pytest
import torch

from medmim.errors import ConfigError
from medmim.models.decoders import (
    UNETRDecoder,
    _skip_indices,
    default_decoder,
    find_swin,
    swin_hyperparameters,
)
from medmim.registry import BACKBONES, DECODERS

TINY_SWIN = {"name": "swin", "embed_dim": 12, "depths": [2, 1, 1, 1], "num_heads": [3, 3, 3, 3]}
TINY_VIT = {
    "name": "vit",
    "embed_dim": 24,
    "depth": 4,
    "num_heads": 2,
    "patch_size": 8,
    "pos_grid": [4, 4, 4],
}


@pytest.mark.slow
def test_swin_unetr_loads_encoder_weights_strictly_and_segments() -> None:
    enc = BACKBONES.build(TINY_SWIN)
    model = DECODERS.build({"name": "swin_unetr", "out_channels": 3}, encoder=enc)
    src, dst = enc.swinViT.state_dict(), model.swinViT.state_dict()
    assert src.keys() == dst.keys()
    assert all(torch.equal(src[k], dst[k]) for k in src)
    x = torch.randn(1, 1, 64, 64, 64)  # instance norm needs > 1 voxel at the 1/32 bottleneck
    with torch.no_grad():
        ours = enc.forward_features(x)["features"]
        theirs = model.swinViT(x, normalize=True)
        assert len(ours) == len(theirs) == 5
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, theirs))
        assert model(x).shape == (1, 3, 64, 64, 64)


def test_swin_hyperparameters_agree_with_the_encoders_own_kwargs() -> None:
    enc = BACKBONES.build(TINY_SWIN)
    hp = swin_hyperparameters(find_swin(enc))
    assert hp["depths"] == (2, 1, 1, 1) and hp["num_heads"] == (3, 3, 3, 3)
    assert hp["feature_size"] == 12 and hp["patch_size"] == 2 and hp["window_size"] == (4, 4, 4)
    assert hp["downsample"] == "merging" and hp["qkv_bias"] is True
    theirs = enc.swinunetr_kwargs()
    for key in ("feature_size", "patch_size", "mlp_ratio", "qkv_bias", "patch_norm", "in_channels"):
        assert hp[key] == theirs[key], key


def test_swin_unetr_rejects_embed_not_divisible_by_12() -> None:
    enc = BACKBONES.build({**TINY_SWIN, "embed_dim": 16, "num_heads": [2, 2, 2, 2]})
    with pytest.raises(ConfigError, match="divisible by 12"):
        DECODERS.build({"name": "swin_unetr", "out_channels": 2}, encoder=enc)


def test_swin_unetr_needs_a_swin() -> None:
    with pytest.raises(ConfigError, match="Use decoder 'unetr'"):
        DECODERS.build({"name": "swin_unetr", "out_channels": 2}, encoder=BACKBONES.build(TINY_VIT))


def test_unetr_shapes_and_gradients_reach_the_encoder() -> None:
    enc = BACKBONES.build(TINY_VIT)
    spec = {"name": "unetr", "out_channels": 4, "img_size": [32, 32, 32], "feature_size": 8}
    model = DECODERS.build(spec, encoder=enc)
    assert isinstance(model, UNETRDecoder)
    assert model.feature_indices == [0, 2]  # patch 8 -> 3 levels -> 2 skips from 4 maps
    y = model(torch.randn(2, 1, 32, 32, 32))
    assert y.shape == (2, 4, 32, 32, 32)
    y.mean().backward()
    assert enc.patch_embed.weight.grad is not None and enc.patch_embed.weight.grad.abs().sum() > 0


def test_unetr_skip_choice_matches_the_unetr_paper() -> None:
    assert _skip_indices(12, 4) == [2, 5, 8]  # z3, z6, z9 of a 12-block ViT-B/16
    assert _skip_indices(4, 4) == [0, 1, 2]  # ViTEncoder's default maps: blocks 3, 6, 9, 12


def test_unetr_rejects_wrong_feature_indices_and_patch() -> None:
    enc = BACKBONES.build(TINY_VIT)
    with pytest.raises(ConfigError, match="needs 2 feature_indices"):
        UNETRDecoder(enc, 2, img_size=(32, 32, 32), feature_indices=[1])
    with pytest.raises(ConfigError, match="power-of-two"):
        UNETRDecoder(BACKBONES.build({**TINY_VIT, "patch_size": 6}), 2, img_size=(36, 36, 36))


def test_default_decoder() -> None:
    assert default_decoder(BACKBONES.build(TINY_SWIN)) == "swin_unetr"
    assert default_decoder(BACKBONES.build(TINY_VIT)) == "unetr"
