"""Attention-guided masking on the [CLS]->patch attention scores (SMART, AttMask, MST).

The scores are a backbone's `attn` (B, N): SATT of SMART eq. 1 (the semantic-attention [CLS]
query against the N patch keys, averaged over heads), or the last ViT block's [CLS] row for
AttMask / MST. They come from the teacher on the (noisy) view that the mask is for. N = d*h*w,
row-major over the masking grid.

- `attention_high` (SMART section 3.2; AttMask-High / -Hint): mask the n_mask = ceil(r N) most
  attended tokens (r = 0.7) and leave some of them visible as *hints*:
  - `hints="paper"` (default; SMART's reading): the top s N tokens (s = 0.1) stay unmasked, so
    the ranks [s N, r N) are masked: 0.6 N tokens for r = 0.7 (deterministic).
  - `hints="code"` (AttMask `attmask_hint`, and the public SMART code): reveal int(s r N) tokens
    chosen uniformly at random among the top int(s N); about 0.63 N stay masked for r = 0.7.
  - `hints="none"`: AttMask-High.
  The AttMask code rounds n_mask with int(); `rounding="floor"` reproduces it.
- `attention_low` (MST / AttMask-Low): mask the n_mask least attended tokens.

Both take AttMask's batch options: `ratio_range=(0.1, 0.5)` draws one ratio per call (per batch)
instead of the fixed `ratio`, and `masking_prob=0.5` leaves each whole sample unmasked with
probability 1 - p (AttMask's defaults; SMART uses a fixed r and p = 1). `MaskOutput.hints` holds
the revealed tokens: the hint tokens that the top-r mask would have covered.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from medmim.errors import ConfigError, did_you_mean
from medmim.masking.utils import (
    Grid,
    Masker,
    check_grid,
    check_ratio,
    check_rounding,
    host_scalar,
    num_masked,
    rand,
    rank_mask,
    ranks_of,
)
from medmim.registry import MASKERS
from medmim.types import MaskOutput

HINT_MODES = ("paper", "code", "none")


class _AttentionMasker(Masker):
    """Shared options of the attention-guided maskers (see the module docstring)."""

    descending: bool = True

    def __init__(
        self,
        ratio: float,
        rounding: str,
        ratio_range: Sequence[float] | None,
        masking_prob: float,
    ) -> None:
        self.ratio = check_ratio(ratio)
        self.rounding = check_rounding(rounding)
        if ratio_range is not None:
            low, high = (float(r) for r in ratio_range)
            if not 0.0 <= low <= high <= 1.0:
                raise ConfigError(
                    f"masker option 'ratio_range' must be 0 <= low <= high <= 1, got {ratio_range}"
                )
            ratio_range = (low, high)
        self.ratio_range = ratio_range
        self.masking_prob = check_ratio(masking_prob, "masking_prob")

    def draw_ratio(self, generator: torch.Generator | None) -> float:
        """This batch's ratio: `ratio`, or U(ratio_range) drawn once per call (AttMask)."""
        if self.ratio_range is None:
            return self.ratio
        low, high = self.ratio_range
        return low + (high - low) * host_scalar(rand((1,), generator, None))

    def _scores(self, grid: Sequence[int], batch_size: int, attn: Tensor | None) -> Tensor:
        """Validate `attn` against the grid and batch; return it as float (B, N)."""
        d, h, w = check_grid(grid)
        if attn is None:
            raise ValueError(
                f"{type(self).__name__} needs the attention scores: call it with attn=(B, N)"
            )
        if attn.dim() != 2 or attn.shape != (batch_size, d * h * w):
            raise ValueError(
                f"attn must be (B, N) = ({batch_size}, {d * h * w}) for grid {(d, h, w)}, "
                f"got {tuple(attn.shape)}"
            )
        return attn.detach().float()

    def _gate(self, mask: Tensor, generator: torch.Generator | None) -> Tensor:
        """Unmask each whole sample with probability 1 - masking_prob (AttMask's get_mask)."""
        if self.masking_prob >= 1.0:
            return mask
        keep = rand((mask.shape[0], 1), generator, mask.device) < self.masking_prob
        return mask & keep


