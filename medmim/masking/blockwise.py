"""iBOT block-wise masking (Zhou et al. 2022, after BEiT) generalised to a 3D grid.

Per sample and per view, with target T = int(ratio * N) cells (iBOT's 2D algorithm, one more
axis):

1. while fewer than T cells are masked, with R = T - masked remaining, try up to 10 times:
   volume V ~ U(low, R) (a reversed range when R < low, as iBOT tolerates), two log-uniform
   aspect ratios a1, a2 in [min_aspect, 1/min_aspect], block sides
   d = round((V a1)^(1/3)), h = round((V a2)^(1/3)), w = round(V / (d h)) (each >= 1),
   required to be smaller than the grid side (d < D, ...; a side of 1 is allowed on an axis
   of size 1); a random corner; accept the block if it adds between 1 and R new cells.
   iBOT rejects a block with too long a side (`fit_blocks=False`); by default such a side is
   clamped and the lost volume spread over the other axes, because on thin 3D grids (a
   192x192x64 crop gives 12x12x4 cells of 16^3) rejection often masks nothing at all.
2. stop when an attempt round adds nothing.

So the count never exceeds T and usually falls a little short; `exact=True` tops the mask up to
exactly T by growing the blocks into random face-neighbours (it stays blocky), then, only if no
neighbour is left, into random cells. `low` defaults to iBOT's (min(H, W) // 3)^2 over the axes
longer than one cell: (min(D, H, W) // 3)^3 on a 3D grid, (min(H, W) // 3)^2 = 16 on a 1 x 14 x 14
grid (iBOT's `min_num_patches=16`), at least 1 (`default_min_cells`).

The ratio per view is either fixed (`ratio=0.3`) or iBOT's ViT-S recipe: 0 with probability
`zero_prob` (0.5), else U(ratio_range) = U(0.1, 0.5), drawn per sample.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from medmim.errors import ConfigError
from medmim.masking.utils import Grid, Masker, check_ratio, host_scalar, num_masked
from medmim.registry import MASKERS
from medmim.types import MaskOutput


@MASKERS.register("blockwise")
class BlockwiseMasker(Masker):
    """Mask random 3D cuboids until `int(ratio * N)` cells are covered (iBOT, 3D).

    Args:
        ratio: a fixed ratio per view, or None to draw iBOT's {0 w.p. `zero_prob`, else
            U(`ratio_range`)} per sample.
        ratio_range: (low, high) of the uniform draw (iBOT ViT-S: 0.3 +- 0.2 = (0.1, 0.5)).
        zero_prob: probability that a view is left unmasked when drawing (iBOT: 0.5).
        min_cells: smallest block volume `low`; None = `default_min_cells(grid)`.
        min_aspect: aspect ratios are log-uniform in [min_aspect, 1 / min_aspect] (iBOT: 0.3).
        max_attempts: block attempts per round (iBOT: 10).
        exact: top the mask up to exactly int(ratio * N) cells (off by default, as iBOT).
        fit_blocks: clamp a block side that is too long for the grid and spread its volume over
            the other axes (default); False rejects the block, as iBOT's 2D code does, which
            often stalls at 0 on thin grids such as 6 x 6 x 2.

    Example:
        >>> masker = BlockwiseMasker(ratio=0.4, exact=True)
        >>> out = masker((6, 6, 6), batch_size=2)
        >>> [int(m.sum()) for m in out.mask]
        [86, 86]
    """

    def __init__(
        self,
        ratio: float | None = None,
        ratio_range: Sequence[float] = (0.1, 0.5),
        zero_prob: float = 0.5,
        min_cells: int | None = None,
        min_aspect: float = 0.3,
        max_attempts: int = 10,
        exact: bool = False,
        fit_blocks: bool = True,
    ) -> None:
        self.ratio = None if ratio is None else check_ratio(ratio)
        low, high = (float(r) for r in ratio_range)
        if not 0.0 <= low <= high <= 1.0:
            raise ConfigError(
                f"masker option 'ratio_range' must be 0 <= low <= high <= 1, got {ratio_range}"
            )
        self.ratio_range = (low, high)
        self.zero_prob = check_ratio(zero_prob, "zero_prob")
        if min_cells is not None and int(min_cells) < 1:
            raise ConfigError(f"masker option 'min_cells' must be >= 1, got {min_cells}")
        self.min_cells = min_cells
        if not 0.0 < min_aspect <= 1.0:
            raise ConfigError(f"masker option 'min_aspect' must lie in (0, 1], got {min_aspect}")
        self.log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))
        self.max_attempts = int(max_attempts)
        self.exact = bool(exact)
        self.fit_blocks = bool(fit_blocks)

    def draw_ratio(self, rng: random.Random) -> float:
        """The ratio of one view: fixed, or 0 w.p. `zero_prob` else U(ratio_range)."""
        if self.ratio is not None:
            return self.ratio
        if rng.random() < self.zero_prob:
            return 0.0
        return rng.uniform(*self.ratio_range)

    def draw(
        self,
        grid: Grid,
        batch_size: int,
        attn: Tensor | None,
        device: torch.device | str | None,
        generator: torch.Generator | None,
    ) -> MaskOutput:
        """One block mask per sample, drawn on the CPU by a Python RNG that `generator` seeds,
        then moved to `device`; `ratio` is the mean ratio asked for (`attn` is ignored).
        """
        seed = int(
            host_scalar(
                torch.randint(
                    0,
                    2**62,
                    (1,),
                    generator=generator,
                    device=generator.device if generator else None,
                )
            )
        )
        rng = random.Random(seed)
        ratios = [self.draw_ratio(rng) for _ in range(batch_size)]
        masks = (
            np.stack([self.sample(grid, r, rng) for r in ratios])
            if batch_size
            else np.zeros((0, *grid), bool)
        )
        mask = torch.from_numpy(masks).to(device)
        return MaskOutput(mask=mask, hints=None, ratio=float(np.mean(ratios)) if ratios else 0.0)

    def sample(self, grid: Sequence[int], ratio: float, rng: random.Random) -> np.ndarray:
        """One (d, h, w) bool mask with at most (exactly, if `exact`) int(ratio * N) cells."""
        mask = np.zeros(tuple(grid), dtype=bool)
        target = num_masked(ratio, mask.size, "floor")
        low = self.min_cells or default_min_cells(grid)
        count = 0
        while count < target:
            added = self._add_block(mask, low, target - count, rng)
            if added == 0:
                break
            count += added
        if self.exact and count < target:
            _grow(mask, target - count, rng)
        return mask

    def _add_block(self, mask: np.ndarray, low: int, remaining: int, rng: random.Random) -> int:
        """Try up to `max_attempts` cuboids; mark the first that adds 1..remaining cells."""
        D, H, W = mask.shape
        for _ in range(self.max_attempts):
            volume = rng.uniform(low, remaining)
            a1 = math.exp(rng.uniform(*self.log_aspect))
            a2 = math.exp(rng.uniform(*self.log_aspect))
            sides = _block_sides(volume, a1, a2, mask.shape, self.fit_blocks)
            if sides is None:
                continue
            d, h, w = sides
            z, y, x = rng.randint(0, D - d), rng.randint(0, H - h), rng.randint(0, W - w)
            block = mask[z : z + d, y : y + h, x : x + w]
            new = block.size - int(block.sum())
            if 0 < new <= remaining:
                block[...] = True
                return new
        return 0


def default_min_cells(grid: Sequence[int]) -> int:
    """IBOT's smallest block, (min(H, W) // 3)^2 on its 2D grid, over the k axes of `grid`
    longer than one cell: (min // 3)^k, at least 1 (8 for 6^3, 16 for 1 x 14 x 14).
    """
    sides = [int(g) for g in grid if g > 1]
    return max(1, (min(sides) // 3) ** len(sides)) if sides else 1


def _block_sides(
    volume: float, a1: float, a2: float, grid: Sequence[int], fit: bool
) -> tuple[int, int, int] | None:
    """Cuboid sides for `volume` and aspects a1, a2, each below its grid side (or None).

    iBOT in 3D: d = round((V a1)^(1/3)), h = round((V a2)^(1/3)), w = round(V / (d h)). A side
    must be < its grid side (1 allowed on an axis of size 1). Too long a side rejects the block
    unless `fit`, which clamps it and spreads the lost volume over the other axes.
    """
    limits = [max(g - 1, 1) for g in grid]
    d = max(1, round((volume * a1) ** (1 / 3)))
    h = max(1, round((volume * a2) ** (1 / 3)))
    sides = [float(d), float(h), float(max(1, round(volume / (d * h))))]
    if all(s <= lim for s, lim in zip(sides, limits)):
        return int(sides[0]), int(sides[1]), int(sides[2])
    if not fit:
        return None
    for _ in range(3):
        over = [i for i in range(3) if sides[i] > limits[i]]
        if not over:
            break
        for i in over:
            sides[i] = float(limits[i])
        free = [i for i in range(3) if sides[i] < limits[i]]
        if not free:
            break
        factor = (volume / math.prod(sides)) ** (1 / len(free))
        for i in free:
            sides[i] *= factor
    d, h, w = (int(min(max(round(s), 1), lim)) for s, lim in zip(sides, limits))
    return d, h, w


def _grow(mask: np.ndarray, missing: int, rng: random.Random) -> None:
    """Mask `missing` more cells in place, preferring face-neighbours of masked cells."""
    while missing > 0:
        border = np.zeros_like(mask)
        for axis in range(3):
            for shift in (1, -1):
                border |= _shifted(mask, axis, shift)
        candidates = np.flatnonzero(border & ~mask)
        if candidates.size == 0:
            candidates = np.flatnonzero(~mask)
        picks = rng.sample(list(candidates), min(missing, candidates.size))
        mask.flat[picks] = True
        missing -= len(picks)


def _shifted(mask: np.ndarray, axis: int, shift: int) -> np.ndarray:
    """`mask` moved by one cell along `axis` (no wrap-around)."""
    out = np.zeros_like(mask)
    src = [slice(None)] * 3
    dst = [slice(None)] * 3
    src[axis] = slice(0, -1) if shift > 0 else slice(1, None)
    dst[axis] = slice(1, None) if shift > 0 else slice(0, -1)
    out[tuple(dst)] = mask[tuple(src)]
    return out
