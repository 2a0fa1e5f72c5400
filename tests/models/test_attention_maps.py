"""attention_to_volume: orientation, interpolation, normalisation, errors."""

from __future__ import annotations

import pytest
import torch

from medmim.errors import ConfigError
from medmim.models.attention_maps import attention_to_volume, features_to_volume


def test_nearest_puts_each_token_on_its_own_block_row_major() -> None:
    grid, size = (2, 3, 4), (8, 12, 8)
    attn = torch.zeros(1, 24)
    attn[0, 1 * 12 + 2 * 4 + 3] = 1.0  # token (1, 2, 3)
    vol = attention_to_volume(attn, grid, size, mode="nearest")
    assert vol.shape == (1, 8, 12, 8)
    assert torch.equal(vol[0, 4:8, 8:12, 6:8], torch.ones(4, 4, 2))
    assert float(vol.sum()) == 4 * 4 * 2


def test_normalisations() -> None:
    attn = torch.softmax(torch.randn(3, 8), dim=1)
    vol = attention_to_volume(attn, (2, 2, 2), (16, 16, 16), normalize="sum")
    torch.testing.assert_close(vol.flatten(1).sum(1), torch.ones(3))
    mm = attention_to_volume(attn, (2, 2, 2), (16, 16, 16), normalize="minmax")
    assert torch.equal(mm.flatten(1).amin(1), torch.zeros(3)) and torch.equal(
        mm.flatten(1).amax(1), torch.ones(3)
    )
    mx = attention_to_volume(attn, (2, 2, 2), (16, 16, 16), mode="nearest", normalize="max")
    torch.testing.assert_close(mx.flatten(1).amax(1), torch.ones(3))
    const = attention_to_volume(torch.full((8,), 0.125), (2, 2, 2), (4, 4, 4), normalize="minmax")
    assert const.shape == (4, 4, 4) and torch.equal(const, torch.zeros(4, 4, 4))


def test_trilinear_keeps_constants_and_range() -> None:
    vol = attention_to_volume(torch.full((1, 12), 0.25), (3, 2, 2), (12, 8, 8))
    torch.testing.assert_close(vol, torch.full((1, 12, 8, 8), 0.25))
    attn = torch.rand(2, 12)
    vol = attention_to_volume(attn, (3, 2, 2), (12, 8, 8))
    assert vol.min() >= attn.min() - 1e-6 and vol.max() <= attn.max() + 1e-6


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"does not fit grid \(2, 2, 2\)"):
        attention_to_volume(torch.rand(1, 7), (2, 2, 2), (4, 4, 4))
    with pytest.raises(ConfigError, match="Did you mean 'nearest'"):
        attention_to_volume(torch.rand(1, 8), (2, 2, 2), (4, 4, 4), mode="neares")
    with pytest.raises(ConfigError, match="sa_depth=0"):
        features_to_volume({"patch": torch.rand(1, 8, 4), "grid": (2, 2, 2)}, (4, 4, 4))


def test_features_to_volume_on_a_swin() -> None:
    from medmim.models.swin import SwinEncoder

    enc = SwinEncoder(embed_dim=12, depths=(1, 1, 1, 1), num_heads=(3, 3, 3, 3)).eval()
    x = torch.randn(1, 1, 64, 32, 32)
    with torch.no_grad():
        vol = features_to_volume(enc.forward_features(x), x.shape[2:])
    assert vol.shape == (1, 64, 32, 32) and float(vol.min()) == 0.0 and float(vol.max()) == 1.0
