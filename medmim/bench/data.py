"""Two-view crops per second: the cached medmim pipeline vs an uncached MONAI pipeline.

Both read the same synthetic CT phantoms (`medmim.data.phantoms`) with the same recipe (RAS,
2 mm, HU window, foreground crop):

- uncached: per item, MONAI `LoadImaged -> EnsureChannelFirstd -> Orientationd -> Spacingd ->
  ScaleIntensityRanged -> CropForegroundd -> SpatialPadd -> RandSpatialCropSamplesd(2 views)`;
- cached: `build_pretrain_dataset` (preprocessed once, memory-mapped), two views per item,
  with and without the per-view intensity augmentation.

Each with the given DataLoader worker counts (batch 2). Throughput = items (two-view samples)
per second, worker start-up included, so prefetching cannot hide work.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler


class UncachedMonai(Dataset):
    """The MONAI pipeline, run from the file for every item."""

    def __init__(
        self, paths: list[Path], crop: int, spacing: float, window: tuple[float, float]
    ) -> None:
        from monai import transforms as T

        self.paths = paths
        self.transform = T.Compose(
            [
                T.LoadImaged("image", image_only=True),
                T.EnsureChannelFirstd("image"),
                T.Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
                T.Spacingd("image", pixdim=(spacing,) * 3, mode="bilinear"),
                T.ScaleIntensityRanged("image", *window, 0.0, 1.0, clip=True),
                T.CropForegroundd("image", source_key="image", allow_smaller=True),
                T.SpatialPadd("image", spatial_size=(crop,) * 3),
                T.RandSpatialCropSamplesd(
                    "image", roi_size=(crop,) * 3, num_samples=2, random_size=False
                ),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        views = self.transform({"image": str(self.paths[i])})
        return {"views": [v["image"].as_tensor() for v in views], "index": i}


def throughput(ds: Dataset, items: int, workers: int, seed: int = 0) -> float:
    """Items per second over `items` random items (batch 2), worker start-up included."""
    sampler = RandomSampler(
        ds, replacement=True, num_samples=items, generator=torch.Generator().manual_seed(seed)
    )
    t0 = time.perf_counter()
    n = sum(
        b["views"][0].shape[0]
        for b in DataLoader(ds, batch_size=2, sampler=sampler, num_workers=workers)
    )
    return n / (time.perf_counter() - t0)


def loader_throughput(
    folder: Path,
    scans: int = 4,
    crop: int = 96,
    items: int = 32,
    uncached_items: int = 8,
    workers: tuple[int, ...] = (0, 2),
    phantom_size: str = "default",
    spacing: float = 2.0,
) -> dict[str, Any]:
    """Build both pipelines on `scans` fresh phantoms in `folder` and time them.

    Returns:
        {"rows": [{"workers", "uncached_monai", "cached_crops", "cached_crops_and_intensity_aug",
        "speedup_crops", "speedup_with_aug"}], "scans", "crop", "cache_build_s", ...}.
    """
    from medmim.data.config import AugmentConfig, DataConfig
    from medmim.data.phantoms import generate_phantoms
    from medmim.data.preprocess import get_recipe
    from medmim.data.pretrain import build_pretrain_dataset

    generate_phantoms(folder / "scans", scans, seed=0, size=phantom_size, workers=2)
    paths = sorted((folder / "scans" / "images").glob("*.nii.gz"))
    recipe = get_recipe("smart", spacing=[spacing] * 3)
    cfg = dict(
        source=str(paths[0].parent),
        cache_dir=str(folder / "cache"),
        recipe=recipe,
        crop_size=[crop] * 3,
    )
    t0 = time.perf_counter()
    cached = build_pretrain_dataset(DataConfig(**cfg), None, seed=0)
    build_s = time.perf_counter() - t0
    crops_only = build_pretrain_dataset(
        DataConfig(**cfg, augment=AugmentConfig(intensity=False)), None, seed=0
    )
    uncached = UncachedMonai(paths, crop, spacing, tuple(recipe.window))
    uncached[0]  # warm the page cache and imports, as the cached side had while building
    rows = []
    for w in workers:
        row: dict[str, float] = {
            "workers": w,
            "uncached_monai": throughput(uncached, uncached_items, w),
            "cached_crops": throughput(crops_only, items, w),
            "cached_crops_and_intensity_aug": throughput(cached, items, w),
        }
        row["speedup_crops"] = row["cached_crops"] / row["uncached_monai"]
        row["speedup_with_aug"] = row["cached_crops_and_intensity_aug"] / row["uncached_monai"]
        rows.append(row)
    return {
        "rows": rows,
        "scans": [e.meta["original_shape"] for e in cached.entries],
        "cached_shapes": [e.meta["shape"] for e in cached.entries],
        "crop": crop,
        "spacing_mm": spacing,
        "phantom_size": phantom_size,
        "cache_build_s": build_s,
        "items": items,
        "uncached_items": uncached_items,
    }
