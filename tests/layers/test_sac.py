"""SAC: the exactness claim, tap reduction, DA rule, state bookkeeping, 2D as one slice."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medmim.layers.sac import (
    Anisotropy,
    SACConv3d,
    SACConvTranspose3d,
    SACSequential,
    degree_of_anisotropy,
    infer_anisotropy,
    reduce_depth_taps,
)


@pytest.mark.parametrize("da", [0, 1, 2, 3, 4])
def test_patchify_equals_plain_conv_on_repeated_slices(da: int) -> None:
    conv = SACConv3d(2, 5, kernel_size=16, stride=16).double()
    thick = torch.randn(2, 2, max(16 >> da, 1) * 2, 32, 32, dtype=torch.float64)
    fine = thick.repeat_interleave(2**da, dim=2)  # each slice repeated 2^DA times
    y, state = conv(thick, Anisotropy(da=da))
    ref = F.conv3d(fine, conv.weight, conv.bias, stride=16)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    assert state.num_downsamples == 4


def test_stem_and_downsampler_chain_exact_on_repeated_slices() -> None:
    # tokenizer stem (k=s=4) then k=s=2: DA 3 input; replicated 8x it is isotropic
    net = SACSequential(SACConv3d(1, 3, 4, 4), SACConv3d(3, 4, 2, 2)).double()
    thick = torch.randn(1, 1, 2, 16, 16, dtype=torch.float64)
    y, state = net(thick, Anisotropy(da=3))
    fine = thick.repeat_interleave(8, dim=2)
    ref = F.conv3d(
        F.conv3d(fine, net[0].weight, net[0].bias, stride=4), net[1].weight, net[1].bias, stride=2
    )
    torch.testing.assert_close(y, ref)
    assert state == Anisotropy(da=3, num_downsamples=3) and state.pending == 0


def test_reduce_depth_taps_groups_contiguously() -> None:
    w = torch.arange(8.0).view(1, 1, 8, 1, 1)
    assert reduce_depth_taps(w, 2).flatten().tolist() == [0 + 1 + 2 + 3, 4 + 5 + 6 + 7]
    assert reduce_depth_taps(w, 4).flatten().tolist() == [1.0, 5.0, 9.0, 13.0]
    assert reduce_depth_taps(w, 8) is w
    with pytest.raises(ValueError, match="3 equal groups"):
        reduce_depth_taps(w, 3)


def test_3x3x3_conv_collapses_to_depth_sum_while_pending() -> None:
    conv = SACConv3d(2, 3, 3, 1, 1).double()
    x = torch.randn(1, 2, 4, 8, 8, dtype=torch.float64)
    y, state = conv(x, Anisotropy(da=1))
    ref = F.conv3d(x, conv.weight.sum(2, keepdim=True), conv.bias, padding=(0, 1, 1))
    torch.testing.assert_close(y, ref)
    assert state.num_downsamples == 0
    # a single slice: equals the middle output of the plain conv on the slice repeated 3 times
    one = x[:, :, :1]
    y1, _ = conv(one, Anisotropy(da=5))
    torch.testing.assert_close(
        y1, F.conv3d(one.repeat(1, 1, 3, 1, 1), conv.weight, conv.bias, padding=1)[:, :, 1:2]
    )
    # isotropic: plain conv
    y0, _ = conv(x, Anisotropy(da=0))
    torch.testing.assert_close(y0, F.conv3d(x, conv.weight, conv.bias, padding=1))


def test_stride2_kernel3_keeps_depth_while_pending() -> None:
    conv = SACConv3d(1, 2, 3, 2, 1)
    y, state = conv(torch.randn(1, 1, 6, 16, 16), Anisotropy(da=1))
    assert y.shape[2:] == (6, 8, 8) and state.pending == 0
    y, _ = conv(torch.randn(1, 1, 6, 16, 16), Anisotropy(da=0))
    assert y.shape[2:] == (3, 8, 8)


@pytest.mark.parametrize("da,depth_up,s_d", [(0, 4, 4), (2, 2, 4), (3, 1, 2), (5, 0, 1)])
def test_transposed_conv_is_group_sum_of_plain_output(da: int, depth_up: int, s_d: int) -> None:
    up = SACConvTranspose3d(3, 2, stride=4, bias=False).double()
    x = torch.randn(1, 3, 2, 3, 3, dtype=torch.float64)
    state = Anisotropy(da=da, num_downsamples=da + depth_up)
    y, out = up(x, state)
    plain = F.conv_transpose3d(x, up.weight, stride=4)  # (1, 2, 8, 12, 12)
    ref = plain.unflatten(2, (2 * s_d, 4 // s_d)).sum(
        3
    )  # sum the 4/s_d fine slices of each output slice
    assert y.shape == (1, 2, 2 * s_d, 12, 12)
    torch.testing.assert_close(y, ref)
    assert out.num_downsamples == state.num_downsamples - 2


@pytest.mark.parametrize(
    "spacing,expected",
    [
        ((1.0, 1.0, 1.0), 0),
        ((1.9, 1, 1), 0),
        ((2.0, 1, 1), 1),
        ((3.99, 1, 1), 1),
        ((3.0, 0.75, 0.8), 2),
        ((7.14, 1, 1), 2),
        ((2.4, 0.8, 0.8), 1),
        ((31.9, 1, 1), 4),
        ((40, 1, 1), 5),
        ((float("inf"), 1, 1), 5),
        ((0.5, 1, 1), 0),
    ],
)
def test_degree_of_anisotropy_floors_log2_and_clips(
    spacing: tuple[float, ...], expected: int
) -> None:
    assert degree_of_anisotropy(spacing) == expected


def test_degree_of_anisotropy_batch_rules() -> None:
    assert degree_of_anisotropy(torch.tensor([[4.0, 1, 1], [5.0, 1.2, 1.0]])) == 2
    with pytest.raises(ValueError, match="different degrees of anisotropy"):
        degree_of_anisotropy(torch.tensor([[4.0, 1, 1], [1.0, 1, 1]]))
    with pytest.raises(ValueError, match="must be positive"):
        degree_of_anisotropy((0.0, 1.0, 1.0))
    assert infer_anisotropy((1, 64, 64), None).da == 5
    assert infer_anisotropy((16, 64, 64), None).da == 0


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="powers of two"):
        SACConv3d(1, 1, 3, 3)
    conv = SACConv3d(1, 1, 16, 16)
    with pytest.raises(ValueError, match="adapted patch"):
        conv(torch.randn(1, 1, 6, 32, 32), Anisotropy(da=1))  # depth patch 8 does not divide 6
