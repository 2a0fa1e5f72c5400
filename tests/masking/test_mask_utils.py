import pytest
import torch

from medmim.errors import ConfigError
from medmim.masking.utils import (
    check_grid,
    mask_to_voxels,
    num_masked,
    ranks_of,
    upsample_mask,
)


def test_num_masked_roundings() -> None:
    assert num_masked(0.7, 216, "ceil") == 152  # SMIT: ceil(151.2)
    assert num_masked(0.7, 216, "floor") == 151  # AttMask: int(151.2)
    assert num_masked(0.7, 10, "ceil") == 7  # 0.7 * 10 = 7.000000000000001 in floats
    assert num_masked(0.25, 10, "round") == 2
    assert num_masked(0.29, 100, "floor") == 28  # int(28.999999999999996), as iBOT / AttMask
    assert (
        num_masked(0.55, 500, "floor_visible") == 276
    )  # PUMIT: 500 - int(500 * 0.44999999999999996)
    assert num_masked(0.55, 500, "ceil") == 275 and num_masked(0.55, 100, "floor_visible") == 56
    assert num_masked(0.0, 216) == 0 and num_masked(1.0, 216) == 216
    with pytest.raises(ConfigError, match="rounding"):
        num_masked(0.5, 10, "up")


@pytest.mark.parametrize("factor", [2, (2, 3, 1), (8, 8, 4)])
def test_upsample_mask_matches_nearest_indexing(factor) -> None:
    mask = torch.rand(2, 3, 4, 5) > 0.5
    up = upsample_mask(mask, factor)
    f = (factor,) * 3 if isinstance(factor, int) else factor
    assert up.shape == (2, 3 * f[0], 4 * f[1], 5 * f[2]) and up.dtype == torch.bool
    i = torch.arange(up.shape[1])[:, None, None] // f[0]
    j = torch.arange(up.shape[2])[None, :, None] // f[1]
    k = torch.arange(up.shape[3])[None, None, :] // f[2]
    assert torch.equal(up, mask[:, i, j, k])


def test_upsample_keeps_channel_axis_and_rejects_bad_input() -> None:
    assert upsample_mask(torch.zeros(1, 1, 2, 2, 2), 4).shape == (1, 1, 8, 8, 8)
    with pytest.raises(ValueError, match="factor"):
        upsample_mask(torch.zeros(1, 2, 2, 2), (2, 2))
    with pytest.raises(ValueError, match="mask must be"):
        upsample_mask(torch.zeros(2, 2, 2), 2)


def test_mask_to_voxels_non_cubic() -> None:
    mask = torch.zeros(2, 6, 6, 2, dtype=torch.bool)
    mask[0, 1, 2, 1] = True
    vox = mask_to_voxels(mask, (96, 96, 32))
    assert vox.shape == (2, 1, 96, 96, 32)
    assert int(vox.sum()) == 16 * 16 * 16
    assert bool(vox[0, 0, 16:32, 32:48, 16:32].all())
    with pytest.raises(ValueError, match="multiple of the masking grid"):
        mask_to_voxels(mask, (96, 95, 32))


def test_ranks_are_a_permutation_and_order_scores() -> None:
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.9]])
    assert ranks_of(scores, descending=True).tolist() == [[3, 1, 2, 0]]
    assert ranks_of(scores, descending=False).tolist() == [[0, 2, 1, 3]]


def test_check_grid() -> None:
    assert check_grid([6, 6, 2]) == (6, 6, 2)
    with pytest.raises(ValueError, match="three positive"):
        check_grid((6, 0, 2))
