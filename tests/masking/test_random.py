import math

import pytest
import torch

from medmim.errors import ConfigError
from medmim.masking.random import RandomMasker
from medmim.registry import MASKERS


@pytest.mark.parametrize("grid", [(6, 6, 6), (12, 12, 4), (3, 5, 7), (1, 1, 2)])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.7, 1.0])
def test_exact_count_per_sample(grid, ratio) -> None:
    out = RandomMasker(ratio=ratio)(grid, batch_size=5)
    n = math.prod(grid)
    assert out.mask.shape == (5, *grid) and out.mask.dtype == torch.bool
    counts = out.mask.flatten(1).sum(1)
    assert counts.tolist() == [math.ceil(round(ratio * n, 9))] * 5
    assert out.hints is None and out.ratio == ratio


def test_smit_count_and_floor_rounding() -> None:
    assert int(RandomMasker(0.7)((6, 6, 6), 1).mask.sum()) == 152
    assert int(RandomMasker(0.7, rounding="floor")((6, 6, 6), 1).mask.sum()) == 151


def test_independent_per_sample_and_reproducible_with_generator() -> None:
    masker = RandomMasker(0.5)
    out = masker((6, 6, 6), 4, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(out.mask[0], out.mask[1])
    again = masker((6, 6, 6), 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.mask, again.mask)


def test_cells_are_uniform() -> None:
    out = RandomMasker(0.25)((2, 2, 2), 4000)
    freq = out.mask.float().mean(0).flatten()
    assert torch.allclose(freq, torch.full_like(freq, 0.25), atol=0.03)


def test_registry_and_errors() -> None:
    masker = MASKERS.build({"name": "random", "ratio": 0.6})
    assert isinstance(masker, RandomMasker) and masker.num_masked((6, 6, 6)) == 130
    with pytest.raises(ConfigError, match="'ratio' must lie in"):
        RandomMasker(ratio=1.5)
    with pytest.raises(ConfigError, match="has no option 'ration'"):
        MASKERS.build({"name": "random", "ration": 0.6})
