"""An exported PUMIT universal ViT downstream: classification on its [CLS], UNETR segmentation on
its per-block maps, with its slice-first input order and spacing handled by the loader."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from _downstream_data import PUMIT_DATA, TINY_UVIT
from _toy_data import write_medmnist

from medmim.eval.classify import ClassifyConfig, run_classify
from medmim.eval.encoders import load_encoder_or_scratch
from medmim.eval.export import load_encoder
from medmim.eval.report import read_results
from medmim.eval.segment import SegmentConfig, run_segment
from medmim.eval.slice_first import SliceFirstEncoder


def test_export_records_the_slice_first_layout(uvit_export) -> None:
    meta = json.loads((uvit_export / "encoder.json").read_text(encoding="utf-8"))
    assert meta["backbone"]["name"] == "universal_vit" and meta["method"] == "pumit_mim"
    assert meta["slice_first"] is True and meta["spacing"] is None
    assert meta["crop_size"] == PUMIT_DATA["crop_size"] == [16, 32, 32]  # (D, H, W), as trained


def test_loader_moves_the_slice_axis_first_and_back(uvit_export) -> None:
    model, meta = load_encoder_or_scratch(uvit_export)
    vit, _ = load_encoder(uvit_export)
    assert isinstance(model, SliceFirstEncoder) and meta["crop_size"] == [32, 32, 16]  # (X, Y, Z)
    assert model.config == vit.config and model.config["pos_embed_shape"] == [1, 2, 2]
    x = torch.randn(2, 1, 32, 48, 16)  # (X, Y, Z) with Z the slice axis
    got, ref = model.forward_features(x), vit.forward_features(x.permute(0, 1, 4, 2, 3))
    assert ref["grid"] == (1, 2, 3) and got["grid"] == model.mask_grid(x.shape) == (2, 3, 1)
    torch.testing.assert_close(got["cls"], ref["cls"])
    torch.testing.assert_close(got["bottleneck"], ref["bottleneck"].permute(0, 1, 3, 4, 2))
    assert [m.shape for m in got["features"]] == [(2, 24, 2, 3, 1)] * TINY_UVIT["depth"]
    torch.testing.assert_close(got["patch"], ref["patch"])  # one z token: both orders agree
    # with 2 z tokens, patch / attn are reordered from row-major (z, x, y) to (x, y, z)
    deep = torch.randn(1, 1, 32, 32, 32)
    g, r = model.forward_features(deep), vit.forward_features(deep.permute(0, 1, 4, 2, 3))
    xyz = (
        r["patch"].unflatten(1, (2, 2, 2)).permute(0, 2, 3, 1, 4).flatten(1, 3)
    )  # (z,x,y)->(x,y,z)
    torch.testing.assert_close(g["patch"], xyz)
    torch.testing.assert_close(
        g["attn"], r["attn"].unflatten(1, (2, 2, 2)).permute(0, 2, 3, 1).flatten(1)
    )
    assert not torch.allclose(g["patch"], r["patch"])  # the reordering is not a no-op here


def test_spacing_is_given_in_volume_order_and_reaches_the_model_slice_first(uvit_export) -> None:
    model, _ = load_encoder_or_scratch(uvit_export)
    vit, _ = load_encoder(uvit_export)
    thick = torch.randn(1, 1, 32, 32, 8)  # 2 mm slices along Z, 1 mm in-plane: DA 1, patch 8x16x16
    got = model.forward_features(thick, spacing=(1.0, 1.0, 2.0))
    ref = vit.forward_features(thick.permute(0, 1, 4, 2, 3), spacing=(2.0, 1.0, 1.0))
    assert got["grid"] == (2, 2, 1) and ref["grid"] == (1, 2, 2)
    torch.testing.assert_close(got["cls"], ref["cls"])
    with pytest.raises(ValueError, match="not a multiple of the patch"):
        model.forward_features(thick)  # without spacing: DA 0, depth 8 < patch 16


def test_classify_linear_on_the_cls_token(uvit_export, tmp_path) -> None:
    npz = write_medmnist(tmp_path / "nodule.npz", counts=(12, 4, 8))
    cfg = ClassifyConfig(folds=2, feature="cls", progress=False)
    metrics = run_classify(str(uvit_export), npz, tmp_path / "out", cfg)
    with open(tmp_path / "out" / "folds.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    # the 16 train+val volumes in 2 folds of 8; the 8 test volumes scored by each fold's probe
    assert [(r["part"], r["n"], r["n_train"]) for r in rows] == [
        ("val", "8", "8"),
        ("test", "8", "8"),
    ] * 2
    assert metrics["test/auc"]["mean"] > 0.9  # the toy classes differ by a bright cube
    record = read_results(tmp_path / "out" / "results.json")
    assert record["encoder"]["method"] == "pumit_mim"
    assert record["encoder"]["backbone"] == "universal_vit" and record["encoder"]["pretrained"]
    assert record["config"]["input_size"] == [32, 32, 16] and record["config"]["feature"] == "cls"


@pytest.mark.slow
def test_segment_unetr_on_the_block_maps(labelled, uvit_export, tmp_path) -> None:
    out = tmp_path / "seg"
    cfg = SegmentConfig(
        encoder=str(uvit_export),
        data=str(labelled),
        out=str(out),
        max_steps=2,
        num_samples=1,
        feature_size=8,
        overlap=0.25,
    )
    metrics = run_segment(cfg)
    info = json.loads((out / "segmenter.json").read_text(encoding="utf-8"))
    assert info["decoder"] == {
        "name": "unetr",
        "out_channels": 3,
        "img_size": [32, 32, 16],
        "feature_size": 8,
    }
    assert info["roi"] == [32, 32, 16] and info["encoder"]["slice_first"] is True
    lines = (out / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 1]
    for name in ("case_3", "case_4"):  # validation and test, in the input file's geometry
        seg = np.asarray(nib.load(out / "predictions" / f"{name}_seg.nii.gz").dataobj)
        assert seg.shape == (44, 40, 24) and set(np.unique(seg)) <= {0, 1, 2}
    assert 0.0 <= metrics["val/dice"]["mean"] <= 1.0 and np.isfinite(metrics["train/loss_last"])
    assert read_results(out / "results.json")["encoder"]["method"] == "pumit_mim"
