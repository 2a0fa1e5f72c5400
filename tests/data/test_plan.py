"""Plans (fingerprint -> recipe, spacing, crop), the data.recipe shortcut, data.plan in run
configs, the foreground z-score and the recipe-vs-modality check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from monai.transforms import NormalizeIntensity

from medmim.config import load_config
from medmim.data.fingerprint import fingerprint
from medmim.data.io import load_volume
from medmim.data.plan import crop_size, make_plan, target_spacing, to_ras, write_plan
from medmim.data.preprocess import foreground_zscore, preprocess
from medmim.data.recipe_check import check_recipe_modality, recipe_modality
from medmim.data.sources import resolve_source
from medmim.errors import ConfigError
from medmim.train.config import RunConfig


@pytest.fixture
def ct_dir(tmp_path: Path, scans) -> Path:
    for i in range(2):
        scans.write_nifti(tmp_path / "ct" / f"ct{i}.nii.gz", scans.ct_array(seed=i))
    return tmp_path / "ct"


def _plan(source: Path) -> dict:
    return make_plan(fingerprint(resolve_source(source), samples=2000, progress=False), str(source))


def test_plan_of_an_mri_picks_the_foreground_zscore(mr_dir: Path) -> None:
    plan = _plan(mr_dir)
    assert plan["modality"] == "MR" and plan["preset"] == "mr"
    assert plan["recipe"]["intensity"] == "mr_zscore" and "window" not in plan["recipe"]
    assert plan["spacing"]["target"] == [2.0, 2.0, 2.0] and not plan["spacing"]["anisotropic"]
    assert plan["crop_size"] == [32, 32, 32]  # 33 x 41 x 25 voxels: the smallest Swin crop


def test_plan_of_ct_picks_the_hu_window(ct_dir: Path, scans) -> None:
    plan = _plan(ct_dir)
    assert plan["modality"] == "CT" and plan["preset"] == "smart"
    assert plan["recipe"]["intensity"] == "ct" and plan["recipe"]["window"][0] < 0
    np.testing.assert_allclose(plan["spacing"]["median"], scans.SPACING)
    # 0.9 / 2.5 < 1/3: anisotropic, so z gets the 10th percentile of the z spacings (all 2.5)
    assert plan["spacing"]["anisotropic"] and plan["spacing"]["target"][2] == 2.5
    assert all(c % 32 == 0 and c <= 96 for c in plan["crop_size"])


def test_target_spacing_rule() -> None:
    iso = np.array([[1.0, 1.0, 1.2], [0.8, 0.8, 1.0], [1.0, 1.0, 1.0]])
    assert target_spacing(iso) == ([1.0, 1.0, 1.0], False)
    # thick slices: median z = 5 > 3 x 0.8; 10th percentile of 11 z spacings = the 2nd smallest
    z = [1.0, 2.0] + [5.0] * 9
    aniso = np.array([[0.8, 0.8, s] for s in z])
    target, anisotropic = target_spacing(aniso)
    assert anisotropic and target == pytest.approx([0.8, 0.8, 2.0])


def test_crop_size_and_ras_order() -> None:
    assert crop_size([200, 70, 20], 32, 96) == [96, 64, 32]
    assert crop_size([200, 70, 20], 16, 128) == [128, 64, 16]
    assert to_ras([1.0, 2.0, 3.0], "PSR") == [3.0, 1.0, 2.0]
    assert to_ras([1.0, 2.0, 3.0], "LAS") == [1.0, 2.0, 3.0]


def test_written_plan_is_commented_yaml(tmp_path: Path, mr_dir: Path) -> None:
    path = write_plan(_plan(mr_dir), tmp_path / "plan.yaml")
    text = path.read_text()
    assert text.startswith("# medmim plan of") and "data.plan=" in text and "&id" not in text
    assert yaml.safe_load(text)["recipe"]["intensity"] == "mr_zscore"


def test_recipe_shortcut_then_field_overrides() -> None:
    cfg = load_config("smart_demo", ["data.recipe=mr", "data.recipe.spacing=[1.5,1,1]"], RunConfig)
    assert cfg.data.recipe.intensity == "mr_zscore" and list(cfg.data.recipe.spacing) == [1.5, 1, 1]
    # the other order: the shortcut replaces the whole recipe
    cfg = load_config("smart_demo", ["data.recipe.spacing=[1.5,1,1]", "data.recipe=ct"], RunConfig)
    assert cfg.data.recipe.intensity == "ct" and list(cfg.data.recipe.spacing) == [2, 2, 2]
    with pytest.raises(ConfigError, match="Did you mean 'smart'"):
        load_config("smart_demo", ["data.recipe=smrt"], RunConfig)
    with pytest.raises(ConfigError, match="intensity mode.*data.recipe=mr.*intensity=mr_zscore"):
        load_config("smart_demo", ["data.recipe=mr_zscore"], RunConfig)


def test_recipe_shortcut_in_yaml(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("base: smart_demo\ndata:\n  recipe: mr\n")
    cfg = load_config(tmp_path / "mine.yaml", [], RunConfig)
    assert cfg.data.recipe.intensity == "mr_zscore"


def test_plan_fills_recipe_and_crop_and_overrides_win(tmp_path: Path, mr_dir: Path) -> None:
    plan = write_plan(_plan(mr_dir), tmp_path / "plan.yaml")
    cfg = load_config("smart_demo", [f"data.plan={plan}"], RunConfig)
    assert cfg.data.recipe.intensity == "mr_zscore" and list(cfg.data.crop_size) == [32, 32, 32]
    assert cfg.data.plan == ""  # the config holds the plan's values, not the file
    later = ["data.crop_size=[64,64,64]", f"data.plan={plan}", "data.recipe.percentiles=[1,99]"]
    cfg = load_config("smart_demo", later, RunConfig)
    assert list(cfg.data.crop_size) == [64, 64, 64]
    assert list(cfg.data.recipe.percentiles) == [1, 99] and cfg.data.recipe.intensity == "mr_zscore"
    with pytest.raises(ConfigError, match="medmim data plan"):
        load_config("smart_demo", [f"data.plan={tmp_path / 'none.yaml'}"], RunConfig)


def test_foreground_zscore_inside_the_foreground() -> None:
    rng = np.random.default_rng(0)
    img = torch.zeros(1, 20, 18, 16)
    img[:, 4:16, 3:15, 2:14] = torch.from_numpy(rng.gamma(2.0, 300.0, (1, 12, 12, 12))).float()
    mask = img > 0
    out = foreground_zscore(img, [0.5, 99.5])
    assert abs(float(out[mask].mean())) < 1e-4 and abs(float(out[mask].std()) - 1) < 1e-2
    assert bool((out[~mask] == 0).all())
    # no clip: the same as MONAI's NormalizeIntensity(nonzero=True) on a zero background
    ours = foreground_zscore(img, [0, 100])
    ref = NormalizeIntensity(nonzero=True)(img.clone())
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert float(foreground_zscore(img, [5, 95])[mask].max()) < float(ours[mask].max())  # clipped


def test_mr_recipe_on_a_real_mri(mr_dir: Path) -> None:
    out = preprocess(load_volume(mr_dir / "t1.nii"), {"intensity": "mr_zscore"})
    fg = out.array != out.meta["background"]
    assert out.meta["background"] == 0.0 and fg.mean() > 0.5
    assert abs(out.array[fg].mean()) < 1e-3 and abs(out.array[fg].std() - 1) < 1e-2


def test_recipe_check(mr_dir: Path, ct_dir: Path, tmp_path: Path) -> None:
    mr, ct = resolve_source(mr_dir), resolve_source(ct_dir)
    with pytest.raises(ConfigError, match="look like MR.*data.plan=plan.yaml.*data.recipe=mr"):
        check_recipe_modality(mr, {"intensity": "ct"})
    with pytest.raises(ConfigError, match="look like CT.*data.recipe=ct"):
        check_recipe_modality(ct, {"intensity": "mr_zscore"})
    assert check_recipe_modality(mr, {"intensity": "mr_zscore"})["scans"] == {mr[0].name: "MR"}
    assert check_recipe_modality(ct, {"intensity": "ct"})["recipe"] == "CT"
    assert recipe_modality({"intensity": "mr_percentile"}) is None  # PUMIT: CT and MR alike
    # MedMNIST: uint8 0..255 under the medmnist recipe (a window from 0, not HU) is fine
    npz = tmp_path / "m.npz"
    np.savez(npz, train_images=np.zeros((2, 8, 8, 8), np.uint8), train_labels=np.zeros((2, 1)))
    mnist = resolve_source(npz, split="train")
    medmnist = {"orientation": "", "spacing": None, "window": [0.0, 255.0]}
    assert recipe_modality(medmnist) is None and not check_recipe_modality(mnist, medmnist)["scans"]
    with pytest.raises(ConfigError, match="data.recipe=medmnist"):
        check_recipe_modality(mnist, {"intensity": "ct"})
