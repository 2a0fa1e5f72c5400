"""Two-view 96^3 crops per second: the cached medmim pipeline vs an uncached MONAI pipeline.

Both read the same scans (synthetic CT phantoms from `medmim.data.phantoms` when it is
installed, else simple synthetic CTs written here) with the same recipe (RAS, 2 mm, HU window,
foreground crop):

- uncached: per item, MONAI `LoadImaged -> EnsureChannelFirstd -> Orientationd -> Spacingd ->
  ScaleIntensityRanged -> CropForegroundd -> SpatialPadd -> RandSpatialCropSamplesd(2 views)`;
- cached: `build_pretrain_dataset` (preprocessed once, memory-mapped), two views per item,
  with and without the per-view intensity augmentation.

Each with 0, 1 and 2 DataLoader workers (batch 2). Throughput = items (two-view samples) per
second after one warm-up batch. Prints a table and writes JSON.

    python benchmarks/data_throughput.py --out runs/bench/data_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler


def make_scans(folder: Path, n: int, seed: int) -> list[Path]:
    """Phantoms if the generator is installed, else ellipsoid CTs of 256 x 256 x 120 voxels."""
    try:
        from medmim.data.phantoms import generate_phantoms

        generate_phantoms(folder, n, seed=seed)
        return sorted((folder / "images").glob("*.nii.gz"))
    except ImportError:
        import nibabel as nib

        rng = np.random.default_rng(seed)
        paths = []
        for i in range(n):
            g = np.meshgrid(
                *[np.linspace(-1, 1, s) for s in (256, 256, 120)], indexing="ij", sparse=True
            )
            vol = np.full((256, 256, 120), -1000, np.int16)
            vol[(g[0] / 0.85) ** 2 + (g[1] / 0.6) ** 2 <= 1] = 40
            vol += rng.normal(0, 20, vol.shape).astype(np.int16)
            affine = np.diag([0.75, 0.75, 2.5, 1.0])
            paths.append(folder / "images" / f"ct_{i}.nii.gz")
            paths[-1].parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(vol, affine), str(paths[-1]))
        return paths


class UncachedMonai(Dataset):
    """The MONAI pipeline, run from the file for every item."""

    def __init__(self, paths: list[Path], crop: int, window: tuple[float, float]) -> None:
        from monai import transforms as T

        self.paths = paths
        self.transform = T.Compose(
            [
                T.LoadImaged("image", image_only=True),
                T.EnsureChannelFirstd("image"),
                T.Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
                T.Spacingd("image", pixdim=(2.0, 2.0, 2.0), mode="bilinear"),
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

    def __getitem__(self, i: int) -> dict:
        views = self.transform({"image": str(self.paths[i])})
        return {"views": [v["image"].as_tensor() for v in views], "index": i}


def throughput(ds: Dataset, items: int, workers: int, seed: int = 0) -> float:
    """Items per second over `items` items (random order, batch 2), worker start-up included
    (so prefetching cannot hide work)."""
    sampler = RandomSampler(
        ds, replacement=True, num_samples=items, generator=torch.Generator().manual_seed(seed)
    )
    t0 = time.perf_counter()
    n = sum(
        b["views"][0].shape[0]
        for b in DataLoader(ds, batch_size=2, sampler=sampler, num_workers=workers)
    )
    return n / (time.perf_counter() - t0)


def measure(args: argparse.Namespace, tmp: Path) -> dict:
    """Build both pipelines on the same scans and time them for each worker count."""
    from medmim.data.config import AugmentConfig, DataConfig
    from medmim.data.preprocess import get_recipe
    from medmim.data.pretrain import build_pretrain_dataset

    paths = make_scans(tmp / "scans", args.n, seed=0)
    recipe = get_recipe("smart")
    cfg = dict(
        source=str(paths[0].parent),
        cache_dir=str(tmp / "cache"),
        recipe=recipe,
        crop_size=[args.crop] * 3,
    )
    t0 = time.perf_counter()
    cached = build_pretrain_dataset(DataConfig(**cfg), None, seed=0)
    build_s = time.perf_counter() - t0
    crops_only = build_pretrain_dataset(
        DataConfig(**cfg, augment=AugmentConfig(intensity=False)), None, seed=0
    )
    uncached = UncachedMonai(paths, args.crop, tuple(recipe.window))
    uncached[0]  # warm the page cache and imports, as the cached side had while building
    rows = []
    for w in args.workers:
        row = {
            "workers": w,
            "uncached_monai": throughput(uncached, args.uncached_items, w),
            "cached_crops": throughput(crops_only, args.items, w),
            "cached_crops_and_intensity_aug": throughput(cached, args.items, w),
        }
        row["speedup_crops"] = row["cached_crops"] / row["uncached_monai"]
        row["speedup_with_aug"] = row["cached_crops_and_intensity_aug"] / row["uncached_monai"]
        rows.append(row)
        print(" | ".join(f"{k} {v:.3g}" for k, v in row.items()), flush=True)
    shapes = [e.meta["original_shape"] for e in cached.entries]
    return {
        "rows": rows,
        "scans": shapes,
        "cached_shapes": [e.meta["shape"] for e in cached.entries],
        "crop": args.crop,
        "cache_build_s": build_s,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4, help="scans")
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--items", type=int, default=64, help="items per cached measurement")
    p.add_argument("--uncached-items", type=int, default=12, help="items per uncached measurement")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("runs/bench/data_throughput.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args, Path(tmp))
    print(
        f"\n{args.n} scans {result['scans']} -> {result['cached_shapes']} at 2 mm; "
        f"two-view {args.crop}^3 samples per second (cache built in {result['cache_build_s']:.1f} s)"
    )
    print(
        "| workers | uncached MONAI | cached, crops | cached, crops + intensity aug | speed-up (crops / with aug) |"
    )
    print("|---|---|---|---|---|")
    for r in result["rows"]:
        print(
            f"| {r['workers']} | {r['uncached_monai']:.2f} | {r['cached_crops']:.1f} | "
            f"{r['cached_crops_and_intensity_aug']:.1f} | {r['speedup_crops']:.0f}x / {r['speedup_with_aug']:.0f}x |"
        )
    result.update(
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        machine=platform.platform(),
        torch=torch.__version__,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
