"""SwinEncoder: MONAI parity, mask token, SA stage selection, pooling switch, gradients."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets.swin_unetr import SwinTransformer

from medmim.errors import ConfigError
from medmim.models.swin import SwinEncoder
from medmim.registry import BACKBONES

TINY = {"embed_dim": 12, "depths": (1, 1, 1, 1), "num_heads": (3, 3, 3, 3)}


def tiny(**kw) -> SwinEncoder:
    return SwinEncoder(**{**TINY, **kw}).eval()


def monai_twin(enc: SwinEncoder) -> SwinTransformer:
    """A bare MONAI SwinTransformer of the same size holding the encoder's Swin weights."""
    c = enc.config
    ref = SwinTransformer(
        in_chans=c["in_channels"],
        embed_dim=c["embed_dim"],
        window_size=(4, 4, 4),
        patch_size=(2, 2, 2),
        depths=c["depths"],
        num_heads=c["num_heads"],
        use_flash_attention=True,
    )
    ref.load_state_dict(enc.swinViT.state_dict(), strict=True)
    return ref.eval()


@pytest.mark.parametrize("mask_kind", ["none", "all_false"])
def test_unmasked_wrapper_reproduces_monai_stage_outputs_exactly(mask_kind: str) -> None:
    enc = tiny(in_channels=2)
    x = torch.randn(1, 2, 64, 32, 32)
    mask = (
        None if mask_kind == "none" else torch.zeros(1, *enc.mask_grid(x.shape), dtype=torch.bool)
    )
    ref = monai_twin(enc)
    with torch.no_grad():
        out = enc.forward_features(x, mask)
        ours, theirs = out["features"], ref(x, normalize=True)
    assert torch.equal(
        ref.proj_out(out["bottleneck"], normalize=True), theirs[4]
    )  # raw stage-4 map
    assert len(ours) == 5
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "stage,grid,width",
    [(1, (16, 16, 8), 24), (2, (8, 8, 4), 48), (3, (4, 4, 2), 96), (4, (2, 2, 1), 192)],
)
def test_sa_stage_sets_grid_tokens_and_mask_cell(stage: int, grid: tuple, width: int) -> None:
    enc = tiny(sa_stage=stage, pool_stage=4)
    x = torch.randn(1, 1, 64, 64, 32)
    assert enc.mask_grid(x.shape) == grid and enc.mask_cell == 2 * 2**stage
    out = enc.forward_features(x)
    n = grid[0] * grid[1] * grid[2]
    assert out["grid"] == grid
    assert out["patch"].shape == (1, n, width) and out["cls"].shape == (1, width)
    assert out["attn"].shape == (1, n) and out["pooled"].shape == (1, 192)
    assert out["bottleneck"].shape == (1, 192, 2, 2, 1)


def test_mask_token_replaces_embeddings_of_masked_cells_only() -> None:
    enc = tiny()
    x = torch.randn(2, 1, 64, 64, 32)
    mask = torch.zeros(2, 4, 4, 2, dtype=torch.bool)
    mask[0, 1, 2, 0] = mask[1, 3, 0, 1] = True
    emb, ref = enc.embed(x, mask), enc.swinViT.patch_embed(x)
    cell = mask.repeat_interleave(8, 1).repeat_interleave(8, 2).repeat_interleave(8, 3)
    assert int(cell.sum()) == 2 * 8**3
    token = enc.mask_token.view(12)
    assert torch.equal(emb.permute(0, 2, 3, 4, 1)[cell], token.expand(2 * 8**3, 12))
    assert torch.equal(emb.permute(0, 2, 3, 4, 1)[~cell], ref.permute(0, 2, 3, 4, 1)[~cell])
    assert torch.equal(emb[0, :, 8:16, 16:24, 0:8], token.view(12, 1, 1, 1).expand(12, 8, 8, 8))