@MASKERS.register("attention_high")
class HighAttentionMasker(_AttentionMasker):
    """Mask the most attended tokens, with hints (SMART section 3.2, AttMask-High/-Hint).

    Args:
        ratio: r, the fraction of tokens masked before hints (SMART: 0.7).
        hints: "paper" (top s N kept, deterministic), "code" (random int(s r N) of the top
            int(s N) revealed, as AttMask-Hint and the SMART code) or "none" (AttMask-High).
        hint_ratio: s (SMART: 0.1; AttMask's show_max). The paper requires s < r.
        rounding: how r N (and, in "paper" mode, s N) become counts: "ceil" (default: at least a
            fraction r masked), "floor" (`int()`, the AttMask/SMART code) or "round".
        ratio_range: draw r ~ U(low, high) once per call instead (AttMask: (0.1, 0.5)).
        masking_prob: per-sample probability that the sample is masked at all (AttMask: 0.5).

    Example:
        >>> masker = HighAttentionMasker(ratio=0.7, hints="paper", hint_ratio=0.1)
        >>> attn = torch.rand(2, 216).softmax(-1)
        >>> out = masker((6, 6, 6), 2, attn=attn)
        >>> int(out.mask[0].sum()), int(out.hints[0].sum())   # 152 - 22, 22
        (130, 22)
    """

    def __init__(
        self,
        ratio: float = 0.7,
        hints: str = "paper",
        hint_ratio: float = 0.1,
        rounding: str = "ceil",
        ratio_range: Sequence[float] | None = None,
        masking_prob: float = 1.0,
    ) -> None:
        super().__init__(ratio, rounding, ratio_range, masking_prob)
        if hints not in HINT_MODES:
            raise ConfigError(
                f"masker option 'hints' must be one of {', '.join(HINT_MODES)}, got '{hints}'."
                f"{did_you_mean(hints, HINT_MODES)}"
            )
        self.hints = hints
        self.hint_ratio = check_ratio(hint_ratio, "hint_ratio")
        if hints == "paper" and ratio_range is None and self.hint_ratio >= self.ratio > 0:
            raise ConfigError(
                f"masker option 'hint_ratio' ({hint_ratio}) must be smaller than 'ratio' "
                f"({ratio}) in hints='paper' mode (SMART: s < r)"
            )

    def draw(
        self,
        grid: Grid,
        batch_size: int,
        attn: Tensor | None,
        device: torch.device | str | None,
        generator: torch.Generator | None,
    ) -> MaskOutput:
        """Mask the top-attended tokens of every sample (`attn` required; `generator` draws the
        random parts: ratio, gate, code hints). `hints` are the revealed tokens (all False for
        hints="none"); `ratio` is the r of this batch.
        """
        scores = self._scores(grid, batch_size, attn)
        n = scores.shape[1]
        r = self.draw_ratio(generator)
        ranks = ranks_of(scores, descending=True)
        top = rank_mask(ranks, 0, num_masked(r, n, self.rounding))
        if self.hints == "paper":
            shown = rank_mask(ranks, 0, num_masked(self.hint_ratio, n, self.rounding))
        elif self.hints == "code":
            shown = _random_hints(
                ranks,
                num_masked(self.hint_ratio, n, "floor"),
                num_masked(
                    self.hint_ratio * r, n, "floor"
                ),  # int(show_ratio N), show_ratio = show_max r
                generator,
            )
        else:
            shown = torch.zeros_like(top)
        top = self._gate(top, generator)
        hints = shown & top
        mask = top & ~shown
        shape = (batch_size, *grid)
        return MaskOutput(
            mask=mask.view(shape).to(device), hints=hints.view(shape).to(device), ratio=r
        )


def _random_hints(
    ranks: Tensor, pool: int, count: int, generator: torch.Generator | None
) -> Tensor:
    """`count` tokens per row chosen uniformly among the `pool` top-ranked ones (AttMask-Hint).

    Args:
        ranks: (B, N) descending ranks of the scores.
        pool: size of the top set (int(show_max N)).
        count: hints per row (int(show_ratio N)); more than `pool` is an error, as in AttMask.
        generator: source of the random choice (None: the global generator).

    Returns:
        (B, N) bool with `count` True per row, all within the top `pool`.
    """
    if count > pool:
        raise ConfigError(
            f"cannot reveal {count} hints out of the top {pool} tokens; lower 'hint_ratio'"
        )
    noise = rand(ranks.shape, generator, ranks.device)
    noise = noise.masked_fill(ranks >= pool, 2.0)  # outside the pool: never among the smallest
    return ranks_of(noise, descending=False) < count


@MASKERS.register("attention_low")
class LowAttentionMasker(_AttentionMasker):
    """Mask the least attended tokens (MST / AttMask-Low).

    AttMask-Low of the AttMask code; MST (Li et al. 2021) instead protects the top tokens and
    masks the rest at random, which this masker does not model.

    Args:
        ratio: fraction of tokens to mask.
        rounding: "ceil" (default), "floor" (`int()`, AttMask code) or "round".
        ratio_range: draw the ratio ~ U(low, high) once per call instead.
        masking_prob: per-sample probability that the sample is masked at all.

    Example:
        >>> out = LowAttentionMasker(ratio=0.5)((2, 2, 2), 1, attn=torch.arange(8.0)[None])
        >>> out.mask.flatten().tolist()
        [True, True, True, True, False, False, False, False]
    """

    def __init__(
        self,
        ratio: float = 0.7,
        rounding: str = "ceil",
        ratio_range: Sequence[float] | None = None,
        masking_prob: float = 1.0,
    ) -> None:
        super().__init__(ratio, rounding, ratio_range, masking_prob)

    def draw(
        self,
        grid: Grid,
        batch_size: int,
        attn: Tensor | None,
        device: torch.device | str | None,
        generator: torch.Generator | None,
    ) -> MaskOutput:
        """Mask the bottom-attended tokens of every sample (`attn` required)."""
        scores = self._scores(grid, batch_size, attn)
        r = self.draw_ratio(generator)
        ranks = ranks_of(scores, descending=False)
        mask = self._gate(
            rank_mask(ranks, 0, num_masked(r, scores.shape[1], self.rounding)), generator
        )
        return MaskOutput(mask=mask.view(batch_size, *grid).to(device), hints=None, ratio=r)
