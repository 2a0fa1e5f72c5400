"""Small helpers shared by the maskers: the `Masker` base (the call contract), counts, grid
checks, random draws, upsampling.

A mask lives on the *masking grid* (d, h, w) as a bool tensor (B, d, h, w), True = masked
(medmim.types.MaskOutput). A backbone whose token grid is finer than the masking grid (Swin's
patch-embedding grid, e.g. 48^3 for a 6^3 masking grid) and the masked-voxel losses need it on a
finer grid: `upsample_mask` repeats each cell along each axis, `mask_to_voxels` goes straight to
the voxel grid of the input volume (also used for the progress figures' mask and attention).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from medmim.errors import ConfigError, did_you_mean
from medmim.types import MaskOutput

Grid = tuple[int, int, int]

#: how a fractional count `ratio * N` becomes a number of cells (see `num_masked`).
ROUNDINGS = ("ceil", "floor", "round", "floor_visible")


def check_grid(grid: Sequence[int]) -> Grid:
    """Return `grid` as a tuple of three positive ints, or raise ValueError naming the problem."""
    grid = tuple(int(g) for g in grid)
    if len(grid) != 3 or any(g < 1 for g in grid):
        raise ValueError(f"a masking grid is three positive sizes (d, h, w), got {grid}")
    return grid  # type: ignore[return-value]


class Masker:
    """Base of the maskers: the contract's call checks the grid, picks the device and `draw`s.

    `masker(grid, batch_size, *, attn=None, device=None, generator=None) -> MaskOutput`; a
    subclass implements `draw` with the same arguments, `grid` already checked.
    """

    def __call__(
        self,
        grid: Sequence[int],
        batch_size: int,
        *,
        attn: Tensor | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> MaskOutput:
        """Draw the masks of one view of a batch.

        Args:
            grid: (d, h, w) masking grid.
            batch_size: B.
            attn: (B, N) [CLS] -> patch attention, N = d*h*w (row-major): required by the
                attention-guided maskers, ignored by the others.
            device: where the masks live (default: `attn`'s device, else the CPU).
            generator: optional torch.Generator; the same seed gives the same masks.

        Returns:
            MaskOutput: `mask` (B, d, h, w) bool, `hints` (B, d, h, w) bool or None, `ratio`.
        """
        device = device if device is not None else (attn.device if attn is not None else None)
        return self.draw(check_grid(grid), batch_size, attn, device, generator)

    def draw(
        self,
        grid: Grid,
        batch_size: int,
        attn: Tensor | None,
        device: torch.device | str | None,
        generator: torch.Generator | None,
    ) -> MaskOutput:
        """The masks (see `__call__`); implemented by each masker."""
        raise NotImplementedError


def check_ratio(ratio: float, name: str = "ratio", *, high: float = 1.0) -> float:
    """Return `ratio` as a float in [0, high], or raise ConfigError naming the option."""
    ratio = float(ratio)
    if not 0.0 <= ratio <= high:
        raise ConfigError(f"masker option '{name}' must lie in [0, {high}], got {ratio}")
    return ratio


def check_rounding(rounding: str) -> str:
    """Return `rounding` if it is one of ROUNDINGS, else raise ConfigError."""
    if rounding not in ROUNDINGS:
        raise ConfigError(
            f"masker option 'rounding' must be one of {', '.join(ROUNDINGS)}, got '{rounding}'."
            f"{did_you_mean(rounding, ROUNDINGS)}"
        )
    return rounding


def num_masked(ratio: float, n: int, rounding: str = "ceil") -> int:
    """Number of cells to mask out of `n` for `ratio`.

    - `ceil`: SMIT's MaskGenerator, ceil(r N) (ceil(0.7 * 216) = 152). A tolerance of 1e-9
      keeps 0.7 * 10 = 7.000000000000001 at 7 (SMIT's own 216-cell grids never meet such a case).
    - `floor`: `int(r * N)` exactly as the iBOT ('rand' mode) and AttMask code compute it, float
      rounding included: 0.29 * 100 = 28.999999999999996 gives 28.
    - `round`: round(r N).
    - `floor_visible`: the PUMIT code keeps `int(N * (1 - r))` cells visible and masks the rest:
      for r = 0.55 and N = 500, 1 - 0.55 = 0.44999999999999996 keeps 224 and masks 276 (where
      `ceil` masks 275).

    Returns:
        An int in [0, n].
    """
    x = float(ratio) * n
    if rounding == "ceil":
        k = math.ceil(x - 1e-9)
    elif rounding == "floor":
        k = int(x)
    elif rounding == "round":
        k = round(x)
    elif rounding == "floor_visible":
        k = n - int(n * (1.0 - float(ratio)))
    else:
        check_rounding(rounding)
    return int(min(max(k, 0), n))


def host_scalar(value: Tensor) -> int | float:
    """The value of a one-element tensor drawn on the host (a CPU random draw for a ratio or a
    seed). Reading a CPU tensor never waits for an accelerator; the host-sync test
    (tests/methods/test_host_sync.py) counts every read of a tensor except those made here.
    """
    return value.item()


def rand(
    shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str | None
) -> Tensor:
    """`torch.rand` drawn on the generator's device (so any generator works), moved to `device`."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(tuple(shape), generator=generator, device=gen_device).to(device)


def rank_mask(ranks: Tensor, start: int, stop: int) -> Tensor:
    """Bool mask of the cells whose rank lies in [start, stop).

    Args:
        ranks: (B, N) long, `ranks[b, i]` is the position of token i when row b is sorted.
        start: first rank selected.
        stop: first rank not selected.

    Returns:
        (B, N) bool.
    """
    return (ranks >= start) & (ranks < stop)


def ranks_of(scores: Tensor, descending: bool) -> Tensor:
    """Rank of every entry in its row: 0 for the largest (descending) or smallest score.

    Args:
        scores: (B, N) float.
        descending: rank 0 is the largest score (True) or the smallest (False).

    Returns:
        (B, N) long; each row is a permutation of 0..N-1 (ties broken by index, stable sort).
    """
    order = torch.sort(scores.float(), dim=1, descending=descending, stable=True).indices
    ranks = torch.empty_like(order)
    arange = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return ranks.scatter_(1, order, arange)


def random_cells(
    batch_size: int,
    n: int,
    k: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Exactly `k` random cells out of `n` per row, drawn independently per row.

    Returns:
        (B, N) bool with `k` True per row.
    """
    ranks = ranks_of(rand((batch_size, n), generator, device), descending=False)
    return ranks < k


def upsample_mask(mask: Tensor, factor: int | Sequence[int]) -> Tensor:
    """Repeat every cell `factor` times along each spatial axis (nearest-neighbour upsampling).

    The one grid-to-finer-grid helper of the package: Swin's mask token on the patch grid,
    the masked-voxel losses (`mask_to_voxels`) and the progress figures all use it. One copy
    (a broadcast view reshaped), whatever the factors.

    Args:
        mask: (B, d, h, w) or (B, 1, d, h, w), any dtype.
        factor: one int or (fd, fh, fw); non-cubic factors allowed.

    Returns:
        (B, d*fd, h*fh, w*fw) (or with the channel axis kept), same dtype.

    Example:
        >>> m = torch.zeros(2, 6, 6, 3, dtype=torch.bool)
        >>> upsample_mask(m, 8).shape
        torch.Size([2, 48, 48, 24])
    """
    factors = (int(factor),) * 3 if isinstance(factor, int) else tuple(int(f) for f in factor)
    if len(factors) != 3 or any(f < 1 for f in factors):
        raise ValueError(f"upsample factor must be one or three positive ints, got {factor}")
    if mask.dim() not in (4, 5):
        raise ValueError(f"mask must be (B, d, h, w) or (B, 1, d, h, w), got {tuple(mask.shape)}")
    *lead, d, h, w = mask.shape
    (fd, fh, fw), cells = factors, mask[..., :, None, :, None, :, None]
    return cells.expand(*lead, d, fd, h, fh, w, fw).reshape(*lead, d * fd, h * fh, w * fw)


def mask_to_voxels(mask: Tensor, spatial_shape: Sequence[int]) -> Tensor:
    """Upsample a grid mask to the voxels of an input volume, with a channel axis.

    Args:
        mask: (B, d, h, w) bool on the masking grid.
        spatial_shape: (D, H, W) of the input; each must be a multiple of the grid size.

    Returns:
        (B, 1, D, H, W), same dtype as `mask`; ready for `MaskedL1Loss` against (B, C, D, H, W).
    """
    if mask.dim() != 4:
        raise ValueError(f"mask must be (B, d, h, w) on the masking grid, got {tuple(mask.shape)}")
    shape = tuple(int(s) for s in spatial_shape)
    grid = tuple(mask.shape[-3:])
    if len(shape) != 3 or any(s % g for s, g in zip(shape, grid)):
        raise ValueError(
            f"input size {shape} is not a multiple of the masking grid {grid}; crop the input "
            f"to a multiple of the mask cell size"
        )
    factors = tuple(s // g for s, g in zip(shape, grid))
    return upsample_mask(mask, factors).unsqueeze(1)
