import pytest
import torch

from medmim.losses.masked_l1 import MaskedL1Loss
from medmim.masking.utils import mask_to_voxels
from medmim.registry import LOSSES


def setup() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grid_mask = torch.rand(2, 2, 2, 2) > 0.5
    grid_mask[:, 0, 0, 0] = True
    mask = mask_to_voxels(grid_mask, (16, 16, 8))
    return torch.rand(2, 1, 16, 16, 8), torch.rand(2, 1, 16, 16, 8), mask


def test_value_is_mean_abs_error_over_masked_voxels() -> None:
    pred, target, mask = setup()
    got = LOSSES.build("masked_l1")(pred, target, mask)
    want = (pred - target).abs()[mask].mean()
    assert torch.allclose(got, want, atol=1e-6)


def test_unmasked_voxels_are_ignored() -> None:
    loss = MaskedL1Loss()
    pred, target, mask = setup()
    base = loss(pred, target, mask)
    changed = torch.where(mask, pred, pred + 100.0)
    assert torch.allclose(loss(changed, target, mask), base)
    assert not torch.allclose(loss(torch.where(mask, pred + 1.0, pred), target, mask), base)
    pred.requires_grad_(True)
    loss(pred, target, mask).backward()
    assert (pred.grad[~mask] == 0).all() and (pred.grad[mask] != 0).all()


def test_channel_broadcast_and_empty_mask() -> None:
    pred, target = torch.rand(1, 2, 4, 4, 4), torch.rand(1, 2, 4, 4, 4)
    mask = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    mask[..., :2] = True
    want = (pred - target).abs()[..., :2].mean()
    assert torch.allclose(MaskedL1Loss()(pred, target, mask), want, atol=1e-6)
    assert MaskedL1Loss()(pred, target, torch.zeros_like(mask)) == 0


def test_bad_mask_shape() -> None:
    with pytest.raises(ValueError, match="mask_to_voxels"):
        MaskedL1Loss()(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8), torch.ones(1, 2, 2, 2))
