"""PUMIT data: native-spacing crops, batches grouped by degree of anisotropy (Luo et al. 2024,
"Implementation Details"; public code `PUMTDistributedBatchSampler`).

Nothing is resampled. Each image keeps its spacing `(s_D, s_H, s_W)`, D being its slice axis,
and gets DA = floor(log2(s_D / min(s_H, s_W))) clipped to [0, 5] (one slice = 2D = DA 5). A crop
of an image with DA `a` is `(t_z * max(16 >> a, 1), 16 t_x, 16 t_x)` voxels (t_z = 1 when 2^a > 16),
so that every crop gives the same `t_z x t_x x t_x` token grid after SAC patchification (paper
tokenizer: t = (4, 8); MIM: (5, 10)). `DABatchSampler` draws images (weighted, with replacement)
and fills one bucket per DA; a full bucket is a batch, so every batch has one DA and one shape.
Items are `{"views": [crop (C, D, H, W)], "index": i, "spacing": (3,)}`, which the PUMIT methods
read (`views[0]` and `spacing`). Augmentation is flips only: the code's zoom, rotation and
intensity augmentations are left out.

`medmim pretrain` uses this with `data.mode=native` (`medmim.data.pretrain`): every scan is
preprocessed once by the recipe with `spacing: null` (orientation, foreground crop, intensity;
no resampling), cached, and read back through memory maps (`CachedArray`) with its slice axis
first (`slice_axis`).

Use:
    >>> images = [SpacedImage(np.random.rand(1, 40, 96, 96).astype("float32"), (2.5, 0.8, 0.8))]
    >>> data = NativeSpacingCropDataset(images, tokens=(2, 4))
    >>> sampler = DABatchSampler(data.das, batch_size=2, num_batches=3)
    >>> loader = torch.utils.data.DataLoader(data, batch_sampler=sampler)
    >>> next(iter(loader))["views"][0].shape  # DA 1: depth patch 8
    torch.Size([2, 1, 16, 64, 64])
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from medmim.errors import DataError
from medmim.layers.sac import MAX_DA, degree_of_anisotropy

#: the depth spacing (mm) given to a one-slice image, so that its items' "spacing" makes the
#: model infer DA = max_da, as the dataset does (PUMIT code: 1e8 for natural 2D images).
SLICE_2D_SPACING = 1e8


@dataclass
class SpacedImage:
    """One image at its native spacing.

    Attributes:
        array: (C, D, H, W) or (D, H, W) float intensities (PUMIT: [0, 1]); D is the slice axis.
            Anything with `shape`, `ndim` and NumPy slicing will do, e.g. a `CachedArray`.
        spacing: (s_D, s_H, s_W) in mm; a 2D image has D = 1 (its s_D is replaced by
            `SLICE_2D_SPACING`).
        name: where it came from (for error messages).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    name: str = ""


def crop_size(
    da: int, tokens: Sequence[int] = (4, 8), patch_size: int = 16
) -> tuple[int, int, int]:
    """Crop (D, H, W) in voxels for an image of degree of anisotropy `da` (PUMIT's rule)."""
    tz = 1 if 2**da > patch_size else int(tokens[0])
    return tz * max(patch_size >> da, 1), patch_size * int(tokens[1]), patch_size * int(tokens[1])


def slice_axis(spacing: Sequence[float], shape: Sequence[int]) -> int:
    """The slice (depth) axis of a (X, Y, Z) image: its one-voxel axis if it has one (a 2D
    image), else the axis with the largest spacing (the last one on ties: Z for axial scans).
    """
    single = [a for a, n in enumerate(shape) if int(n) == 1]
    if single:
        return single[-1]
    return int(len(spacing) - 1 - np.argmax(np.asarray(spacing, dtype=np.float64)[::-1]))


def slice_first(
    spacing: Sequence[float], shape: Sequence[int]
) -> tuple[tuple[int, ...], tuple[float, float, float]]:
    """The (C, X, Y, Z) -> (C, D, H, W) axis order that puts the slice axis first, and the
    spacing (s_D, s_H, s_W) in that order.
    """
    depth = slice_axis(spacing, shape)
    in_plane = [a for a in range(3) if a != depth]
    order = (depth, *in_plane)
    return (0, *(1 + a for a in order)), tuple(float(spacing[a]) for a in order)  # type: ignore[return-value]


