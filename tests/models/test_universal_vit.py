"""Universal ViT: Backbone contract, spacing-adaptive patches, mask token, rebuild from config."""

from __future__ import annotations

import pytest
import torch

from medmim.models.universal_vit import UniversalViT, resample_grid
from medmim.registry import BACKBONES

TINY = {"embed_dim": 24, "depth": 2, "num_heads": 2, "pos_embed_shape": (2, 2, 2)}


def test_contract_keys_shapes_and_rebuild() -> None:
    vit = BACKBONES.build({"name": "universal_vit", **TINY})
    x = torch.randn(2, 1, 32, 32, 16)
    out = vit.forward_features(x)
    assert out["grid"] == vit.mask_grid(x.shape) == (2, 2, 1)
    assert (
        out["patch"].shape == (2, 4, 24)
        and out["cls"].shape == (2, 24)
        and out["pooled"].shape == (2, 24)
    )
    assert out["bottleneck"].shape == (2, 24, 2, 2, 1)
    assert len(out["features"]) == 2 and out["features"][0].shape == (2, 24, 2, 2, 1)
    assert out["attn"].shape == (2, 4) and bool((out["attn"].sum(-1) <= 1 + 1e-6).all())
    torch.testing.assert_close(out["pooled"], out["patch"].mean(1))
    again = BACKBONES.build(vit.config)
    again.load_state_dict(vit.state_dict())
    torch.testing.assert_close(again.forward_features(x)["cls"], out["cls"])


@pytest.mark.parametrize("da", [0, 1, 2, 3, 4, 5])
def test_token_grid_is_the_same_for_every_da(da: int) -> None:
    vit = UniversalViT(**TINY)
    tz, tx = (1 if 2**da > 16 else 2), 2
    x = torch.randn(1, 1, tz * max(16 >> da, 1), 16 * tx, 16 * tx)
    spacing = (float(2**da) if da < 5 else 1e8, 1.0, 1.0)
    assert vit.forward_features(x, spacing=spacing)["grid"] == (tz, tx, tx)


def test_thick_slices_equal_repeated_slices_at_the_patch_embedding() -> None:
    vit = UniversalViT(**TINY).double()
    thick = torch.randn(1, 1, 8, 32, 32, dtype=torch.float64)
    a = vit.forward_features(thick, spacing=(2.0, 1.0, 1.0))["cls"]
    b = vit.forward_features(thick.repeat_interleave(2, dim=2), spacing=(1.0, 1.0, 1.0))["cls"]
    torch.testing.assert_close(a, b)


def test_2d_image_as_one_slice() -> None:
    vit = UniversalViT(**TINY)
    out = vit.forward_features(torch.randn(2, 1, 1, 32, 48))
    assert out["grid"] == (1, 2, 3) and out["patch"].shape == (2, 6, 24)


def test_mask_token_replaces_masked_patches_only() -> None:
    vit = UniversalViT(**TINY, pos_embed_on_mask=False).eval()
    x = torch.randn(1, 1, 16, 32, 32)
    mask = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    mask[0, 0, 0, 1] = True
    tokens, _ = vit.embed(x, mask)
    torch.testing.assert_close(tokens[0, 2], vit.mask_token[0, 0])  # index 1 + (0*2 + 1)
    plain, _ = vit.embed(x)
    torch.testing.assert_close(tokens[0, [0, 1, 3, 4]], plain[0, [0, 1, 3, 4]])
    x2 = x.clone()
    x2[..., :16, 16:] = 100.0  # change only the masked patch's voxels
    torch.testing.assert_close(
        vit.forward_features(x2, mask)["cls"], vit.forward_features(x, mask)["cls"]
    )


def test_errors_name_the_problem() -> None:
    vit = UniversalViT(**TINY)
    with pytest.raises(ValueError, match="not a multiple of the patch"):
        vit.forward_features(torch.randn(1, 1, 8, 32, 32))  # depth 8 at DA 0
    with pytest.raises(ValueError, match=r"expected \(B, 1, D, H, W\)"):
        vit.forward_features(torch.randn(1, 3, 16, 32, 32))
    with pytest.raises(ValueError, match="mask has shape"):
        vit.forward_features(
            torch.randn(1, 1, 16, 32, 32), torch.zeros(1, 2, 2, 2, dtype=torch.bool)
        )


def test_presets_and_pos_embed_resampling() -> None:
    assert {"uvit_b16", "uvit_demo"} <= set(BACKBONES.names())
    with torch.device("meta"):  # the paper size, without paying for its initialisation
        b16 = BACKBONES.build("uvit_b16")
    assert sum(p.numel() for p in b16.parameters()) > 80e6 and b16.config["embed_dim"] == 768
    table = torch.arange(4.0).view(1, 1, 1, 1, 4)
    assert resample_grid(table, (1, 1, 2)).flatten().tolist() == [0.5, 2.5]  # area when shrinking
    assert resample_grid(table, (1, 1, 4)) is table


def test_grad_checkpointing_gives_the_same_gradients() -> None:
    vit = UniversalViT(**TINY)
    x = torch.randn(1, 1, 16, 32, 32)
    vit.forward_features(x)["cls"].sum().backward()
    ref = vit.blocks[0].mlp.w1.weight.grad.clone()
    vit.zero_grad()
    vit.set_grad_checkpointing(True)
    vit.forward_features(x)["cls"].sum().backward()
    torch.testing.assert_close(vit.blocks[0].mlp.w1.weight.grad, ref)
