"""Contract over every registered masker: the call signature and the MaskOutput it returns."""

import pytest
import torch

from medmim.registry import MASKERS
from medmim.types import MaskOutput


@pytest.mark.parametrize("name", MASKERS.names())
@pytest.mark.parametrize("grid", [(6, 6, 6), (4, 6, 3)])
def test_masker_contract(name: str, grid: tuple[int, int, int]) -> None:
    masker = MASKERS.build(name)
    attn = torch.rand(3, grid[0] * grid[1] * grid[2]).softmax(-1)
    out = masker(grid, 3, attn=attn, device="cpu", generator=torch.Generator().manual_seed(0))
    assert isinstance(out, MaskOutput)
    assert out.mask.shape == (3, *grid) and out.mask.dtype == torch.bool
    assert out.ratio is not None and 0.0 <= out.ratio <= 1.0
    if out.hints is not None:
        assert out.hints.shape == out.mask.shape and out.hints.dtype == torch.bool
        assert not (out.hints & out.mask).any()
    again = masker(grid, 3, attn=attn, device="cpu", generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.mask, again.mask)  # reproducible from the generator
