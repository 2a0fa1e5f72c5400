"""Additive 3D rotary position embedding (PUMIT, "Transformer Architecture" and appendix).

EVA-02's 2D RoPE rotates channel pair c of a head by `t_h * w_hw[c]` (first half of the pairs)
or `t_w * w_hw[c]` (second half). PUMIT adds a depth rotation to *every* pair:

    theta_c      = t_h * w_hw[c] + t_d * w_d[c]        c = 0 .. m/2 - 1
    theta_{m/2+c} = t_w * w_hw[c] + t_d * w_d[c]

with m = head_dim / 2 pairs, `w_hw[j] = base_hw^(-2j/m)` (base 10^4, EVA-02) and
`w_d[j] = base_d^(-(2j+1)/m)` (base 2333, odd exponents: the code's half-step offset). Pair c is
the interleaved channels (2c, 2c+1): `rope(x) = x cos(theta) + rotate_half(x) sin(theta)` with
`rotate_half(x)[2c] = -x[2c+1]`, `rotate_half(x)[2c+1] = x[2c]`. With t_d = 0 (one slice) this
is EVA-02's 2D RoPE exactly; the rotation depends only on position differences (relativity).
Positions are raw grid indices (the PUMIT MIM default, `rope_rescale_shape = -1`).

Example:
    >>> rope = Rope3D(head_dim=64)
    >>> cos, sin = rope((2, 3, 3))
    >>> cos.shape
    torch.Size([18, 64])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def rotate_half(x: Tensor) -> Tensor:
    """Rotate each interleaved pair (x[2c], x[2c+1]) -> (-x[2c+1], x[2c]) along the last dim."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate `x` (..., N, head_dim) by the angles whose cos/sin are (N, head_dim).

    Computed in float32 and cast back, so bf16/fp16 queries keep their angles accurate.
    """
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


def grid_coords(grid: Sequence[int], device: torch.device | str | None = None) -> Tensor:
    """Integer (t_d, t_h, t_w) of every cell of a (d, h, w) grid, row-major: (d*h*w, 3) float."""
    axes = [torch.arange(int(n), device=device, dtype=torch.float32) for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


class Rope3D(nn.Module):
    """Additive 3D RoPE for one attention head size (no parameters; cos/sin cached per grid).

    Args:
        head_dim: channels per head; a multiple of 4 (pairs split into an h half and a w half).
        base_hw: in-plane base (EVA-02: 10000).
        base_d: depth base (PUMIT: 2333).
    """

    def __init__(self, head_dim: int, base_hw: float = 10000.0, base_d: float = 2333.0) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"Rope3D: head_dim must be a multiple of 4, got {head_dim}")
        m = head_dim // 2
        j = torch.arange(m // 2, dtype=torch.float64)
        self.register_buffer("freq_hw", (base_hw ** (-2 * j / m)).float(), persistent=False)
        self.register_buffer("freq_d", (base_d ** (-(2 * j + 1) / m)).float(), persistent=False)
        self._cache: dict[tuple[tuple[int, ...], str], tuple[Tensor, Tensor]] = {}

    def angles(self, coords: Tensor) -> Tensor:
        """Rotation angle of every pair at arbitrary positions.

        Args:
            coords: (N, 3) float positions (t_d, t_h, t_w).

        Returns:
            (N, head_dim / 2) angles theta, pair order [h half, w half].
        """
        coords = coords.to(self.freq_hw)
        depth = coords[:, :1] * self.freq_d
        theta_h = coords[:, 1:2] * self.freq_hw + depth
        theta_w = coords[:, 2:3] * self.freq_hw + depth
        return torch.cat([theta_h, theta_w], dim=-1)

    def cos_sin(self, coords: Tensor) -> tuple[Tensor, Tensor]:
        """Cos and sin of `angles(coords)`, each repeated per interleaved pair: (N, head_dim)."""
        theta = self.angles(coords).repeat_interleave(2, dim=-1)
        return theta.cos(), theta.sin()

    def forward(self, grid: Sequence[int]) -> tuple[Tensor, Tensor]:
        """cos, sin (d*h*w, head_dim) for a (d, h, w) token grid, row-major (cached)."""
        key = (tuple(int(g) for g in grid), str(self.freq_hw.device))
        if key not in self._cache:
            if len(self._cache) > 32:
                self._cache.clear()
            self._cache[key] = self.cos_sin(grid_coords(key[0], self.freq_hw.device))
        return self._cache[key]