def test_pool_stage_switch_paper_vs_code() -> None:
    x = torch.randn(1, 1, 32, 32, 32)
    paper, code = tiny(pool_stage=4), tiny(pool_stage=3)
    out = code.forward_features(x)
    assert code.pool_norm is None
    torch.testing.assert_close(out["pooled"], out["patch"].mean(1))
    assert paper.forward_features(x)["pooled"].shape == (1, 192)
    assert paper.feature_dims == {"patch": 96, "cls": 96, "pooled": 192, "bottleneck": 192}


def test_without_sa_block_there_is_no_cls_or_attn() -> None:
    enc = tiny(sa_depth=0)
    out = enc.forward_features(torch.randn(1, 1, 32, 32, 32))
    assert "cls" not in out and "attn" not in out and out["patch"].shape == (1, 8, 96)
    assert not any(n.startswith("sa.") for n, _ in enc.named_parameters())


def test_gradients_flow_only_where_they_should() -> None:
    enc = tiny().train()
    x = torch.randn(1, 1, 32, 32, 32)
    enc.forward_features(x)["bottleneck"].square().mean().backward()
    assert all(
        p.grad is None
        for n, p in enc.named_parameters()
        if n.startswith("sa.") or n.startswith("norm.")
    )
    assert enc.mask_token.grad is None  # no mask given: the token is not used
    assert enc.swinViT.layers4[0].blocks[0].attn.qkv.weight.grad is not None
    enc.zero_grad(set_to_none=True)
    mask = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    mask[0, 0, 0, 0] = True
    out = enc.forward_features(x, mask)
    (out["cls"].square().mean() + out["attn"].square().mean()).backward()
    assert enc.mask_token.grad is not None and enc.mask_token.grad.abs().sum() > 0
    assert enc.sa.cls_token.grad.abs().sum() > 0
    assert all(
        p.grad is None for p in enc.swinViT.layers4.parameters()
    )  # stage 4 is not under the SA


def test_activation_checkpointing_gives_identical_results() -> None:
    torch.manual_seed(1)
    enc = tiny()
    x = torch.randn(1, 1, 32, 32, 32)
    enc.forward_features(x)["pooled"].sum().backward()
    grads = {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}
    enc.zero_grad(set_to_none=True)
    enc.set_grad_checkpointing(True)
    assert all(b.use_checkpoint for b in enc.swinViT.layers2[0].blocks)
    enc.forward_features(x)["pooled"].sum().backward()
    for n, g in grads.items():
        torch.testing.assert_close(dict(enc.named_parameters())[n].grad, g, atol=1e-6, rtol=1e-5)


def test_bad_inputs_name_the_problem_and_the_fix() -> None:
    enc = tiny()
    with pytest.raises(ValueError, match=r"divisible by 32.*\(64, 64, 32\)"):
        enc.forward_features(torch.randn(1, 1, 60, 64, 40))
    with pytest.raises(ValueError, match="2 channels.*in_channels=1"):
        enc.forward_features(torch.randn(1, 2, 32, 32, 32))
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 2\)"):
        enc.forward_features(
            torch.randn(1, 1, 32, 32, 32), torch.zeros(1, 16, 16, 16, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="bool"):
        enc.forward_features(torch.randn(1, 1, 32, 32, 32), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ConfigError, match="sa_stage=5"):
        tiny(sa_stage=5)
    with pytest.raises(ConfigError, match="Did you mean 'sa_stage'"):
        BACKBONES.build({"name": "swin_demo", "sa_stag": 2})


def test_config_rebuilds_and_swinunetr_kwargs() -> None:
    enc = BACKBONES.build({"name": "swin_demo", "embed_dim": 12, "in_channels": 2})
    assert enc.config["name"] == "swin" and enc.config["depths"] == [2, 2, 2, 2]
    again = BACKBONES.build(enc.config)
    assert again.config == enc.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in enc.state_dict().items()
    }
    kw = enc.swinunetr_kwargs()
    assert kw["feature_size"] == 12 and kw["in_channels"] == 2 and kw["num_heads"] == [3, 3, 6, 12]
