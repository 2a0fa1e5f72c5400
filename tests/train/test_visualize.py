import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medmim.train.visualize import mid_slices, plot_loss_curves, save_visuals


def test_mid_slices_are_the_three_central_planes() -> None:
    vol = np.arange(4 * 6 * 8).reshape(4, 6, 8)
    sag, cor, axi = mid_slices(vol)
    assert sag.shape == (8, 6) and cor.shape == (8, 4) and axi.shape == (6, 4)
    assert (
        np.array_equal(sag, vol[2].T)
        and np.array_equal(cor, vol[:, 3].T)
        and np.array_equal(axi, vol[:, :, 4].T)
    )


def test_save_visuals_rows_and_bad_shapes(tmp_path: Path) -> None:
    from PIL import Image

    visuals = {
        "view": torch.rand(1, 8, 8, 8),
        "mask": torch.rand(8, 8, 8) > 0.5,
        "recon": torch.rand(8, 8, 8),
        "attn": torch.rand(8, 8, 8, dtype=torch.float64),
    }
    path = save_visuals(visuals, tmp_path / "f" / "v.png", "step 1")
    assert Image.open(path).size == (600, int((2.5 * 4 + 0.7) * 80))
    with pytest.raises(
        ValueError, match=r"a visual must be a \(D, H, W\) volume, got shape \(8, 8\)"
    ):
        save_visuals({"view": torch.rand(8, 8)}, tmp_path / "bad.png")


def test_loss_curves_from_metrics(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    assert plot_loss_curves(metrics, tmp_path / "c.png") is None
    rows = [
        {"step": s, "loss": 1.0 / s, "loss/a": None if s == 2 else 0.5, "lr": 0.1}
        for s in (1, 2, 3)
    ]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert plot_loss_curves(metrics, tmp_path / "c.png") == tmp_path / "c.png"
    assert (tmp_path / "c.png").stat().st_size > 1000
