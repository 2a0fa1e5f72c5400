"""`medmim attention`: stitching, units, original geometry, PNGs, CLI."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medmim.cli.main import main
from medmim.errors import ConfigError
from medmim.eval import attention as attention_mod
from medmim.eval.attention import AttentionConfig, attention_volume, run_attention, window_attention
from medmim.eval.report import read_results
from medmim.registry import BACKBONES


class BrightestCellEncoder(nn.Module):
    """Stand-in whose [CLS] attends to the brightest 4^3 cell: softmax(20 * cell mean)."""

    bottleneck_stride = 4

    def forward_features(self, x: torch.Tensor) -> dict:
        cells = F.avg_pool3d(x[:, :1], 4)
        return {"attn": torch.softmax(20 * cells.flatten(1), dim=1), "grid": tuple(cells.shape[2:])}


def test_window_attention_is_in_multiples_of_uniform() -> None:
    enc = BrightestCellEncoder()
    flat = window_attention(enc, torch.ones(1, 1, 16, 16, 16))
    assert flat.shape == (1, 1, 16, 16, 16)
    torch.testing.assert_close(flat, torch.ones_like(flat))  # uniform attention -> 1 everywhere


def test_whole_equals_one_window_and_finds_the_bright_spot() -> None:
    image = np.zeros((1, 32, 32, 32), np.float32)
    image[0, 20:24, 4:8, 12:16] = 1.0
    enc, cpu = BrightestCellEncoder(), torch.device("cpu")
    whole = attention_volume(enc, image, cpu, roi=None)
    window = attention_volume(enc, image, cpu, roi=(32, 32, 32))
    torch.testing.assert_close(whole, window)
    peak = np.unravel_index(int(whole.argmax()), whole.shape)
    assert 20 <= peak[0] < 24 and 4 <= peak[1] < 8 and 12 <= peak[2] < 16
    # sliding windows smaller than the scan still put the maximum on the spot
    stitched = attention_volume(enc, image, cpu, roi=(16, 16, 16), overlap=0.5)
    peak = np.unravel_index(int(stitched.argmax()), stitched.shape)
    assert 20 <= peak[0] < 24 and 4 <= peak[1] < 8 and 12 <= peak[2] < 16
    with pytest.raises(ConfigError, match="multiples of 4"):
        attention_volume(enc, image, cpu, roi=(18, 16, 16))


def test_maps_are_saved_in_the_scans_geometry(labelled, tmp_path, monkeypatch) -> None:
    meta = {
        "recipe": {"spacing": None, "window": [-200.0, 300.0]},
        "crop_size": [16, 16, 16],
        "method": "stub",
        "backbone": {"name": "stub"},
    }
    monkeypatch.setattr(
        attention_mod, "load_encoder_or_scratch", lambda spec, **kw: (BrightestCellEncoder(), meta)
    )
    out = tmp_path / "att"
    run_attention(AttentionConfig(encoder="stub", data=str(labelled), out=str(out), max_figures=1))
    root = labelled.parent
    rows = list(csv.DictReader(open(out / "attention.csv", encoding="utf-8")))
    assert [r["case"] for r in rows] == ["case_0", "case_1", "case_2"]
    for row in rows:
        saved = nib.load(out / "attention" / f"{row['case']}_attn.nii.gz")
        image = nib.load(root / "images" / f"{row['case']}.nii.gz")
        assert saved.shape == image.shape
        np.testing.assert_allclose(saved.affine, image.affine, atol=1e-5)
        # the stand-in looks at the brightest spot: the 280 HU tumor
        tumor = np.asarray(nib.load(root / "labels" / f"{row['case']}_tumor.nii.gz").dataobj)
        peak = (int(row["i"]), int(row["j"]), int(row["k"]))
        near = tumor[
            max(peak[0] - 2, 0) : peak[0] + 3,
            max(peak[1] - 2, 0) : peak[1] + 3,
            max(peak[2] - 2, 0) : peak[2] + 3,
        ]
        assert near.any(), f"{row['case']}: attention peak {peak} is not at the tumor"
        world = saved.affine @ np.array([*peak, 1.0])
        assert float(row["x_mm"]) == pytest.approx(world[0], abs=0.01)
    record = read_results(out / "results.json")
    assert [f["path"] for f in record["figures"]] == ["figures/case_0_attention.png"]
    assert record["config"]["roi"] == [16, 16, 16]


def test_encoder_without_attention_is_refused() -> None:
    enc = BACKBONES.build(
        {
            "name": "swin",
            "embed_dim": 12,
            "depths": [1, 1, 1, 1],
            "num_heads": [3, 3, 3, 3],
            "sa_depth": 0,
        }
    )
    with pytest.raises(ConfigError, match="no attention output"):
        window_attention(enc, torch.zeros(1, 1, 32, 32, 32))


def test_attention_cli_with_a_swin(labelled, swin_export, tmp_path) -> None:
    out = tmp_path / "cli"
    rc = main(
        [
            "attention",
            "--encoder",
            str(swin_export),
            "--data",
            str(labelled),
            "--out",
            str(out),
            "--split",
            "validation",
            "--whole",
            "--max-figures",
            "1",
        ]
    )
    assert rc == 0
    saved = nib.load(out / "attention" / "case_3_attn.nii.gz")
    assert saved.shape == nib.load(labelled.parent / "images/case_3.nii.gz").shape
    values = np.asarray(saved.dataobj)
    assert np.isfinite(values).all() and values.max() > 0 and values.min() >= 0
    assert (
        json.loads((out / "results.json").read_text(encoding="utf-8"))["config"]["roi"] == "whole"
    )
    assert (out / "figures/case_3_attention.png").stat().st_size > 0
