"""ViTEncoder: [CLS] attention against an explicit full-attention reference, masking, pos-embed."""

from __future__ import annotations

import pytest
import torch

from medmim.errors import ConfigError
from medmim.models.vit import VIT_PRESETS, ViTEncoder
from medmim.registry import BACKBONES


def tiny(**kw) -> ViTEncoder:
    return ViTEncoder(
        **{"embed_dim": 24, "depth": 2, "num_heads": 3, "pos_grid": (2, 2, 2), **kw}
    ).eval()


def test_last_block_cls_attention_matches_explicit_full_attention() -> None:
    vit = tiny()
    x = torch.randn(2, 1, 32, 48, 32)
    seen = {}

    def keep_input(module, args, output) -> None:
        seen["in"] = args[0]

    vit.blocks[-1].register_forward_hook(keep_input)
    with torch.no_grad():
        out = vit.forward_features(x)
        last = vit.blocks[-1]
        z = last.norm1(seen["in"])
        b, t, c = z.shape
        qkv = last.attn.qkv(z).reshape(b, t, 3, 3, c // 3).permute(2, 0, 3, 1, 4)
        full = torch.softmax(
            qkv[0] @ qkv[1].transpose(-2, -1) / (c // 3) ** 0.5, dim=-1
        )  # (B, h, T, T)
    assert out["grid"] == (2, 3, 2) and out["attn"].shape == (2, 12)
    torch.testing.assert_close(out["attn"], full[:, :, 0, 1:].mean(1), atol=1e-6, rtol=1e-5)
    assert (out["attn"].sum(1) < 1).all() and (out["attn"] > 0).all()


def test_shapes_on_non_cubic_input_with_two_channels() -> None:
    vit = tiny(in_channels=2)
    out = vit.forward_features(torch.randn(1, 2, 64, 32, 48))
    assert out["grid"] == (4, 2, 3)
    assert (
        out["patch"].shape == (1, 24, 24)
        and out["cls"].shape == (1, 24)
        and out["pooled"].shape == (1, 24)
    )
    assert out["bottleneck"].shape == (1, 24, 4, 2, 3)
    torch.testing.assert_close(out["bottleneck"].flatten(2).transpose(1, 2), out["patch"])
    assert [f.shape for f in out["features"]] == [(1, 24, 4, 2, 3)] * 2


def test_mask_token_is_inserted_before_position_embedding() -> None:
    vit = tiny()
    x = torch.randn(1, 1, 32, 32, 32)
    mask = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    mask[0, 1, 0, 1] = True  # row-major index 1*4 + 0*2 + 1 = 5
    tokens, plain = vit.embed(x, mask), vit.embed(x)
    pos = vit.position_embedding((2, 2, 2))[0]
    torch.testing.assert_close(tokens[0, 1 + 5], vit.mask_token[0, 0] + pos[5])
    keep = [i for i in range(9) if i != 6]
    assert torch.equal(tokens[0, keep], plain[0, keep])


def test_position_embedding_is_exact_on_its_grid_and_resized_elsewhere() -> None:
    vit = tiny(pos_grid=(2, 2, 2))
    assert torch.equal(vit.position_embedding((2, 2, 2)), vit.pos_embed.flatten(2).transpose(1, 2))
    with torch.no_grad():
        vit.pos_embed.fill_(0.5)
    assert vit.position_embedding((4, 3, 1)).shape == (1, 12, 24)
    torch.testing.assert_close(vit.position_embedding((4, 3, 1)), torch.full((1, 12, 24), 0.5))


def test_default_feature_blocks_and_presets() -> None:
    assert ViTEncoder(embed_dim=12, depth=12, num_heads=2).feature_blocks == (3, 6, 9, 12)
    assert VIT_PRESETS["vit_s16"]["embed_dim"] == 384 and VIT_PRESETS["vit_b16"]["num_heads"] == 12
    assert VIT_PRESETS["vit_smart"] == {
        "embed_dim": 768,
        "depth": 12,
        "num_heads": 8,
        "drop_path_rate": 0.1,
    }
    with pytest.raises(ConfigError, match="feature_blocks"):
        tiny(feature_blocks=(0, 2))
    with pytest.raises(ConfigError, match="not divisible by num_heads=5"):
        tiny(num_heads=5)


def test_checkpointing_matches_and_gradients_reach_tokens() -> None:
    vit = tiny().train()
    x = torch.randn(1, 1, 32, 32, 32)
    mask = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    mask[0, 0, 0, 0] = True
    out = vit.forward_features(x, mask)
    (out["cls"].square().mean() + out["patch"].mean()).backward()
    grads = {n: p.grad.clone() for n, p in vit.named_parameters()}
    assert grads["mask_token"].abs().sum() > 0 and grads["cls_token"].abs().sum() > 0
    vit.zero_grad(set_to_none=True)
    vit.set_grad_checkpointing(True)
    out = vit.forward_features(x, mask)
    (out["cls"].square().mean() + out["patch"].mean()).backward()
    for n, p in vit.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], atol=1e-6, rtol=1e-5)


def test_bad_input_and_build_spec() -> None:
    vit = tiny()
    with pytest.raises(ValueError, match="divisible by 16"):
        vit.forward_features(torch.randn(1, 1, 40, 32, 32))
    spec = BACKBONES.build({"name": "vit_demo", "depth": 1}).config
    assert spec["name"] == "vit" and spec["embed_dim"] == 192 and spec["depth"] == 1
