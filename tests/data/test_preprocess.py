"""Recipe steps: orientation, resampling, intensity, foreground crop (and its box), padding,
presets, and parity with a plain MONAI pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from monai.transforms import Compose, Orientation, ScaleIntensityRange, Spacing

from medmim.data.config import RecipeConfig
from medmim.data.io import load_volume
from medmim.data.preprocess import check_recipe, get_recipe, preprocess, recipe_from_args
from medmim.errors import ConfigError, DataError

RAW = dict(orientation="", spacing=None, intensity="none", foreground_crop=False)


def test_orientation_to_ras(tmp_path: Path, scans) -> None:
    array = scans.ct_array()
    lps = scans.ras_affine() @ np.diag([-1.0, -1.0, 1.0, 1.0])  # x and y flipped
    vol = load_volume(scans.write_nifti(tmp_path / "lps.nii.gz", array, lps))
    out = preprocess(vol, RecipeConfig(**{**RAW, "orientation": "RAS"}))
    np.testing.assert_array_equal(out.array[0], array[::-1, ::-1, :])
    assert np.all(np.diag(np.asarray(out.meta["affine"]))[:3] > 0)
    np.testing.assert_allclose(out.meta["original_affine"], lps)


def test_resample_to_target_spacing(ct_file: Path, scans) -> None:
    out = preprocess(load_volume(ct_file), RecipeConfig(**{**RAW, "spacing": [2.0, 2.0, 2.0]}))
    assert out.meta["spacing"] == [2.0, 2.0, 2.0]
    extent = np.asarray(scans.SHAPE) * np.asarray(scans.SPACING)
    assert np.all(np.abs(np.asarray(out.array.shape[1:]) - extent / 2.0) <= 1.0)
    assert out.meta["original_shape"] == list(scans.SHAPE) and out.meta["original_spacing"] == list(
        scans.SPACING
    )


def test_ct_window(tmp_path: Path, scans) -> None:
    values = np.array([-2000, -750, 500, 1750, 3000], np.float32)
    array = np.broadcast_to(values[:, None, None], (5, 4, 4)).copy()
    vol = load_volume(scans.write_nifti(tmp_path / "w.nii.gz", array, np.eye(4)))
    out = preprocess(vol, RecipeConfig(**{**RAW, "intensity": "ct", "window": [-750, 1750]}))
    np.testing.assert_allclose(out.array[0, :, 0, 0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_mr_normalisations(tmp_path: Path, scans) -> None:
    rng = np.random.default_rng(0)
    array = rng.gamma(2.0, 100.0, (20, 18, 16)).astype(np.float32)
    vol = load_volume(scans.write_nifti(tmp_path / "mr.nii.gz", array, np.eye(4)))
    z = preprocess(vol, RecipeConfig(**{**RAW, "intensity": "mr_zscore"})).array
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3
    p = preprocess(
        vol, RecipeConfig(**{**RAW, "intensity": "mr_percentile", "percentiles": [1, 99]})
    ).array
    assert p.min() == 0.0 and p.max() == 1.0
    assert np.isclose((p == 0).mean(), 0.01, atol=0.002) and np.isclose(
        (p == 1).mean(), 0.01, atol=0.002
    )


@pytest.mark.parametrize("flip", [False, True])
def test_foreground_crop_box_maps_back_to_the_file(tmp_path: Path, scans, flip: bool) -> None:
    array = np.full((30, 26, 20), -1000, np.int16)
    array[4:21, 7:19, 2:15] = 50
    affine = scans.ras_affine() @ (np.diag([-1.0, 1.0, -1.0, 1.0]) if flip else np.eye(4))
    vol = load_volume(scans.write_nifti(tmp_path / "fg.nii.gz", array, affine))
    out = preprocess(vol, RecipeConfig(**{**RAW, "orientation": "RAS", "foreground_crop": True}))
    assert out.meta["crop_box"] == [[4, 21], [7, 19], [2, 15]]
    assert out.array.shape == (1, 17, 12, 13) and (out.array == 50).all()
    # the cached voxel (0, 0, 0) sits at the world position of the box's RAS-most-negative corner
    world = np.asarray(out.meta["affine"]) @ [0, 0, 0, 1]
    index = np.linalg.inv(affine) @ world
    assert np.round(index[:3]).astype(int).tolist() == ([20, 7, 14] if flip else [4, 7, 2])


def test_pad_to_with_background(ct_file: Path) -> None:
    out = preprocess(
        load_volume(ct_file), RecipeConfig(spacing=[2.0, 2.0, 2.0], pad_to=[32, 32, 32])
    )
    assert out.array.shape == (1, 32, 32, 32) and out.meta["background"] == 0.0
    assert out.array[0, 0, 0, 0] == 0.0 and 0.0 <= out.array.min() and out.array.max() <= 1.0


def test_no_foreground_is_a_data_error(tmp_path: Path, scans) -> None:
    vol = load_volume(
        scans.write_nifti(tmp_path / "air.nii.gz", np.full((8, 8, 8), -1000, np.int16))
    )
    with pytest.raises(DataError, match="no voxel above the CT window floor -750 HU") as info:
        preprocess(vol, RecipeConfig())
    assert info.value.path == str(tmp_path / "air.nii.gz")


def test_parity_with_plain_monai_pipeline(ct_file: Path) -> None:
    vol = load_volume(ct_file)
    ours = preprocess(
        vol, RecipeConfig(spacing=[2.0, 2.0, 2.0], window=[-175, 250], foreground_crop=False)
    )
    ref = Compose(
        [
            Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacing(pixdim=(2.0, 2.0, 2.0), mode="bilinear", dtype=np.float32),
            ScaleIntensityRange(-175, 250, 0.0, 1.0, clip=True),
        ]
    )(load_volume(ct_file))
    np.testing.assert_allclose(ours.array, ref.numpy(), atol=1e-6)
    np.testing.assert_allclose(ours.meta["affine"], ref.affine.numpy(), atol=1e-6)


def test_presets_and_validation() -> None:
    assert get_recipe("smart").spacing == [2.0, 2.0, 2.0]
    assert get_recipe("smit").spacing == [1.5, 1.5, 2.0]
    assert get_recipe("smart", pad_to=[64, 64, 64]).pad_to == [64, 64, 64]
    assert get_recipe("smart").pad_to is None  # presets are not mutated
    with pytest.raises(ConfigError, match="unknown recipe 'smrt'. Did you mean 'smart'"):
        get_recipe("smrt")
    with pytest.raises(ConfigError, match="intensity='ctt' is unknown. Did you mean 'ct'"):
        check_recipe({"intensity": "ctt"})
    with pytest.raises(ConfigError, match=r"window=\[100.0, 50.0\]"):
        check_recipe({"window": [100, 50]})
    with pytest.raises(ConfigError, match="orientation='RAA'"):
        check_recipe({"orientation": "RAA"})
    assert recipe_from_args("smit", ["spacing=[1,1,1]", "window=[-1000,400]"]).window == [
        -1000,
        400,
    ]
    with pytest.raises(ConfigError, match="Did you mean 'spacing'"):
        recipe_from_args("smart", ["spcing=[1,1,1]"])