def from_volume(volume: Any, name: str = "") -> SpacedImage:
    """A `SpacedImage` from a reader's (C, X, Y, Z) MetaTensor (`medmim.data.io.load_volume`).

    The slice axis (`slice_axis`) is moved to the front. Intensities are scaled with PUMIT's
    per-image percentiles (0.5 -> 0, 99.5 -> 1, clipped).
    """
    from medmim.data.io import spacing_of

    array = np.asarray(volume, dtype=np.float32)
    axes, spacing = slice_first(spacing_of(volume.affine), array.shape[1:])
    array = np.transpose(array, axes)
    lo, hi = np.percentile(array, [0.5, 99.5])
    array = np.clip((array - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    return SpacedImage(array, spacing, name)


class CachedArray:
    """A cached (C, X, Y, Z) `.npy` file seen as (C, D, H, W) with its slice axis first.

    Each slicing opens the file as a memory map (reading its header only) and copies out just
    the slice, as `PretrainDataset` does: nothing of the volume is held or pickled, so
    DataLoader workers and DDP ranks share the page cache, and no map stays open per image.

    Args:
        path: the `.npy` file (`medmim.data.cache.CachedVolume.path`).
        spacing: its (x, y, z) spacing in mm (the cache entry's `meta["spacing"]`).
    """

    def __init__(self, path: str | Path, spacing: Sequence[float]) -> None:
        self.path = Path(path)
        stored = np.load(self.path, mmap_mode="r", allow_pickle=False).shape
        if len(stored) != 4:
            raise DataError(self.path, f"expected a cached (C, X, Y, Z) array, got shape {stored}")
        self.axes, self.spacing = slice_first(spacing, stored[1:])
        self.shape = tuple(int(stored[a]) for a in self.axes)
        self.ndim = 4

    def __getitem__(self, key: Any) -> np.ndarray:
        mapped = np.load(self.path, mmap_mode="r", allow_pickle=False).transpose(self.axes)
        return np.array(mapped[key])


def from_cached(path: str | Path, spacing: Sequence[float], name: str = "") -> SpacedImage:
    """A `SpacedImage` over a cache entry (`CachedVolume.path`, `meta["spacing"]`), read lazily."""
    array = CachedArray(path, spacing)
    return SpacedImage(array, array.spacing, name)  # type: ignore[arg-type]


class NativeSpacingCropDataset(Dataset):
    """Random native-spacing crops whose depth follows each image's DA (see module docstring).

    Args:
        images: the images.
        tokens: (t_z, t_x) token grid per crop.
        patch_size: the ViT patch / tokenizer stride (16).
        max_da: DA clip (5).
        flip_prob: probability of flipping each axis.
        seed: seeds the crops: item `(i, draw)` is a function of (seed, i, draw).
    """

    def __init__(
        self,
        images: Sequence[SpacedImage],
        tokens: Sequence[int] = (4, 8),
        patch_size: int = 16,
        max_da: int = MAX_DA,
        flip_prob: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.images = [self._check(img) for img in images]
        self.tokens, self.patch_size, self.flip_prob, self.seed = (
            tuple(tokens),
            patch_size,
            flip_prob,
            seed,
        )
        self.epoch = 0
        self.das = [
            max_da if img.array.shape[1] == 1 else degree_of_anisotropy(img.spacing, max_da)
            for img in self.images
        ]

    @staticmethod
    def _check(img: SpacedImage) -> SpacedImage:
        array = img.array[None] if img.array.ndim == 3 else img.array
        if array.ndim != 4 or min(array.shape) < 1:
            raise DataError(
                img.name or "<array>",
                f"expected a (C, D, H, W) or (D, H, W) image, got shape {img.array.shape}",
            )
        if len(img.spacing) != 3 or min(img.spacing) <= 0:
            raise DataError(
                img.name or "<array>",
                f"spacing must be three positive mm values (s_D, s_H, s_W), got {img.spacing}",
            )
        spacing = tuple(float(s) for s in img.spacing)
        if array.shape[1] == 1:  # one slice: the depth spacing that makes the model see DA max
            spacing = (SLICE_2D_SPACING, *spacing[1:])
        return SpacedImage(array, spacing, img.name)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (items drawn by plain index vary with it)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Item `i`, or `(i, draw)` as yielded by `DABatchSampler` (a fresh crop per draw)."""
        index, draw = key if isinstance(key, tuple) else (key, self.epoch)
        g = torch.Generator().manual_seed(hash((self.seed, index, draw)) & 0x7FFF_FFFF_FFFF_FFFF)
        img = self.images[index]
        size = crop_size(self.das[index], self.tokens, self.patch_size)
        # crop, then zero-pad the end of an axis shorter than the crop (its start is then 0):
        # only the crop is read from a memory-mapped image
        starts = [
            int(torch.randint(max(n, s) - s + 1, (1,), generator=g))
            for s, n in zip(size, img.array.shape[1:])
        ]
        region = img.array[(slice(None), *(slice(a, a + s) for a, s in zip(starts, size)))]
        crop = torch.from_numpy(np.array(region, dtype=np.float32))
        pad = [s - n for s, n in zip(size, crop.shape[1:])]
        if any(pad):
            crop = torch.nn.functional.pad(crop, [0, pad[2], 0, pad[1], 0, pad[0]])
        flips = [1 + a for a in range(3) if float(torch.rand((), generator=g)) < self.flip_prob]
        if flips:
            crop = crop.flip(flips)
        return {"views": [crop.contiguous()], "index": index, "spacing": torch.tensor(img.spacing)}


class DABatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of one degree of anisotropy (PUMIT's bucketing batch sampler).

    Candidates are drawn with replacement from `weights` in chunks; each goes to the bucket of
    its DA and a full bucket becomes a batch. Deterministic in (seed, epoch).

    DDP: every rank runs the same draw and the full batches are dealt round-robin, so rank r
    takes global batches r, r + W, ...: whole DA-homogeneous batches, none shared, and the same
    number of batches on every rank (ranks may hold different DAs, hence shapes, in one step;
    gradients are averaged as usual). Resuming: `set_epoch(epoch, start)` skips this rank's
    first `start` batches of the epoch (the draw is replayed, no image is read).

    Args:
        das: DA of every dataset item (`NativeSpacingCropDataset.das`).
        batch_size: items per batch (per rank).
        num_batches: batches per epoch on this rank.
        weights: sampling weight per item (default uniform).
        seed: random seed.
        rank, world_size: this process and the number of processes.
    """

    def __init__(
        self,
        das: Sequence[int],
        batch_size: int,
        num_batches: int,
        weights: Sequence[float] | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not das or batch_size < 1 or num_batches < 1:
            raise ValueError(
                "DABatchSampler needs items, batch_size >= 1 and num_batches >= 1 (got "
                f"{len(das)}, {batch_size}, {num_batches})"
            )
        self.das, self.batch_size, self.num_batches = list(das), batch_size, num_batches
        self.weights = torch.as_tensor(
            weights if weights is not None else [1.0] * len(das), dtype=torch.float64
        )
        if (
            self.weights.shape != (len(das),)
            or bool((self.weights < 0).any())
            or float(self.weights.sum()) <= 0
        ):
            raise ValueError(
                f"DABatchSampler: weights must be {len(das)} non-negative values "
                "with a positive sum"
            )
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch (a new draw order) and skip its first `start` batches (of this rank)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return max(self.num_batches - self.start, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        buckets: dict[int, list[tuple[int, int]]] = defaultdict(list)
        emitted = dealt = drawn = 0
        while emitted < self.num_batches:
            for i in torch.multinomial(self.weights, 4096, replacement=True, generator=g).tolist():
                bucket = buckets[self.das[i]]
                bucket.append((i, self.epoch << 32 | drawn))
                drawn += 1
                if len(bucket) < self.batch_size:
                    continue
                if dealt % self.world_size == self.rank:
                    if emitted >= self.start:
                        yield list(bucket)
                    emitted += 1
                    if emitted == self.num_batches:
                        return
                dealt += 1
                bucket.clear()
