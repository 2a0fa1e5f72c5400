import pytest
import torch

from medmim.heads.mip import MIPHead, pixel_shuffle_3d
from medmim.registry import HEADS


def test_pixel_shuffle_matches_index_formula() -> None:
    c, s = 2, (2, 3, 1)
    x = torch.randn(1, c * 6, 2, 3, 4)
    y = pixel_shuffle_3d(x, s)
    assert y.shape == (1, c, 4, 9, 4)
    for ch in range(c):
        for z in range(4):
            for r in range(9):
                for q in range(4):
                    i, j, k = z % s[0], r % s[1], q % s[2]
                    src = ch * 6 + i * s[1] * s[2] + j * s[2] + k
                    assert y[0, ch, z, r, q] == x[0, src, z // s[0], r // s[1], q // s[2]]


def test_pixel_shuffle_agrees_with_torch_2d_when_one_axis_is_1() -> None:
    x = torch.randn(2, 3 * 4, 5, 6, 1)
    ours = pixel_shuffle_3d(x, (2, 2, 1))[..., 0]
    assert torch.equal(ours, torch.nn.functional.pixel_shuffle(x[..., 0], 2))


@pytest.mark.parametrize(
    ("bottleneck", "scale", "out"),
    [
        ((3, 3, 2), 32, (96, 96, 64)),
        ((2, 2, 2), 16, (32, 32, 32)),
        ((2, 3, 1), (4, 2, 8), (8, 6, 8)),
    ],
)
def test_head_reconstructs_voxel_shapes(bottleneck, scale, out) -> None:
    head = HEADS.build({"name": "mip", "in_channels": 12, "out_channels": 1, "scale": scale})
    y = head(torch.randn(2, 12, *bottleneck))
    assert y.shape == (2, 1, *out)


def test_linear_and_no_activation() -> None:
    head = MIPHead(in_channels=6, out_channels=2, scale=4)
    assert head.proj.kernel_size == (1, 1, 1) and head.proj.out_channels == 2 * 64
    with torch.no_grad():
        head.proj.bias.zero_()
    x = torch.randn(1, 6, 2, 2, 1)
    y = head(x)
    assert (y < 0).any()
    assert torch.allclose(head(-3.0 * x), -3.0 * y, atol=1e-5)


def test_scale_for() -> None:
    assert MIPHead.scale_for((96, 96, 64), (3, 3, 2)) == (32, 32, 32)
    with pytest.raises(ValueError, match="not a multiple"):
        MIPHead.scale_for((96, 96, 60), (3, 3, 8))
