import math
import random

import numpy as np
import pytest
import torch
from scipy import ndimage

from medmim.errors import ConfigError
from medmim.masking.blockwise import BlockwiseMasker, default_min_cells
from medmim.masking.random import RandomMasker
from medmim.registry import MASKERS

GRIDS = [(6, 6, 6), (12, 12, 4), (6, 6, 2), (4, 7, 5)]


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5])
def test_count_never_exceeds_target_and_exact_mode_hits_it(grid, ratio) -> None:
    target = int(ratio * math.prod(grid))  # iBOT / AttMask: int(), float rounding included
    gen = torch.Generator().manual_seed(0)
    counts = BlockwiseMasker(ratio=ratio)(grid, 16, generator=gen).mask.flatten(1).sum(1)
    assert counts.max() <= target
    assert counts.float().mean() >= 0.9 * target  # blocks fill the target, also on thin grids
    exact = BlockwiseMasker(ratio=ratio, exact=True)(grid, 16, generator=gen)
    assert exact.mask.shape == (16, *grid)
    assert exact.mask.flatten(1).sum(1).tolist() == [target] * 16


def test_masks_are_blocky() -> None:
    grid, ratio = (12, 12, 12), 0.3
    block = BlockwiseMasker(ratio=ratio)(grid, 8).mask.numpy()
    rand = RandomMasker(ratio=ratio, rounding="floor")(grid, 8).mask.numpy()

    def mean_component(masks: np.ndarray) -> float:
        sizes = []
        for m in masks:
            labels, n = ndimage.label(m)  # face connectivity
            sizes += np.bincount(labels.ravel())[1:].tolist()
        return float(np.mean(sizes))

    assert mean_component(block) > 20.0
    assert mean_component(block) > 5 * mean_component(rand)


def test_first_block_is_a_cuboid() -> None:
    masker = BlockwiseMasker(ratio=0.5)
    rng = random.Random(3)
    for _ in range(20):
        mask = np.zeros((6, 6, 6), dtype=bool)
        added = masker._add_block(mask, low=8, remaining=40, rng=rng)
        assert 0 < added <= 40 and int(mask.sum()) == added
        idx = np.argwhere(mask)
        box = np.prod(idx.max(0) - idx.min(0) + 1)
        assert box == added
        assert (idx.max(0) - idx.min(0) + 1 < 6).all()  # no side spans the grid (iBOT's rule)


def test_ibot_ratio_draw_zero_or_uniform() -> None:
    masker = BlockwiseMasker(ratio=None, ratio_range=(0.1, 0.5), zero_prob=0.5, exact=True)
    out = masker((6, 6, 6), 400, generator=torch.Generator().manual_seed(0))
    counts = out.mask.flatten(1).sum(1)
    zeros = (counts == 0).float().mean()
    assert 0.4 < zeros < 0.6
    nonzero = counts[counts > 0]
    assert nonzero.min() >= int(0.1 * 216) and nonzero.max() <= int(0.5 * 216)
    assert 0.1 < out.ratio < 0.2  # mean of 0 (half) and U(0.1, 0.5) (half) ~ 0.15


def test_reproducible_and_registered() -> None:
    masker = MASKERS.build({"name": "blockwise", "ratio": 0.4})
    a = masker((6, 6, 6), 3, generator=torch.Generator().manual_seed(5)).mask
    b = masker((6, 6, 6), 3, generator=torch.Generator().manual_seed(5)).mask
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])
    with pytest.raises(ConfigError, match="ratio_range"):
        BlockwiseMasker(ratio_range=(0.5, 0.1))


def test_target_is_int_of_ratio_times_n_as_the_official_code() -> None:
    assert 0.29 * 100 == 28.999999999999996  # int() gives 28, a tolerance would give 29
    out = BlockwiseMasker(ratio=0.29, exact=True)(
        (4, 5, 5), 3, generator=torch.Generator().manual_seed(0)
    )
    assert out.mask.flatten(1).sum(1).tolist() == [28] * 3


def test_default_min_cells_is_ibots_on_a_one_slice_grid() -> None:
    """iBOT: min_num_patches = (min(H, W) // 3)^2 = 16 on 14 x 14; a 1 x 14 x 14 grid
    is that grid.
    """
    assert default_min_cells((1, 14, 14)) == 16 and default_min_cells((14, 1, 14)) == 16
    assert default_min_cells((6, 6, 6)) == 8 and default_min_cells((12, 12, 4)) == 1
    assert default_min_cells((1, 1, 1)) == 1 and default_min_cells((1, 1, 9)) == 3
    lows: list[int] = []

    class Spy(BlockwiseMasker):
        def _add_block(self, mask, low, remaining, rng):  # type: ignore[no-untyped-def]
            lows.append(low)
            return super()._add_block(mask, low, remaining, rng)

    Spy(ratio=0.4)((1, 14, 14), 2, generator=torch.Generator().manual_seed(0))
    assert lows and set(lows) == {16}
    lows.clear()
    Spy(ratio=0.4, min_cells=4)((1, 14, 14), 1, generator=torch.Generator().manual_seed(0))
    assert set(lows) == {4}
