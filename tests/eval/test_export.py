"""Export/import of encoders: contract files, round trip, strict MONAI SwinUNETR load,
errors, CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _downstream_data import write_checkpoint
from monai.networks.nets import SwinUNETR
from safetensors.torch import load_file

from medmim.cli.main import main
from medmim.errors import DataError
from medmim.eval.export import export, load_encoder, load_into_swinunetr

SWIN = {
    "name": "swin",
    "embed_dim": 12,
    "depths": [1, 1, 1, 1],
    "num_heads": [3, 3, 3, 3],
    "in_channels": 2,
}
VIT = {"name": "vit", "embed_dim": 24, "depth": 2, "num_heads": 3, "pos_grid": [2, 2, 2]}
RECIPE = {
    "orientation": "RAS",
    "spacing": [1.5, 1.5, 2.0],
    "intensity": "ct",
    "window": [-175.0, 250.0],
}
DATA = {"recipe": RECIPE, "crop_size": [64, 64, 32]}


def test_swin_export_round_trip_and_json_contract(tmp_path: Path) -> None:
    enc = write_checkpoint(tmp_path / "run", SWIN, DATA)
    out = export(tmp_path / "run")
    assert out == tmp_path / "run" / "export"
    meta = json.loads((out / "encoder.json").read_text(encoding="utf-8"))
    assert {
        "medmim_version",
        "backbone",
        "method",
        "patch_size",
        "spacing",
        "recipe",
        "in_channels",
        "crop_size",
    } <= meta.keys()
    assert (
        meta["method"] == "smart"
        and meta["spacing"] == [1.5, 1.5, 2.0]
        and meta["recipe"] == RECIPE
    )
    assert (
        meta["in_channels"] == 2
        and meta["crop_size"] == [64, 64, 32]
        and meta["patch_size"] == [2, 2, 2]
    )
    assert meta["backbone"] == enc.config
    model, meta2 = load_encoder(out / "encoder.json")
    assert meta2 == meta and not model.training
    x = torch.randn(1, 2, 64, 32, 32)
    mask = torch.rand(1, 4, 2, 2) > 0.5
    with torch.no_grad():
        a, b = enc.forward_features(x, mask), model.forward_features(x, mask)
    for key in ("patch", "cls", "attn", "pooled", "bottleneck"):
        assert torch.equal(a[key], b[key]), key


def test_swin_weights_load_strictly_into_monai_swinunetr(tmp_path: Path) -> None:
    enc = write_checkpoint(tmp_path / "run", SWIN, DATA)
    out = export(tmp_path / "run", tmp_path / "exp")
    meta = json.loads((out / "encoder.json").read_text(encoding="utf-8"))
    net = SwinUNETR(out_channels=3, **meta["monai_swinunetr"]).eval()
    # the documented one-liner, strict=True
    weights = load_file(str(out / "encoder.safetensors"))
    net.swinViT.load_state_dict(
        {k[8:]: v for k, v in weights.items() if k.startswith("swinViT.")}, strict=True
    )
    fresh = SwinUNETR(out_channels=3, **meta["monai_swinunetr"]).eval()
    load_into_swinunetr(fresh, out)
    for model in (net, fresh):
        theirs = model.swinViT.state_dict()
        assert all(torch.equal(theirs[k], v) for k, v in enc.swinViT.state_dict().items())
    x = torch.randn(1, 2, 64, 32, 32)
    with torch.no_grad():  # SwinUNETR's default unfused window attention: equal up to rounding
        for a, b in zip(enc.forward_features(x)["features"], fresh.swinViT(x, normalize=True)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert fresh(x).shape == (1, 3, 64, 32, 32)


def test_mismatched_swinunetr_lists_the_keys(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "run", SWIN, DATA)
    out = export(tmp_path / "run")
    wrong = SwinUNETR(
        in_channels=2, out_channels=1, feature_size=24, depths=(1, 1, 1, 1), num_heads=(3, 3, 3, 3)
    )
    with pytest.raises(
        DataError,
        match=r"shape mismatches \(\d+\): layers1\.0\.blocks\.0\.attn\.proj\.bias: "
        r"file \(12,\) vs model \(24,\)",
    ):
        load_into_swinunetr(wrong, out)
    vit_run = tmp_path / "vit"
    write_checkpoint(vit_run, VIT, DATA)
    with pytest.raises(DataError, match="holds no 'swinViT.\\*' weights"):
        load_into_swinunetr(wrong, export(vit_run))


def test_load_encoder_refuses_mismatched_json_with_key_lists(tmp_path: Path) -> None:
    enc = write_checkpoint(tmp_path / "run", VIT, DATA)
    out = export(tmp_path / "run")
    meta = json.loads((out / "encoder.json").read_text(encoding="utf-8"))
    meta["backbone"]["embed_dim"] = 48
    meta["backbone"]["depth"] = 3
    (out / "encoder.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_encoder(out)
    msg = str(err.value)
    assert (
        "encoder.safetensors" in msg
        and "missing keys (" in msg
        and "blocks.2.attn.qkv.weight" in msg
    )
    assert (
        "shape mismatches (" in msg and "blocks.0.attn.proj.bias: file (24,) vs model (48,)" in msg
    )
    meta["backbone"] = {"name": "vit", "embed_dimm": 24}
    (out / "encoder.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(DataError, match="field 'backbone'.*Did you mean 'embed_dim'"):
        load_encoder(out)
    assert enc.config["name"] == "vit"


def test_bad_sources_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no checkpoints/last.ckpt"):
        export(tmp_path)
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(
        DataError, match=r"not a medmim checkpoint: missing \['encoder', 'encoder_config'\]"
    ):
        export(tmp_path / "other.ckpt")
    torch.save({"encoder": Path("x"), "encoder_config": {}}, tmp_path / "unsafe.ckpt")
    with pytest.raises(DataError, match="weights_only=True"):
        export(tmp_path / "unsafe.ckpt")
    with pytest.raises(DataError, match="export a run first"):
        load_encoder(tmp_path)


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_checkpoint(tmp_path / "run", SWIN, DATA)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert main(["export", str(ckpt), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "encoder.safetensors" in printed and "load_into_swinunetr" in printed
    assert (tmp_path / "out" / "encoder.safetensors").is_file() and (
        tmp_path / "out" / "encoder.json"
    ).is_file()
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
