"""Preprocessing recipes: what happens to a scan once, before it is cached.

Order (each step a MONAI transform, each optional through `RecipeConfig`):

1. `Orientation` to `recipe.orientation` (RAS).
2. Foreground crop on the oriented native grid, on raw intensities: CT voxels above the window
   floor (`HU > window[0]`, i.e. the body and not the air around it), other modalities voxels
   above the minimum. Cropping before resampling is cheaper and gives an exact crop box in the
   original file's voxel indices.
3. `Spacing` to `recipe.spacing` mm (bilinear), or the native spacing when null.
4. Intensity: "ct" maps the HU window [a, b] linearly to [0, 1] and clips,
   x' = clip((x - a) / (b - a), 0, 1); "mr_percentile" does the same between the volume's
   percentiles; "mr_zscore" normalises inside the foreground F (voxels above the volume's
   minimum, as the foreground crop): x is clipped to the `recipe.percentiles` of its values in
   F, then x' = (x - mean_F) / std_F in F and x' = 0 (the foreground mean) outside it, as
   MONAI's `NormalizeIntensity(nonzero=True)` and nnU-Net's MR z-score do; "none" keeps the
   values.
5. `SpatialPad` (symmetric) to at least `recipe.pad_to` with the background value: 0 for "ct",
   "mr_percentile" and "mr_zscore" (air / the low percentile / the background), the volume's
   minimum for "none".

The result keeps what maps it back to the scan: the cached array's affine (voxel -> RAS mm) and
spacing, the original shape, spacing and affine, and the crop box in original voxel indices.

Presets (`RECIPES`), from the papers where they say, else from their public code:

- "smart": SMART (Jiang et al. 2024, Sec. 4.2) 2 mm isotropic; HU window -750..1750 from the
  SMART data loader (the paper gives no window).
- "smit": SMIT (Jiang et al. 2022, Sec. 3) 1.5 x 1.5 x 2 mm; HU window -175..250 from the public
  SMIT/SMART MONAI pipelines (the paper gives no window).
- "native_ct": CT at the native spacing; "mr": foreground z-score at 1 mm isotropic;
- "medmnist": MedMNIST v2 3D volumes (uint8, already resampled): window 0..255 -> [0, 1].
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import yaml
from monai.data import MetaTensor
from monai.transforms import (
    NormalizeIntensity,
    Orientation,
    ScaleIntensityRange,
    ScaleIntensityRangePercentiles,
    Spacing,
    SpatialCrop,
    SpatialPad,
)
from monai.transforms.utils import generate_spatial_bounding_box

from medmim.data.config import RECIPES, RecipeConfig, as_recipe
from medmim.data.io import spacing_of
from medmim.errors import ConfigError, DataError, did_you_mean

INTENSITIES = ("ct", "mr_percentile", "mr_zscore", "none")
#: Other names of presets: `data.recipe=ct` is the default CT recipe.
RECIPE_ALIASES = {"ct": "smart"}
CACHE_DTYPES = ("float32", "float16")
_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def get_recipe(name: str, **overrides: Any) -> RecipeConfig:
    """A copy of the preset `name` (or alias, `RECIPE_ALIASES`) with `overrides` applied."""
    preset = RECIPES[preset_name(name)]
    return check_recipe(dataclasses.replace(copy.deepcopy(preset), **overrides))


def preset_name(name: str, field: str = "data.recipe") -> str:
    """The preset a recipe name stands for ("ct" -> "smart").

    Raises:
        ConfigError: an intensity mode given as a recipe, or an unknown name (did-you-mean);
            `field` is what the message calls the setting ("data.recipe", "--recipe").
    """
    name = str(name).strip()
    if name in RECIPES:
        return name
    if name.lower() in RECIPE_ALIASES:
        return RECIPE_ALIASES[name.lower()]
    choices = [*RECIPES, *RECIPE_ALIASES]
    if name in INTENSITIES:
        preset = "mr" if name.startswith("mr") else "ct" if name == "ct" else "smart"
        other = (
            f"set data.recipe.intensity={name} on a recipe"
            if field.startswith("data.")
            else f"set the recipe's intensity field to {name} (`--set`, a plan's recipe)"
        )
        raise ConfigError(
            f"{field}={name}: '{name}' is an intensity mode, not a recipe: use {field}={preset}, "
            f"or {other}. Recipes: {', '.join(choices)}"
        )
    raise ConfigError(
        f"{field}={name}: unknown recipe '{name}'.{did_you_mean(name, choices)} Recipes: "
        f"{', '.join(choices)} (ct = smart)"
    )


def preset_fields(name: str, field: str = "data.recipe") -> dict[str, Any]:
    """The fields of the preset `name` as a plain dict: what `data.recipe=mr` expands to."""
    return dataclasses.asdict(RECIPES[preset_name(name, field)])


def recipe_from_args(name: str, overrides: Sequence[str] = ()) -> RecipeConfig:
    """A preset with `field=value` overrides (values parsed as YAML), as the CLI takes them."""
    fields = [f.name for f in dataclasses.fields(RecipeConfig)]
    changes: dict[str, Any] = {}
    for item in overrides:
        field, sep, text = item.partition("=")
        if not sep or field not in fields:
            raise ConfigError(
                f"recipe override '{item}': give FIELD=VALUE with FIELD one of "
                f"{fields}.{did_you_mean(field, fields)}"
            )
        changes[field] = yaml.safe_load(text)
    return get_recipe(preset_name(name, "--recipe"), **changes)


def check_recipe(recipe: Any) -> RecipeConfig:
    """Validate a recipe (dataclass, dict or OmegaConf node); errors name the field and the fix."""
    recipe = as_recipe(recipe)
    if recipe.intensity not in INTENSITIES:
        raise ConfigError(
            f"data.recipe.intensity='{recipe.intensity}' is unknown."
            f"{did_you_mean(recipe.intensity, INTENSITIES)} Choose from {', '.join(INTENSITIES)}"
        )
    if recipe.cache_dtype not in CACHE_DTYPES:
        raise ConfigError(
            f"data.recipe.cache_dtype='{recipe.cache_dtype}': choose from {CACHE_DTYPES}"
        )
    if len(recipe.window) != 2 or recipe.window[0] >= recipe.window[1]:
        raise ConfigError(
            f"data.recipe.window={list(recipe.window)}: give [low, high] with low < high"
        )
    if recipe.spacing is not None and (len(recipe.spacing) != 3 or min(recipe.spacing) <= 0):
        raise ConfigError(
            f"data.recipe.spacing={list(recipe.spacing)}: give 3 positive mm values or null"
        )
    if recipe.pad_to is not None and len(recipe.pad_to) != 3:
        raise ConfigError(f"data.recipe.pad_to={list(recipe.pad_to)}: give 3 sizes or null")
    axes = recipe.orientation.upper()
    if axes and (len(axes) != 3 or any(len(set(p) & set(axes)) != 1 for p in ("LR", "AP", "SI"))):
        raise ConfigError(
            f"data.recipe.orientation='{recipe.orientation}': give axcodes such as 'RAS', or ''"
        )
    return recipe


def recipe_dict(recipe: Any) -> dict[str, Any]:
    """The recipe as a plain JSON-able dict (what the cache key and the export sidecar hold),
    numbers canonical (window [-500, 500] and [-500.0, 500.0] are one recipe).
    """
    out = dataclasses.asdict(check_recipe(recipe))
    for key in ("spacing", "window", "percentiles"):
        out[key] = None if out[key] is None else [float(v) for v in out[key]]
    out["pad_to"] = None if out["pad_to"] is None else [int(v) for v in out["pad_to"]]
    out["orientation"] = out["orientation"].upper()
    return out


@dataclass
class Preprocessed:
    """A preprocessed volume.

    Attributes:
        array: float32 (1, X, Y, Z), axes in the recipe's orientation.
        meta: JSON-able geometry: 'spacing', 'affine' of `array`; 'original_shape',
            'original_spacing', 'original_affine' of the file; 'crop_box' [[start, stop] per
            axis] in the file's voxel indices; 'background' (the padding value).
    """

    array: np.ndarray
    meta: dict[str, Any]


def preprocess(volume: MetaTensor, recipe: Any) -> Preprocessed:
    """Apply a recipe to a volume from `medmim.data.io.load_volume` (shape (1, X, Y, Z))."""
    recipe = check_recipe(recipe)
    path = volume.meta.get("filename_or_obj", "<volume>")
    original_affine = volume.affine.clone().double()
    original_shape = list(volume.shape[1:])
    img = (
        Orientation(axcodes=recipe.orientation.upper(), labels=_LABELS)(volume)
        if recipe.orientation
        else volume
    )
    start, stop = [0, 0, 0], list(img.shape[1:])
    if recipe.foreground_crop:
        start, stop = foreground_box(img, recipe)
        if min(b - a for a, b in zip(start, stop)) <= 0:
            raise DataError(path, _no_foreground(recipe))
        img = SpatialCrop(roi_start=start, roi_end=stop)(img)
    crop_box = _to_original_box(img.affine, original_affine, start, stop)
    if recipe.spacing is not None:
        img = Spacing(pixdim=recipe.spacing, mode="bilinear", dtype=np.float32)(img)
    img = normalize_intensity(img, recipe)
    background = float(img.min()) if recipe.intensity == "none" else 0.0
    if recipe.pad_to is not None:
        img = SpatialPad(spatial_size=list(recipe.pad_to), value=background)(img)
    affine = img.affine.double().numpy()
    meta = {
        "shape": list(img.shape[1:]),
        "spacing": spacing_of(affine).round(6).tolist(),
        "affine": affine.tolist(),
        "original_shape": original_shape,
        "original_spacing": spacing_of(original_affine).round(6).tolist(),
        "original_affine": original_affine.numpy().tolist(),
        "crop_box": crop_box,
        "background": background,
    }
    return Preprocessed(np.ascontiguousarray(img.numpy(), dtype=np.float32), meta)


def foreground_box(img: torch.Tensor, recipe: RecipeConfig) -> tuple[list[int], list[int]]:
    """Bounding box [start, stop) of the foreground: HU above the window floor for CT, else
    values above the volume's minimum.
    """
    floor = recipe.window[0] if recipe.intensity == "ct" else float(img.min())
    start, stop = generate_spatial_bounding_box(img, select_fn=lambda x: x > floor)
    return [int(s) for s in start], [int(s) for s in stop]


def normalize_intensity(img: torch.Tensor, recipe: RecipeConfig) -> torch.Tensor:
    """Step 4 of the recipe (see the module docstring)."""
    if recipe.intensity == "ct":
        low, high = recipe.window
        return ScaleIntensityRange(low, high, 0.0, 1.0, clip=True)(img)
    if recipe.intensity == "mr_percentile":
        low, high = recipe.percentiles
        return ScaleIntensityRangePercentiles(low, high, 0.0, 1.0, clip=True)(img)
    if recipe.intensity == "mr_zscore":
        return foreground_zscore(img, recipe.percentiles)
    return img


def foreground_mask(img: torch.Tensor) -> torch.Tensor:
    """Voxels above the volume's minimum (the MR foreground of `foreground_box`). A margin of
    1e-6 of the range keeps the background of a resampled volume, whose interpolated constant
    may differ from the minimum in the last float bits, out of the mask.
    """
    low, high = float(img.min()), float(img.max())
    return img > low + 1e-6 * (high - low)


def foreground_zscore(img: torch.Tensor, percentiles: Sequence[float]) -> torch.Tensor:
    """Foreground z-score (step 4, "mr_zscore"): clip to the foreground's `percentiles`, then
    MONAI's `NormalizeIntensity(nonzero=True)` on the foreground shifted to start above 0, so
    that its mean and std are taken over the foreground only; the background becomes 0.

    Args:
        img: (C, X, Y, Z) volume (a MetaTensor keeps its meta).
        percentiles: [low, high] in percent, e.g. [0.5, 99.5]; [0, 100] clips nothing.
    """
    mask = foreground_mask(img)
    if not bool(mask.any()):
        return torch.zeros_like(img)
    values = img[mask].double()
    q = torch.tensor([float(p) / 100.0 for p in percentiles], dtype=torch.float64)
    low, high = (float(v) for v in _quantiles(values, q))
    clipped = img.clamp(low, high)
    # Shift the foreground to values >= 1 and the background to exactly 0, so that MONAI's
    # "nonzero" foreground is ours even where a foreground voxel is 0 before the shift.
    shifted = torch.where(mask, clipped - low + 1.0, torch.zeros_like(clipped))
    return NormalizeIntensity(nonzero=True)(shifted)


def _quantiles(values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """`torch.quantile`, which refuses more than 2^24 values, through NumPy above that."""
    if values.numel() <= 1 << 24:
        return torch.quantile(values, q)
    return torch.from_numpy(np.quantile(values.numpy(), q.numpy()))


def _to_original_box(
    cropped_affine: torch.Tensor, original_affine: torch.Tensor, start: list[int], stop: list[int]
) -> list[list[int]]:
    """[start, stop) per axis of the original file's array, from a box on the oriented grid.

    Orientation only permutes and flips axes, so the box's corners map to whole voxels.
    """
    to_original = np.linalg.inv(original_affine.numpy()) @ cropped_affine.double().numpy()
    shape = np.asarray(stop) - np.asarray(start)
    corners = np.array([[0, 0, 0], shape - 1], dtype=np.float64)
    mapped = (to_original[:3, :3] @ corners.T + to_original[:3, 3:]).T.round().astype(int)
    lo, hi = mapped.min(axis=0), mapped.max(axis=0) + 1
    return [[int(a), int(b)] for a, b in zip(lo, hi)]


def _no_foreground(recipe: RecipeConfig) -> str:
    if recipe.intensity == "ct":
        return (
            f"no voxel above the CT window floor {recipe.window[0]:g} HU: is this CT in HU? "
            "Set data.recipe.window, data.recipe.intensity or data.recipe.foreground_crop=false"
        )
    return "constant volume: no foreground to crop; set data.recipe.foreground_crop=false"
