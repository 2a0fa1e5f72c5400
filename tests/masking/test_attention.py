import math

import pytest
import torch

from medmim.errors import ConfigError
from medmim.masking.attention import HighAttentionMasker, LowAttentionMasker
from medmim.registry import MASKERS

GRIDS = [(6, 6, 6), (4, 6, 3), (2, 5, 1)]


def top_set(attn: torch.Tensor, k: int, largest: bool = True) -> torch.Tensor:
    """Reference: the k highest (lowest) scores per row by argsort."""
    order = attn.argsort(dim=1, descending=largest)
    out = torch.zeros_like(attn, dtype=torch.bool)
    return out.scatter_(1, order[:, :k], True)


@pytest.mark.parametrize("grid", GRIDS)
def test_high_without_hints_masks_the_most_attended(grid) -> None:
    n = math.prod(grid)
    attn = torch.rand(3, n).softmax(-1)
    for rounding, k in (("ceil", math.ceil(0.7 * n - 1e-9)), ("floor", int(0.7 * n))):
        out = HighAttentionMasker(ratio=0.7, hints="none", rounding=rounding)(grid, 3, attn=attn)
        assert out.mask.shape == (3, *grid)
        assert torch.equal(out.mask.flatten(1), top_set(attn, k))
        assert not out.hints.any()


@pytest.mark.parametrize("grid", GRIDS)
def test_paper_hints_keep_the_top_s_unmasked(grid) -> None:
    n = math.prod(grid)
    attn = torch.rand(2, n)
    out = HighAttentionMasker(ratio=0.7, hints="paper", hint_ratio=0.1)(grid, 2, attn=attn)
    k, s = math.ceil(0.7 * n - 1e-9), math.ceil(0.1 * n - 1e-9)
    assert torch.equal(out.hints.flatten(1), top_set(attn, s))
    assert torch.equal(out.mask.flatten(1), top_set(attn, k) & ~top_set(attn, s))
    assert out.mask.flatten(1).sum(1).tolist() == [k - s] * 2  # 130 on 6^3
    assert not (out.mask & out.hints).any()


def test_smart_counts_on_the_6_cube() -> None:
    attn = torch.rand(4, 216)
    paper = HighAttentionMasker()((6, 6, 6), 4, attn=attn)
    assert paper.mask.flatten(1).sum(1).tolist() == [130] * 4  # ceil(151.2) - ceil(21.6)
    code = HighAttentionMasker(hints="code", rounding="floor")((6, 6, 6), 4, attn=attn)
    assert code.hints.flatten(1).sum(1).tolist() == [15] * 4  # int(0.1 * 0.7 * 216)
    assert code.mask.flatten(1).sum(1).tolist() == [136] * 4  # int(0.7 * 216) - 15


@pytest.mark.parametrize("grid", GRIDS[:2])
def test_code_hints_are_a_random_subset_of_the_top_10_percent(grid) -> None:
    n = math.prod(grid)
    attn = torch.rand(3, n)
    masker = HighAttentionMasker(ratio=0.7, hints="code", hint_ratio=0.1, rounding="floor")
    out = masker(grid, 3, attn=attn, generator=torch.Generator().manual_seed(0))
    pool, count, k = int(0.1 * n), int(0.1 * 0.7 * n), int(0.7 * n)
    hints = out.hints.flatten(1)
    assert hints.sum(1).tolist() == [count] * 3
    assert not (hints & ~top_set(attn, pool)).any()
    assert torch.equal(out.mask.flatten(1), top_set(attn, k) & ~hints)
    other = masker(grid, 3, attn=attn, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other.hints, out.hints)


@pytest.mark.parametrize("grid", GRIDS)
def test_low_masks_the_least_attended(grid) -> None:
    n = math.prod(grid)
    attn = torch.rand(3, n)
    out = LowAttentionMasker(ratio=0.4)(grid, 3, attn=attn)
    assert torch.equal(out.mask.flatten(1), top_set(attn, math.ceil(0.4 * n - 1e-9), largest=False))
    assert out.hints is None


def test_attmask_batch_ratio_and_masking_prob() -> None:
    attn = torch.rand(400, 216)
    masker = MASKERS.build(
        {"name": "attention_high", "hints": "none", "ratio_range": [0.1, 0.5], "masking_prob": 0.5}
    )
    out = masker((6, 6, 6), 400, attn=attn, generator=torch.Generator().manual_seed(0))
    assert 0.1 <= out.ratio <= 0.5
    counts = out.mask.flatten(1).sum(1)
    k = math.ceil(out.ratio * 216 - 1e-9)
    assert set(counts.tolist()) == {0, k}  # one ratio for the whole batch
    assert 0.4 < (counts == 0).float().mean() < 0.6
    low = LowAttentionMasker(ratio=0.5, masking_prob=0.0)((6, 6, 6), 4, attn=attn[:4])
    assert not low.mask.any()


def test_scores_in_bf16_and_errors() -> None:
    masker = HighAttentionMasker()
    out = masker((2, 2, 2), 1, attn=torch.arange(8.0)[None].bfloat16())
    assert out.hints.flatten().tolist() == [False] * 7 + [True]  # ceil(0.8) = 1 hint
    with pytest.raises(ValueError, match="needs the attention scores"):
        masker((2, 2, 2), 1)
    with pytest.raises(ValueError, match=r"attn must be \(B, N\) = \(1, 8\)"):
        masker((2, 2, 2), 1, attn=torch.rand(1, 9))
    with pytest.raises(ConfigError, match="smaller than 'ratio'"):
        HighAttentionMasker(ratio=0.1, hint_ratio=0.2)
    with pytest.raises(ConfigError, match="'hints' must be one of .* Did you mean 'paper'"):
        HighAttentionMasker(hints="papers")
