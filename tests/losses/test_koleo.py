"""KoLeo: hand-computed nearest-neighbour distances, normalisation, duplicates and small batches."""

from __future__ import annotations

import math

import pytest
import torch

from medmim.losses.koleo import KoLeoLoss
from medmim.registry import LOSSES


def at(angle_deg: float, length: float) -> list[float]:
    a = math.radians(angle_deg)
    return [length * math.cos(a), length * math.sin(a)]


def test_three_points_in_2d_by_hand() -> None:
    # unit directions at 0, 90 and 30 degrees (lengths 2, 3, 5 are normalised away); the chord
    # between angles a, b is 2 sin(|a - b| / 2): 0 -> 30 (0.518), 90 -> 30 (1.0), 30 -> 0 (0.518)
    x = torch.tensor([at(0, 2.0), at(90, 3.0), at(30, 5.0)])
    near = 2 * math.sin(math.radians(15))
    want = -(2 * math.log(near + 1e-8) + math.log(1.0 + 1e-8)) / 3
    assert LOSSES.build({"name": "koleo"})(x).item() == pytest.approx(want, rel=1e-6)


def test_gradient_spreads_the_closest_pair() -> None:
    x = torch.tensor([at(0, 1.0), at(90, 1.0), at(10, 1.0)], requires_grad=True)
    KoLeoLoss()(x).backward()
    # descending the loss moves point 0 away from point 2 (at +10 degrees): toward -y
    assert x.grad[0, 1] > 0 and torch.isfinite(x.grad).all()


def test_duplicates_are_finite_and_a_single_row_gives_zero() -> None:
    dup = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    out = KoLeoLoss()(dup)
    assert math.isfinite(out.item()) and out.item() > 10  # -log(1e-8) for the two duplicates
    out.backward()
    assert torch.isfinite(dup.grad).all()
    one = torch.randn(1, 8, requires_grad=True)
    zero = KoLeoLoss()(one)
    assert zero.item() == 0.0
    zero.backward()
    assert one.grad is not None


def test_bf16_and_bad_shape() -> None:
    x = torch.randn(6, 16)
    assert KoLeoLoss()(x.bfloat16()).dtype == torch.float32
    with pytest.raises(ValueError, match=r"\(n, C\)"):
        KoLeoLoss()(torch.randn(2, 3, 4))
