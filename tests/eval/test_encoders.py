"""Pretrained vs scratch encoders one flag apart; feature choice; input size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _toy_data import TINY_SWIN, write_scratch_spec
from safetensors.torch import load_file

from medmim.errors import ConfigError, DataError
from medmim.eval.encoders import (
    describe,
    embed,
    extract_features,
    input_size,
    load_encoder_or_scratch,
    select_feature,
)


def test_export_and_scratch_share_the_architecture(vit_export) -> None:
    model, meta = load_encoder_or_scratch(vit_export)
    saved = load_file(str(vit_export / "encoder.safetensors"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert meta["pretrained"] is True and meta["method"] == "smart" and not model.training
    scratch, smeta = load_encoder_or_scratch(f"scratch:{vit_export}", seed=1)
    assert scratch.config == model.config
    assert smeta["method"] == "scratch" and smeta["pretrained"] is False
    assert smeta["crop_size"] == meta["crop_size"] and smeta["recipe"] == meta["recipe"]
    assert not torch.equal(scratch.state_dict()["cls_token"], saved["cls_token"])
    bare, _ = load_encoder_or_scratch("scratch", reference=vit_export, seed=1)
    assert all(torch.equal(bare.state_dict()[k], v) for k, v in scratch.state_dict().items())
    assert describe(vit_export, meta) == {
        "spec": str(vit_export),
        "method": "smart",
        "backbone": "vit",
        "pretrained": True,
    }


def test_scratch_from_preset_and_from_a_json_only_spec(tmp_path) -> None:
    model, meta = load_encoder_or_scratch("scratch:swin_demo")
    assert model.config["embed_dim"] == 24 and meta["crop_size"] is None
    spec = write_scratch_spec(tmp_path / "arch")
    tiny, tmeta = load_encoder_or_scratch(f"scratch:{spec / 'encoder.json'}")
    assert tiny.config["embed_dim"] == TINY_SWIN["embed_dim"] and tmeta["crop_size"] == [32] * 3


def test_bad_encoder_specs_are_explained(tmp_path) -> None:
    with pytest.raises(ConfigError, match="scratch:<export dir> or scratch:<preset>"):
        load_encoder_or_scratch("scratch")
    with pytest.raises(
        ConfigError,
        match="neither an export folder nor a backbone preset. Did you mean .swin_demo.",
    ):
        load_encoder_or_scratch("scratch:swin_dmeo")
    with pytest.raises(DataError, match="medmim export"):
        load_encoder_or_scratch(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "encoder.json").write_text(
        json.dumps({"method": "smart"}), encoding="utf-8"
    )
    with pytest.raises(DataError, match="'backbone'"):
        load_encoder_or_scratch(f"scratch:{tmp_path / 'bad'}")


def test_feature_choice() -> None:
    feats = {
        "cls": torch.ones(2, 4),
        "pooled": torch.zeros(2, 4),
        "patch": torch.arange(24.0).reshape(2, 3, 4),
    }
    assert select_feature(feats, "auto") is feats["cls"]
    assert select_feature({"pooled": feats["pooled"]}, "auto") is feats["pooled"]
    assert torch.equal(select_feature(feats, "patch_mean"), feats["patch"].mean(1))
    with pytest.raises(ConfigError, match="no 'cls' output.*--feature pooled"):
        select_feature({"pooled": feats["pooled"], "cls": None}, "cls")
    with pytest.raises(ConfigError, match="unknown feature 'clss'"):
        select_feature(feats, "clss")


def test_extract_features_matches_a_direct_forward(tmp_path) -> None:
    model, _ = load_encoder_or_scratch(f"scratch:{write_scratch_spec(tmp_path)}")
    x = torch.randn(5, 1, 32, 32, 32)
    batches = [(x[:2], None), (x[2:], None)]
    got = extract_features(model, batches, "pooled", progress=False)
    with torch.no_grad():
        want = embed(model, x, "pooled").numpy()
    assert got.shape == (5, model.config["embed_dim"] * 16)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_input_size_rules() -> None:
    assert input_size([16, 32, 48], {"crop_size": [64] * 3}, (28, 28, 28)) == (16, 32, 48)
    assert input_size(None, {"crop_size": [64, 64, 32]}, (28, 28, 28)) == (64, 64, 32)
    assert input_size(None, {"crop_size": None}, (28, 40, 64)) == (32, 64, 64)
