"""Schema of the `data:` section of a config (validated with OmegaConf, see medmim.config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class RecipeConfig:
    """Preprocessing recipe applied once per file, then cached (data/preprocess.py).

    Attributes:
        orientation: axcodes to reorient to ("RAS"), or "" to keep the file's orientation.
        spacing: target voxel spacing in mm (x, y, z); null keeps the native spacing.
        intensity: "ct" (HU window -> [0, 1]), "mr_percentile", "mr_zscore" (foreground
            z-score) or "none".
        window: HU window [low, high] for "ct".
        percentiles: [low, high] percentiles: the range mapped to [0, 1] by "mr_percentile", the
            clip of the foreground before "mr_zscore".
        foreground_crop: crop to the bounding box of the body (values above the window floor).
        pad_to: pad every axis to at least this size (usually the crop size); null = no padding.
        cache_dtype: dtype of the cached array, "float32" or "float16" (half the disk and page
            cache; ~1e-3 relative precision, enough for [0, 1] windowed CT).
    """

    orientation: str = "RAS"
    spacing: Optional[list[float]] = field(default_factory=lambda: [2.0, 2.0, 2.0])
    intensity: str = "ct"
    window: list[float] = field(default_factory=lambda: [-750.0, 1750.0])
    percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])
    foreground_crop: bool = True
    pad_to: Optional[list[int]] = None
    cache_dtype: str = "float32"


#: The CT recipe used when nothing names one (e.g. a scratch encoder that records no recipe).
DEFAULT_RECIPE = "smart"

#: Named recipes (`medmim.data.preprocess` documents where each value comes from).
RECIPES: dict[str, RecipeConfig] = {
    "smart": RecipeConfig(spacing=[2.0, 2.0, 2.0], window=[-750.0, 1750.0]),
    "smit": RecipeConfig(spacing=[1.5, 1.5, 2.0], window=[-175.0, 250.0]),
    "native_ct": RecipeConfig(spacing=None),
    "mr": RecipeConfig(spacing=[1.0, 1.0, 1.0], intensity="mr_zscore"),
    "medmnist": RecipeConfig(
        orientation="", spacing=None, window=[0.0, 255.0], foreground_crop=False
    ),
}


@dataclass
class AugmentConfig:
    """Two-view sampling and per-view augmentation (data/views.py)."""

    scale_jitter: list[float] = field(default_factory=lambda: [1.0, 1.0])
    flip_prob: float = 0.5
    intensity: bool = True
    noise_std: float = 0.02
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 1.0])
    gamma: list[float] = field(default_factory=lambda: [0.7, 1.5])
    brightness: list[float] = field(default_factory=lambda: [0.75, 1.25])
    contrast: list[float] = field(default_factory=lambda: [0.75, 1.25])


@dataclass
class DataConfig:
    """Where the images are and how they become training batches.

    Two modes (`mode`):

    - "views" (default; SMART, SMIT, iBOT, ...): the recipe resamples every scan to
      `recipe.spacing`; an item is `num_views` augmented `crop_size` crops of one scan
      (`medmim.data.views`); the engine shuffles items (`medmim.train.sampler`).
    - "native" (PUMIT): no resampling (`recipe.spacing` must be null). Each scan keeps its
      spacing, its slice axis is put first and it gets a degree of anisotropy DA =
      floor(log2(s_slice / s_in-plane)) in [0, 5] (a one-slice 2D image: 5). `crop_size` is the
      crop of a DA-0 (isotropic) scan; a DA-a scan is cropped to (crop_size[0] >> a) x H x W
      (one slice at DA 5), so that every crop gives the same token grid through the model's
      spatially adaptive patch embedding of stride `patch_size`. Batches hold scans of one DA
      (`medmim.data.pumit.DABatchSampler`, drawn with replacement; an epoch is
      len(dataset) // (batch_size x processes) batches per process, and each process gets
      whole batches). Items carry "spacing" (s_D, s_H, s_W) for the model. Augmentation: flips
      (`augment.flip_prob`) only; the other `augment` fields are not used. `num_views` must
      be 1.

    Attributes:
        source: a folder (scanned recursively), a datalist JSON, a CSV or a MedMNIST `.npz`.
        key: the datalist / CSV field that holds the image path.
        split: the datalist section or npz split to read ("training", "train", ...).
        cache_dir: the persistent cache of preprocessed volumes; "" = `<run parent>/.cache`.
        crop_size: (D, H, W) of each view, in voxels after the recipe (mode "native": of a
            DA-0 scan; D and H = W multiples of `patch_size`).
        num_views: views per scan (2 for self-distillation).
        views: "shared" (default): every view is a random crop inside one random
            `base_crop_size` region of the scan, as the public SMIT code (two 96^3 crops of one
            128^3 crop) and SMART code (sub-crops of a shared base crop) sample them;
            "independent": each view anywhere in the scan (few shared voxels on a large scan,
            and the distillation then finds little to agree on: see medmim/data/views.py).
        base_crop_size: (D, H, W) of the shared region; null = `crop_size` x 4/3 (SMIT's
            128 / 96), rounded.
        local_views: DINO multi-crop: this many extra `local_crop_size` crops per scan (from the
            same base region), seen by the student only and compared with every teacher view.
        local_crop_size: (D, H, W) of a local view; null = half of `crop_size`.
        batch_size: scans per step and per process.
        num_workers: DataLoader workers.
        on_error: "skip" records a bad file in skipped.jsonl and goes on; "fail" stops before
            training starts.
        mode: "views" or "native" (see above).
        patch_size: mode "native": the model's patch / SAC stride (PUMIT: 16).
        recipe: the preprocessing recipe; a preset name stands for its fields
            (`data.recipe=mr`, `data.recipe=ct`; see `RECIPES`), and `data.recipe.FIELD=...`
            overrides given after it apply on top.
        plan: a plan file of `medmim data plan` (`medmim.data.plan`): its recipe and crop size
            replace the preset's when the config is loaded, then command-line overrides apply
            on top; the resolved values are what config.yaml keeps (and this field is emptied),
            so a run never needs the plan file again.
        recipe_check: before caching, read a few scans and stop with a `ConfigError` when the
            recipe is made for another modality than the data (a CT window on MR, an MR
            z-score on CT; `medmim.data.recipe_check`); false skips the check.
    """

    source: str = ""
    key: str = "image"
    split: str = "training"
    cache_dir: str = ""
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    crop_size: list[int] = field(default_factory=lambda: [96, 96, 96])
    num_views: int = 2
    views: str = "shared"
    base_crop_size: Optional[list[int]] = None
    local_views: int = 0
    local_crop_size: Optional[list[int]] = None
    batch_size: int = 2
    num_workers: int = 0
    on_error: str = "skip"
    mode: str = "views"
    patch_size: int = 16
    plan: str = ""
    recipe_check: bool = True


#: `data.views` values.
VIEW_MODES = ("shared", "independent")


def view_geometry(cfg: Any) -> dict[str, Any]:
    """`ViewSampler` keyword options (base_crop, local_views, local_crop_size) from a data config.

    Raises:
        ConfigError: an unknown `views` mode, or sizes that are not 3 positive integers.
    """
    from medmim.errors import ConfigError, did_you_mean

    mode = str(cfg.views)
    if mode not in VIEW_MODES:
        raise ConfigError(
            f"data.views='{mode}' is unknown.{did_you_mean(mode, VIEW_MODES)} "
            "Choose shared (views inside one base crop) or independent"
        )
    crop = [int(c) for c in cfg.crop_size]
    base = None
    if mode == "shared":
        base = list(cfg.base_crop_size) if cfg.base_crop_size else [round(c * 4 / 3) for c in crop]
    local = list(cfg.local_crop_size) if cfg.local_crop_size else [max(1, c // 2) for c in crop]
    for name, size in (("base_crop_size", base), ("local_crop_size", local)):
        if size is not None and (len(size) != 3 or min(int(s) for s in size) < 1):
            raise ConfigError(f"data.{name} must be 3 positive sizes, got {size}")
    if int(cfg.local_views) < 0:
        raise ConfigError(f"data.local_views must be >= 0, got {cfg.local_views}")
    return {"base_crop": base, "local_views": int(cfg.local_views), "local_crop_size": local}


def as_data_config(cfg: Any) -> DataConfig:
    """A `DataConfig` from a DataConfig, an OmegaConf node or a plain dict (validated)."""
    return _as(cfg, DataConfig)


def as_recipe(cfg: Any) -> RecipeConfig:
    """A `RecipeConfig` from a RecipeConfig, an OmegaConf node or a plain dict (validated)."""
    return _as(cfg, RecipeConfig)


def _as(cfg: Any, schema: type) -> Any:
    if isinstance(cfg, schema):
        return cfg
    from omegaconf import OmegaConf

    from medmim.config import validate

    node = cfg if OmegaConf.is_config(cfg) else OmegaConf.create(dict(cfg or {}))
    return OmegaConf.to_object(validate(node, schema))
