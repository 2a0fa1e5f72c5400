"""Random cell masking (SMIT, Jiang et al. 2022, section 2): an exact number of cells per sample.

Each sample gets its own random set of exactly `num_masked(ratio, N)` cells (ceil(0.7 * 216) =
152 on a 6^3 grid, as SMIT's MaskGenerator). One call is one view: call it once per view for
independent masks per sample and per view.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from medmim.masking.utils import (
    Grid,
    Masker,
    check_grid,
    check_ratio,
    check_rounding,
    num_masked,
    random_cells,
)
from medmim.registry import MASKERS
from medmim.types import MaskOutput


@MASKERS.register("random")
class RandomMasker(Masker):
    """Mask exactly `num_masked(ratio, d*h*w, rounding)` uniformly random cells per sample.

    SMIT eq. 1's mask m: a random binary vector with a fixed number of ones.

    Args:
        ratio: fraction of cells to mask, in [0, 1] (SMIT: 0.7).
        rounding: "ceil" (SMIT code, default), "floor" (iBOT's 'rand' mode, `int()`), "round"
            or "floor_visible" (PUMIT code: N - int(N (1 - r)) masked); see `num_masked`.

    Example:
        >>> masker = RandomMasker(ratio=0.7)
        >>> out = masker((6, 6, 6), batch_size=2)
        >>> out.mask.shape, int(out.mask[0].sum())
        (torch.Size([2, 6, 6, 6]), 152)
    """

    def __init__(self, ratio: float = 0.7, rounding: str = "ceil") -> None:
        self.ratio = check_ratio(ratio)
        self.rounding = check_rounding(rounding)

    def num_masked(self, grid: Sequence[int]) -> int:
        """Cells masked per sample on `grid`."""
        d, h, w = check_grid(grid)
        return num_masked(self.ratio, d * h * w, self.rounding)

    def draw(
        self,
        grid: Grid,
        batch_size: int,
        attn: Tensor | None,
        device: torch.device | str | None,
        generator: torch.Generator | None,
    ) -> MaskOutput:
        """One mask per sample; `hints` None, `ratio` = `self.ratio` (`attn` is ignored)."""
        d, h, w = grid
        k = num_masked(self.ratio, d * h * w, self.rounding)
        mask = random_cells(batch_size, d * h * w, k, generator, device)
        return MaskOutput(mask=mask.view(batch_size, d, h, w), hints=None, ratio=self.ratio)
