"""LPIPS-VGG16 perceptual loss: refuses to run without user weights; zero on identical inputs."""

from __future__ import annotations

import pytest
import torch

from medmim.errors import ConfigError
from medmim.losses.perceptual import LPIPSLoss, vgg16_features


def test_requested_without_weights_says_none_can_be_downloaded() -> None:
    with pytest.raises(ConfigError, match="cannot download VGG16"):
        LPIPSLoss()
    with pytest.raises(ConfigError, match="does not exist"):
        LPIPSLoss("/nonexistent/vgg16.pth")


def test_with_user_weights(tmp_path) -> None:
    state = {f"features.{k}": v for k, v in vgg16_features().state_dict().items()}
    torch.save(state, tmp_path / "vgg16.pth")
    loss = LPIPSLoss(str(tmp_path / "vgg16.pth"), max_slices=2)
    assert not any(p.requires_grad for p in loss.parameters())
    x = torch.rand(1, 1, 3, 16, 16) * 2 - 1
    assert float(loss(x, x)) == 0.0
    assert float(loss(x, -x)) > 0.0
    bad = tmp_path / "partial.pth"
    torch.save({"features.0.weight": state["features.0.weight"]}, bad)
    with pytest.raises(ConfigError, match="lacks VGG16 tensors"):
        LPIPSLoss(str(bad))
