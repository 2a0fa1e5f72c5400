"""The backbone contract (medmim.types), checked over every registered backbone.

Every entry is built small so that the file stays fast: a hierarchical backbone (one with
`depths`) gets embed_dim 12 and one block per stage, a plain ViT (one with `depth`) gets
embed_dim 48 and 2 blocks; heads are kept (12 and 48 divide by every preset's head counts). Other
backbones keep their defaults.
"""

from __future__ import annotations

import inspect
import json
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import nn

from medmim.eval.export import export, load_encoder
from medmim.registry import BACKBONES

NAMES = BACKBONES.names()


def tiny_overrides(factory: object) -> dict:
    """Small widths for a registered class or preset (presets expose the class as `.base`)."""
    params = inspect.signature(getattr(factory, "base", factory)).parameters
    if "depths" in params and "embed_dim" in params:
        return {"embed_dim": 12, "depths": [1, 1, 1, 1]}
    if "depth" in params and "embed_dim" in params:
        return {"embed_dim": 48, "depth": 2}
    return {}


@cache
def build(name: str, in_channels: int = 2) -> nn.Module:
    torch.manual_seed(0)
    overrides = tiny_overrides(BACKBONES.get(name))
    return BACKBONES.build({"name": name, **overrides, "in_channels": in_channels}).eval()


def inputs(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A non-cubic 2-channel input (1, 2, 64, 32, 32) and a mask with about half the cells set."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 64, 32, 32, generator=gen)
    grid = model.mask_grid(x.shape)
    mask = torch.rand(1, *grid, generator=gen) < 0.5
    mask[:, 0, 0, 0], mask[:, -1, -1, -1] = True, False
    return x, mask


@pytest.mark.parametrize("name", NAMES)
def test_outputs_keys_shapes_and_grid(name: str) -> None:
    model = build(name)
    x, mask = inputs(model)
    with torch.no_grad():
        out = model.forward_features(x, mask)
        cubic = model.forward_features(torch.randn(1, 2, 32, 32, 32))
    grid = model.mask_grid(x.shape)
    n = grid[0] * grid[1] * grid[2]
    assert {"patch", "pooled", "bottleneck", "features", "grid"} <= out.keys()
    assert out["grid"] == grid and cubic["grid"] == model.mask_grid((32, 32, 32))
    assert out["patch"].shape[:2] == (1, n) and out["patch"].ndim == 3
    assert out["pooled"].ndim == 2 and out["pooled"].shape[0] == 1
    assert out["bottleneck"].ndim == 5 and out["bottleneck"].shape[0] == 1
    sizes = [f.shape[2:].numel() for f in out["features"]]
    assert all(f.ndim == 5 and f.shape[0] == 1 for f in out["features"]) and sizes == sorted(
        sizes, reverse=True
    )
    if "cls" in out:
        assert out["cls"].ndim == 2 and out["cls"].shape[0] == 1
    if "attn" in out:  # [CLS]->patch probabilities without the [CLS] self slot: sum to <= 1
        attn = out["attn"]
        assert (
            attn.shape == (1, n)
            and (attn >= 0).all()
            and (attn.sum(1) <= 1 + 1e-5).all()
            and (attn.sum(1) > 0.5).all()
        )
    for value in out.values():
        for t in value if isinstance(value, list) else [value]:
            assert not isinstance(t, torch.Tensor) or torch.isfinite(t).all()


@pytest.mark.parametrize("name", NAMES)
def test_masked_cells_are_really_replaced(name: str) -> None:
    model = build(name)
    x, mask = inputs(model)
    cell = [s // g for s, g in zip(x.shape[2:], mask.shape[1:])]
    big = (
        mask.repeat_interleave(cell[0], 1)
        .repeat_interleave(cell[1], 2)
        .repeat_interleave(cell[2], 3)
    )
    inside = torch.where(big.unsqueeze(1), torch.randn_like(x) * 5, x)  # change only masked voxels
    outside = x.clone()
    outside[:, :, -1, -1, -1] += 5.0  # one voxel of an unmasked cell
    with torch.no_grad():
        ref, same, moved = (model.forward_features(v, mask) for v in (x, inside, outside))
    for key in ("patch", "pooled", "bottleneck", "cls", "attn"):
        if key in ref:
            assert torch.equal(ref[key], same[key]), key
    assert not torch.equal(ref["patch"], moved["patch"])


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter_and_the_mask_token_only_when_masking(name: str) -> None:
    model = build(name, in_channels=1)
    x = torch.randn(1, 1, 32, 32, 32)
    mask = torch.zeros(1, *model.mask_grid(x.shape), dtype=torch.bool)
    mask[0, 0, 0, 0] = True
    model.zero_grad(set_to_none=True)
    out = model.forward_features(x)
    sum(t.mean() for k, t in out.items() if k not in ("features", "grid")).backward()
    assert all(
        p.grad is None or not p.grad.any() for n, p in model.named_parameters() if "mask_token" in n
    )
    model.zero_grad(set_to_none=True)
    out = model.forward_features(x, mask)
    sum(t.mean() for k, t in out.items() if k not in ("features", "grid")).backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert missing == [], f"no gradient reaches {missing}"
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", NAMES)
def test_config_and_export_round_trip_give_identical_outputs(name: str, tmp_path: Path) -> None:
    model = build(name)
    spec = json.loads(json.dumps(model.config))
    assert spec == model.config and spec["in_channels"] == 2
    ckpt = {"encoder": model.state_dict(), "encoder_config": model.config, "config": {}, "step": 0}
    torch.save(ckpt, tmp_path / "last.ckpt")
    loaded, meta = load_encoder(export(tmp_path / "last.ckpt", tmp_path / "export"))
    assert meta["backbone"] == model.config and type(loaded) is type(model)
    x, mask = inputs(model)
    with torch.no_grad():
        a, b = model.forward_features(x, mask), loaded.forward_features(x, mask)
    assert a.keys() == b.keys()
    for key in a.keys() - {"features", "grid"}:
        assert torch.equal(a[key], b[key]), key
