"""Additive 3D RoPE: constants, relativity, and exact reduction to EVA-02's 2D RoPE at depth 0."""

from __future__ import annotations

import math

import torch

from medmim.layers.rope import Rope3D, apply_rope, grid_coords, rotate_half


def eva02_rope_2d(head_dim: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: EVA-02's VisionRotaryEmbeddingFast (theta 10^4, raw indices), written out."""
    dim = head_dim // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].double() / dim))
    fh = torch.einsum("i,f->if", torch.arange(h).double(), freqs).repeat_interleave(2, -1)
    fw = torch.einsum("i,f->if", torch.arange(w).double(), freqs).repeat_interleave(2, -1)
    full = torch.cat([fh[:, None, :].expand(h, w, -1), fw[None, :, :].expand(h, w, -1)], dim=-1)
    full = full.reshape(h * w, head_dim)
    return full.cos().float(), full.sin().float()


def test_frequency_constants_match_the_paper_code() -> None:
    rope = Rope3D(64)
    assert math.isclose(float(rope.freq_d[0]), 2333 ** (-1 / 32), rel_tol=1e-6)
    assert abs(float(rope.freq_d[0]) - 0.7848) < 1e-4
    assert abs(float(rope.freq_hw[1]) - 0.5623) < 1e-4
    assert float(rope.freq_hw[0]) == 1.0 and rope.freq_hw.numel() == 16


def test_depth_zero_equals_eva02_2d_rope() -> None:
    cos, sin = Rope3D(64)((1, 5, 7))
    ref_cos, ref_sin = eva02_rope_2d(64, 5, 7)
    torch.testing.assert_close(cos, ref_cos, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(sin, ref_sin, atol=1e-6, rtol=1e-6)


def test_depth_adds_a_rotation_on_every_pair() -> None:
    rope = Rope3D(16)
    coords = torch.tensor([[0.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    theta = rope.angles(coords)
    diff = theta[1] - theta[0]
    torch.testing.assert_close(diff, torch.cat([rope.freq_d, rope.freq_d]))


def test_relativity_scores_depend_only_on_offsets() -> None:
    rope = Rope3D(32)
    q, k = torch.randn(2, 32, dtype=torch.float64)
    p1, p2 = torch.tensor([[1.0, 4.0, 2.0]]), torch.tensor([[3.0, 0.0, 5.0]])

    def score(a: torch.Tensor, b: torch.Tensor) -> float:
        ca, sa = rope.cos_sin(a)
        cb, sb = rope.cos_sin(b)
        qa = q * ca.double() + rotate_half(q[None]) * sa.double()
        kb = k * cb.double() + rotate_half(k[None]) * sb.double()
        return float((qa * kb).sum())

    base = score(p1, p2)
    for shift in ([2.0, -1.0, 7.0], [5.0, 3.0, 0.0], [0.0, 0.0, 11.0]):
        s = torch.tensor([shift])
        assert math.isclose(score(p1 + s, p2 + s), base, rel_tol=1e-5, abs_tol=1e-5)
    assert not math.isclose(score(p1, p2 + torch.tensor([[1.0, 0, 0]])), base, rel_tol=1e-3)


def test_rotation_preserves_norm_and_grid_order() -> None:
    cos, sin = Rope3D(8)((2, 2, 3))
    x = torch.randn(4, 12, 8)
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))
    assert grid_coords((2, 2, 3))[7].tolist() == [1.0, 0.0, 1.0]  # row-major (d, h, w)
    assert rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist() == [-2.0, 1.0, -4.0, 3.0]
