"""Synthetic CT phantoms: labels vs masks, HU ranges, geometry, determinism, derived
datasets, CLI.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medmim.cli import data_phantoms
from medmim.data.phantoms import ORGAN_CLASSES, ORGAN_LABELS, generate_phantoms, split_of
from medmim.data.synth.geometry import SIZES, sample_geometry
from medmim.data.synth.lesions import sample_nodule
from medmim.errors import ConfigError

SEED, N = 2, 4
L = {name: k for k, name in ORGAN_LABELS.items()}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("phantoms")
    summary = generate_phantoms(out, N, seed=SEED, size="small", nodules=(2, 3))
    return out, summary


def _load(root: Path, rel: str) -> tuple[np.ndarray, nib.Nifti1Image]:
    img = nib.load(root / rel)
    return np.asarray(img.dataobj), img


def _metas(root: Path) -> list[dict]:
    return [
        json.loads((root / "meta" / f"phantom_{i:04d}.json").read_text(encoding="utf-8"))
        for i in range(N)
    ]


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_summary_matches_files(phantoms):
    root, summary = phantoms
    rows = list(csv.DictReader((root / "nodules.csv").open(encoding="utf-8")))
    benign = sum(v["benign"] for v in summary["nodules"].values())
    malignant = sum(v["malignant"] for v in summary["nodules"].values())
    assert len(rows) == benign + malignant == sum(len(m["nodules"]) for m in _metas(root))
    assert sum(int(r["label"]) for r in rows) == malignant
    assert summary["splits"] == {"train": 2, "val": 1, "test": 1}
    assert [split_of(i, N) for i in range(N)] == ["train", "train", "val", "test"]
    assert summary["organ_crops"] == {o: N for o in ORGAN_CLASSES}
    assert sum(summary["tumors"].values()) == N
    assert json.loads((root / "phantoms.json").read_text(encoding="utf-8"))["n"] == N


def test_labels_consistent_with_masks(phantoms):
    root, _ = phantoms
    for meta in _metas(root):
        organs, _ = _load(root, meta["files"]["organs"])
        nodules, _ = _load(root, meta["files"]["nodules"])
        tumor, _ = _load(root, meta["files"]["tumor"])
        assert organs.dtype == nodules.dtype == tumor.dtype == np.uint8
        assert set(np.unique(organs)) == set(ORGAN_LABELS), meta["name"]
        ids = [n["id"] for n in meta["nodules"]]
        assert ids == list(range(1, len(ids) + 1)) and len(ids) >= 2
        assert set(np.unique(nodules)) == {0, *ids}
        for n in meta["nodules"]:
            assert nodules[tuple(n["center_voxel"])] == n["id"], (meta["name"], n["id"])
            # a nodule sits in a lung or against its wall, never in the air around the body
            host = organs[nodules == n["id"]]
            assert (host == 0).mean() < 0.05
            assert np.isin(host, [L["lung_left"], L["lung_right"]]).any()
        assert set(np.unique(tumor)) == {0, 1}
        inside = organs[tumor == 1]
        host = L[meta["tumor"]["organ"]]
        assert (inside == host).mean() > 0.5, meta["tumor"]


def test_hu_ranges_are_plausible(phantoms):
    root, _ = phantoms
    phases = set()
    for meta in _metas(root):
        hu, img = _load(root, meta["files"]["image"])
        organs, _ = _load(root, meta["files"]["organs"])
        assert hu.dtype == np.int16 and hu.min() >= -1024
        mean = {name: float(hu[organs == k].mean()) for k, name in ORGAN_LABELS.items()}
        assert mean["background"] < -950
        for lung in ("lung_left", "lung_right"):
            assert -900 < mean[lung] < -700, (meta["name"], lung, mean[lung])
        assert mean["spine"] > 300 and mean["ribs"] > 250
        assert -150 < mean["body"] < 60
        assert mean["airway"] < -700
        soft = (0, 100) if meta["phase"] == "native" else (60, 200)
        for organ in ("liver", "spleen", "kidney_left", "kidney_right", "heart"):
            assert soft[0] < mean[organ] < soft[1], (
                meta["name"],
                meta["phase"],
                organ,
                mean[organ],
            )
        phases.add(meta["phase"])
        tumor, _ = _load(root, meta["files"]["tumor"])
        lesion = float(hu[tumor == 1].mean())
        host = float(
            np.median(hu[(organs == L[meta["tumor"]["organ"]]) & (tumor == 0)])
        )  # parenchyma
        assert abs(lesion - host) > 15, ("the tumor stands out from its organ", meta["tumor"], host)
        assert lesion < mean["spine"], "but it is not the brightest structure"
    assert phases == {"native", "portal"}


def test_affine_and_spacing_round_trip(phantoms):
    root, _ = phantoms
    for meta in _metas(root):
        hu, img = _load(root, meta["files"]["image"])
        assert list(hu.shape) == meta["shape"]
        np.testing.assert_allclose(img.header.get_zooms(), meta["spacing"], rtol=1e-5)
        np.testing.assert_allclose(img.affine, meta["affine"], atol=1e-4)
        np.testing.assert_allclose(img.get_qform(), img.get_sform(), atol=1e-4)
        assert int(img.header["qform_code"]) == int(img.header["sform_code"]) == 1
        assert img.header.get_xyzt_units()[0] == "mm"
        assert nib.aff2axcodes(img.affine) == tuple(meta["orientation"])
        for n in meta["nodules"]:
            world = img.affine @ np.append(n["center_voxel"], 1.0)
            assert (
                np.linalg.norm(world[:3] - n["center_mm"])
                <= np.linalg.norm(meta["spacing"]) / 2 + 1e-3
            )
        for key in ("organs", "nodules", "tumor"):
            _, lab = _load(root, meta["files"][key])
            assert lab.shape == img.shape
            np.testing.assert_allclose(lab.affine, img.affine)


def test_spacing_varies_and_is_anisotropic():
    for size, spec in SIZES.items():
        spacings = []
        for seed in range(12):
            rng = np.random.default_rng(seed)
            geo = sample_geometry(
                rng, np.array([-160, -110, -160.0]), np.array([160, 110, 160.0]), spec
            )
            assert np.prod(geo.shape) <= spec.max_voxels, size
            assert spec.inplane[0] <= geo.spacing[0] == geo.spacing[1] <= spec.inplane[1]
            assert geo.spacing[2] in spec.slices
            spacings.append(geo.spacing)
        spacings = np.array(spacings)
        assert len(np.unique(spacings[:, 0])) > 6, size
        assert (spacings[:, 2] / spacings[:, 0] > 1.25).sum() >= 3, size
    geos = [
        sample_geometry(
            np.random.default_rng(s), np.full(3, -100.0), np.full(3, 100.0), SIZES["small"]
        )
        for s in range(20)
    ]
    tilted = [g for g in geos if g.tilt_deg != 0]
    assert 0 < len(tilted) < len(geos)
    direction = tilted[0].affine[:3, :3] / tilted[0].spacing
    assert np.abs(direction).max(0).min() < 0.9999, "an oblique grid is not along the world axes"
    assert {g.orientation for g in geos} >= {"RAS", "LPS"}


def test_same_seed_same_bytes(phantoms, tmp_path):
    root, _ = phantoms
    a, b = tmp_path / "a", tmp_path / "b"
    generate_phantoms(a, 2, seed=SEED, size="small", nodules=(2, 3))
    generate_phantoms(b, 2, seed=SEED, size="small", nodules=(2, 3), workers=2)
    ha, hb = _hashes(a), _hashes(b)
    assert ha == hb and len(ha) > 20
    full = _hashes(root)  # phantom i does not depend on n
    for rel in (
        "images/phantom_0000.nii.gz",
        "labels/phantom_0001_nodules.nii.gz",
        "meta/phantom_0001.json",
    ):
        assert ha[rel] == full[rel]


def test_malignant_larger_on_average_but_overlapping(phantoms):
    rng = np.random.default_rng(0)
    draws = [sample_nodule(rng, bool(i % 2)) for i in range(2000)]
    d = np.array([x["diameter_mm"] for x in draws])
    y = np.array([x["malignant"] for x in draws])
    assert d[y == 1].mean() > d[y == 0].mean() + 3
    assert 0.65 < roc_auc_score(y, d) < 0.85, "size alone must not solve the task"
    assert (d[y == 0] > np.median(d[y == 1])).mean() > 0.1
    assert np.mean([x["calcification"] != "none" for x in draws if not x["malignant"]]) > 0.25
    assert np.mean([x["spicules"] > 0 for x in draws if x["malignant"]]) > 0.4
    rows = list(csv.DictReader((phantoms[0] / "nodules.csv").open(encoding="utf-8")))
    assert {r["label"] for r in rows} == {"0", "1"}


def test_nodule_crops_and_manifest(phantoms):
    root, _ = phantoms
    rows = list(csv.DictReader((root / "nodules.csv").open(encoding="utf-8")))
    for r in rows:
        crop, img = _load(root, r["image"])
        mask, _ = _load(root, r["crop_mask"])
        assert crop.shape == mask.shape == (32, 32, 32) and crop.dtype == np.int16
        np.testing.assert_allclose(img.header.get_zooms(), (1.5, 1.5, 1.5))
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        np.testing.assert_allclose(
            img.affine @ [15.5, 15.5, 15.5, 1],
            [*map(float, (r["center_x_mm"], r["center_y_mm"], r["center_z_mm"])), 1],
            atol=0.01,
        )
        assert mask[14:18, 14:18, 14:18].any(), r["image"]
        assert (root / r["phantom_image"]).exists()
        assert r["split"] == split_of(int(r["phantom"].split("_")[1]), N)


def test_datalists_resolve(phantoms):
    root, _ = phantoms
    organs = json.loads((root / "organs.json").read_text(encoding="utf-8"))
    tumors = json.loads((root / "tumors.json").read_text(encoding="utf-8"))
    assert [len(organs[s]) for s in ("training", "validation", "test")] == [2, 1, 1]
    assert [len(tumors[s]) for s in ("training", "validation", "test")] == [2, 1, 1]
    for item in organs["training"] + organs["validation"] + organs["test"] + tumors["test"]:
        assert not Path(item["image"]).is_absolute()
        assert (root / item["image"]).exists() and (root / item["label"]).exists()
    assert organs["labels"]["7"] == "liver"


def test_organmnist_archives_follow_medmnist(phantoms):
    root, _ = phantoms
    for name, size in (("organmnist3d.npz", 28), ("organmnist3d_64.npz", 64)):
        with np.load(root / name, allow_pickle=False) as z:
            assert sorted(z.keys()) == sorted(
                f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")
            )
            for split, n_phantoms in (("train", 2), ("val", 1), ("test", 1)):
                images, labels = z[f"{split}_images"], z[f"{split}_labels"]
                assert (
                    images.shape == (9 * n_phantoms, size, size, size) and images.dtype == np.uint8
                )
                assert labels.shape == (9 * n_phantoms, 1) and labels.dtype == np.uint8
                assert sorted(labels[:, 0].tolist()) == sorted(list(range(9)) * n_phantoms)
                assert images.std() > 10
    with np.load(root / "organmnist3d.npz") as z:  # organs are told apart by appearance
        train = z["train_images"].reshape(18, -1).astype(float)
        centroids = np.stack([train[z["train_labels"][:, 0] == c].mean(0) for c in range(9)])
        test = z["test_images"].reshape(9, -1).astype(float)
        pred = np.argmin(((test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
        assert (pred == z["test_labels"][:, 0]).mean() >= 4 / 9


def test_cli_smoke(phantoms, tmp_path, capsys):
    out = tmp_path / "cli"
    parser = argparse.ArgumentParser()
    data_phantoms.add_arguments(parser)
    args = parser.parse_args(
        [
            "--out",
            str(out),
            "--n",
            "1",
            "--size",
            "small",
            "--nodules",
            "1",
            "1",
            "--seed",
            str(SEED + 1),
        ]
    )
    assert data_phantoms.run(args) == 0
    other_seed = _hashes(out)["images/phantom_0000.nii.gz"]
    assert other_seed != _hashes(phantoms[0])["images/phantom_0000.nii.gz"]
    text = capsys.readouterr().out
    assert "wrote 1 phantoms" in text and "nodules:" in text
    assert len(list(csv.DictReader((out / "nodules.csv").open(encoding="utf-8")))) == 1
    with np.load(out / "organmnist3d.npz") as z:
        assert z["val_images"].shape == (0, 28, 28, 28) and z["train_labels"].shape == (9, 1)


def test_bad_options_are_named():
    with pytest.raises(ConfigError, match="Did you mean 'small'"):
        generate_phantoms("/nonexistent", 1, size="smal")
    with pytest.raises(ConfigError, match="n=0"):
        generate_phantoms("/nonexistent", 0)
