"""`medmim embed` and the Python API (`medmim.load_encoder`, `medmim.load_into_swinunetr`)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _toy_data import write_medmnist
from monai.data import MetaTensor
from safetensors.torch import load_file

import medmim
from medmim.cli.main import main
from medmim.errors import ConfigError, DataError


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_embed_rows_equal_the_api(swin_export: Path, labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "emb"
    args = [
        "embed",
        "--encoder",
        str(swin_export),
        "--source",
        str(labelled),
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--no-progress",
    ]
    assert main(args) == 0
    feats = np.load(out / "embeddings.npy")
    rows = _rows(out / "index.csv")
    meta = json.loads((out / "embed.json").read_text(encoding="utf-8"))
    assert feats.dtype == np.float32 and feats.shape == (3, meta["dim"]) and len(rows) == 3
    assert [r["row"] for r in rows] == ["0", "1", "2"]
    assert rows[1]["name"].endswith("case_1.nii.gz") and rows[1]["label"].endswith("case_1.nii.gz")
    assert {r["feature"] for r in rows} == {"cls"} and meta["feature_used"] == "cls"  # SA [CLS]
    assert meta["size"] == [64, 64, 64] and meta["recipe"]["window"] == [-200.0, 300.0]
    assert meta["medmim_version"] == medmim.__version__ and meta["num_skipped"] == 0
    assert not (out / "skipped.jsonl").exists()
    encoder = medmim.load_encoder(swin_export)
    for i in (0, 2):
        np.testing.assert_allclose(encoder.embed(rows[i]["name"]), feats[i], rtol=1e-4, atol=1e-5)
    # the old flag names give the same rows
    assert (
        main(
            [
                *args[:3],
                "--data",
                str(labelled),
                "--out",
                str(tmp_path / "old"),
                "--size",
                "64",
                "--key",
                "image",
                "--no-progress",
            ]
        )
        == 0
    )
    np.testing.assert_allclose(np.load(tmp_path / "old" / "embeddings.npy"), feats, atol=1e-5)


def test_api_inputs(vit_export: Path, labelled: Path) -> None:
    path = str(labelled.parent / "images" / "case_0.nii.gz")
    encoder = medmim.load_encoder(vit_export, device="cpu")
    assert encoder.meta["backbone"]["name"] == "vit" and "Encoder(vit" in repr(encoder)
    from_path = encoder.embed(path)
    assert from_path.shape == (24,) and from_path.dtype == np.float32
    array = np.asarray(nib.load(path).dataobj, dtype=np.float32)  # (X, Y, Z) in HU
    np.testing.assert_allclose(encoder.embed(array), from_path, atol=1e-5)
    meta_tensor = MetaTensor(torch.from_numpy(array)[None])
    np.testing.assert_allclose(encoder.embed(meta_tensor), from_path, atol=1e-5)
    both = encoder.embed([path, array * 0.5])
    assert both.shape == (2, 24)
    np.testing.assert_allclose(both[0], from_path, atol=1e-5)
    assert not np.allclose(both[1], from_path, atol=1e-3)  # another input, another embedding
    feats = encoder.features(encoder.preprocess(path))
    assert feats["patch"].shape == (1, 64, 24) and feats["cls"].shape == (1, 24)
    with pytest.raises(ConfigError, match=r"give a path, an array \(X, Y, Z\)"):
        encoder.embed(np.zeros((2, 8, 8, 8)))


def test_scratch_encoders_load(swin_export: Path, labelled: Path) -> None:
    path = str(labelled.parent / "images" / "case_0.nii.gz")
    a = medmim.load_encoder(f"scratch:{swin_export}", seed=1)
    b = medmim.load_encoder(f"scratch:{swin_export}", seed=1)
    assert a.meta["method"] == "scratch" and not a.meta["pretrained"]
    np.testing.assert_allclose(a.embed(path), b.embed(path))  # seeded init
    assert not np.allclose(a.embed(path), medmim.load_encoder(swin_export).embed(path))
    preset = medmim.load_encoder("scratch:vit_demo", feature="pooled", size=(32, 32, 32))
    assert preset.embed(path).ndim == 1 and preset.feature_used == "pooled"


def test_medmnist_embeddings_equal_cluster(swin_export: Path, tmp_path: Path) -> None:
    """An npz goes through the same path as `medmim cluster` (0..255 -> [0, 1], resize)."""
    npz = write_medmnist(tmp_path / "organ.npz", counts=(2, 2, 4), classes=2)
    common = [
        "--encoder",
        str(swin_export),
        "--source",
        str(npz),
        "--split",
        "test",
        "--resize",
        "32",
        "--feature",
        "pooled",
        "--no-progress",
    ]
    assert main(["cluster", *common, "--out", str(tmp_path / "clu"), "--projection", "pca"]) == 0
    assert main(["embed", *common, "--out", str(tmp_path / "emb")]) == 0
    with np.load(tmp_path / "clu" / "embeddings.npz") as z:
        reference = z["features"]
    np.testing.assert_allclose(np.load(tmp_path / "emb" / "embeddings.npy"), reference, atol=1e-5)
    rows = _rows(tmp_path / "emb" / "index.csv")
    assert rows[3]["name"].endswith("organ.npz::test_images[3]") and rows[3]["label"] == "1"
    assert json.loads((tmp_path / "emb" / "embed.json").read_text())["recipe"]["window"] == [
        0.0,
        255.0,
    ]


def test_bad_files_are_listed_not_raised(
    vit_export: Path, labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("a", "c"):
        src = labelled.parent / "images" / "case_0.nii.gz"
        (folder / f"{name}.nii.gz").write_bytes(src.read_bytes())
    (folder / "b.nii.gz").write_bytes(b"not a nifti")
    out = tmp_path / "emb"
    base = ["embed", "--encoder", str(vit_export), "--source", str(folder), "--no-progress"]
    assert main([*base, "--out", str(out), "--num-workers", "0"]) == 0
    assert [Path(r["name"]).name for r in _rows(out / "index.csv")] == ["a.nii.gz", "c.nii.gz"]
    assert "label" not in _rows(out / "index.csv")[0]  # a folder has no labels
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert len(skipped) == 1 and skipped[0]["path"].endswith("b.nii.gz") and skipped[0]["reason"]
    assert "skipped 1" in capsys.readouterr().out
    assert np.load(out / "embeddings.npy").shape == (2, 24)
    assert main([*base, "--out", str(tmp_path / "fail"), "--on-error", "fail"]) == 2
    assert "b.nii.gz" in capsys.readouterr().err
    (folder / "a.nii.gz").write_bytes(b"broken too")
    (folder / "c.nii.gz").write_bytes(b"broken too")
    with pytest.raises(DataError, match="none of its 3 scans could be read"):
        from medmim.eval.embed import EmbedOptions, run_embed

        run_embed(vit_export, folder, tmp_path / "none", EmbedOptions(progress=False))


def test_load_into_swinunetr(swin_export: Path, vit_export: Path) -> None:
    net = medmim.load_into_swinunetr(swin_export, out_channels=3)
    assert type(net).__name__ == "SwinUNETR"
    saved = load_file(str(swin_export / "encoder.safetensors"))
    own = net.swinViT.state_dict()
    swin_keys = [k for k in saved if k.startswith("swinViT.")]
    assert swin_keys and len(swin_keys) == len(own)
    for key in swin_keys:
        assert torch.equal(own[key[len("swinViT.") :]], saved[key]), key
    with pytest.raises(ConfigError, match="give out_channels=K"):
        medmim.load_into_swinunetr(swin_export)
    with pytest.raises(DataError, match="holds a 'vit' encoder, not a Swin one"):
        medmim.load_into_swinunetr(vit_export, out_channels=3)


def test_import_medmim_stays_cheap() -> None:
    code = "import sys, medmim; assert 'torch' not in sys.modules; print(sorted(medmim.__all__))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "load_encoder" in done.stdout and "load_into_swinunetr" in done.stdout
