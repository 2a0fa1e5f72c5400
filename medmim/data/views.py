"""Two-view sampling for self-distillation: random crops of one scan, each augmented on its own.

Where the views come from (`base_crop`):

- shared (the public code's sampling, the default of `data.views`): one random `base_crop`
  region of the scan is drawn first and every view is a random crop inside it. The SMIT code
  takes two 96^3 views inside one 128^3 crop (MONAI `RandSpatialCropSamplesd` twice); the SMART
  code sub-crops a shared base crop. Two views then overlap by a large, bounded fraction, so the
  teacher's targets for one view can be predicted from the other: with independent crops of a
  whole scan, two 64^3 views of the demo phantoms overlap ~20 % on average and the
  distillation terms stayed at ln K where shared-base views learned (docs/distillation.md,
  run sC).
- independent (`base_crop=None`): each view is a random region of the whole scan.

Local views (`local_views`, DINO's multi-crop): extra, smaller `local_crop_size` crops from the
same base region (the whole scan when independent), seen by the student only.

Per view: a random region of `crop_size * s` voxels, s ~ U(scale_jitter) per axis (a region
larger than the scan is padded with the background value), resized back to `crop_size`
(trilinear) when s != 1, flipped along each axis with probability `flip_prob`, then intensity
augmentation: Gaussian noise, Gaussian blur, multiplicative brightness, contrast and gamma (with
the mean and standard deviation kept, as batchgenerators' `retain_stats`).

The views are augmented asymmetrically, as DINO does and as the SMART data loader does
(reference notes, Sec. 3.5): `VIEW_PROBS[0]` for the first view, `VIEW_PROBS[1]` for the second
and any further views. All randomness comes from the `numpy.random.Generator` passed in, so a
view is a pure function of that generator's seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medmim.data.config import AugmentConfig

#: Probability of each intensity augmentation, per view (SMART loader: view 1 blur 0.8 x 0.8,
#: brightness and gamma 0.8; view 2 blur 0.8 x 0.5, brightness and gamma 1.0).
VIEW_PROBS: tuple[dict[str, float], ...] = (
    {"noise": 0.8, "blur": 0.64, "brightness": 0.8, "contrast": 0.8, "gamma": 0.8},
    {"noise": 0.8, "blur": 0.4, "brightness": 1.0, "contrast": 0.8, "gamma": 1.0},
)


class ViewSampler:
    """Make `num_views` augmented crops of one volume.

    Args:
        crop_size: (D, H, W) of every view.
        augment: scale jitter, flips and intensity ranges (`AugmentConfig`).
        num_views: views per call.
        view_probs: augmentation probabilities per view (default `VIEW_PROBS`).
        base_crop: (D, H, W) of the shared region the views are drawn from; None = each view
            anywhere in the scan (independent crops).
        local_views: extra small crops per call (multi-crop; 0 = none).
        local_crop_size: (D, H, W) of each local view.

    Example:
        >>> sampler = ViewSampler([64, 64, 64], AugmentConfig())
        >>> views = sampler(volume, np.random.default_rng([seed, epoch, index]))
        >>> views[0].shape  # torch.Size([1, 64, 64, 64])
    """

    def __init__(
        self,
        crop_size: Sequence[int],
        augment: AugmentConfig | None = None,
        num_views: int = 2,
        view_probs: Sequence[dict[str, float]] = VIEW_PROBS,
        base_crop: Sequence[int] | None = None,
        local_views: int = 0,
        local_crop_size: Sequence[int] | None = None,
    ) -> None:
        self.crop_size = _size3(crop_size, "crop_size")
        self.base_crop = None if base_crop is None else _size3(base_crop, "base_crop_size")
        if self.base_crop is not None and any(
            b < c for b, c in zip(self.base_crop, self.crop_size)
        ):
            raise ValueError(
                f"base_crop_size {list(self.base_crop)} must be at least crop_size "
                f"{list(self.crop_size)} on every axis (the views are drawn inside it)"
            )
        if local_views < 0:
            raise ValueError(f"local_views must be >= 0, got {local_views}")
        self.local_views = int(local_views)
        self.local_crop_size = _size3(local_crop_size or self.crop_size, "local_crop_size")
        self.augment = augment or AugmentConfig()
        self.num_views = num_views
        self.view_probs = list(view_probs)

    def __call__(
        self, volume: np.ndarray, rng: np.random.Generator, background: float = 0.0
    ) -> list[torch.Tensor]:
        """Global views of `volume` (C, X, Y, Z), e.g. a memory map: float32 (C, *crop_size) each.

        Each view draws from its own child generator, so view i depends only on `rng`'s seed
        and i, not on what the augmentations of the other views consumed.
        """
        return self.sample(volume, rng, background)[0]

    def sample(
        self, volume: np.ndarray, rng: np.random.Generator, background: float = 0.0
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(global views, local views) of `volume`: `num_views` (C, *crop_size) and
        `local_views` (C, *local_crop_size) float32 tensors, all inside one base region when
        `base_crop` is set.
        """
        extra = self.local_views + (self.base_crop is not None)
        children = rng.spawn(self.num_views + extra)
        region = volume
        if self.base_crop is not None:
            region = random_region(volume, self.base_crop, children[-1], background)
        views = [self.view(region, children[i], i, background) for i in range(self.num_views)]
        local = [
            self.view(
                region,
                children[self.num_views + j],
                self.num_views + j,
                background,
                self.local_crop_size,
            )
            for j in range(self.local_views)
        ]
        return views, local

    def view(
        self,
        volume: np.ndarray,
        rng: np.random.Generator,
        i: int,
        background: float = 0.0,
        crop_size: tuple[int, int, int] | None = None,
    ) -> torch.Tensor:
        """The `i`-th view (its augmentation probabilities depend on `i`), `crop_size` (default
        `self.crop_size`) voxels.
        """
        aug = self.augment
        crop = crop_size or self.crop_size
        lo, hi = aug.scale_jitter
        size = [max(1, round(c * rng.uniform(lo, hi))) if hi > lo else round(c * lo) for c in crop]
        x = torch.from_numpy(random_region(volume, size, rng, background))
        if tuple(size) != crop:
            x = F.interpolate(x[None], size=crop, mode="trilinear", align_corners=False)[0]
        flips = [d + 1 for d in range(3) if rng.random() < aug.flip_prob]
        if flips:
            x = torch.flip(x, flips)
        if aug.intensity:
            x = self.intensity(x, rng, self.view_probs[min(i, len(self.view_probs) - 1)])
        return x.contiguous()

    def intensity(
        self, x: torch.Tensor, rng: np.random.Generator, probs: dict[str, float]
    ) -> torch.Tensor:
        """Noise, blur, brightness, contrast, gamma, each with its probability in `probs`."""
        aug = self.augment
        if rng.random() < probs["noise"] and aug.noise_std > 0:
            gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            x = x + torch.randn(x.shape, generator=gen) * float(rng.uniform(0, aug.noise_std))
        if rng.random() < probs["blur"]:
            x = gaussian_blur(x, float(rng.uniform(*aug.blur_sigma)))
        if rng.random() < probs["brightness"]:
            x = x * float(rng.uniform(*aug.brightness))
        if rng.random() < probs["contrast"]:
            x = adjust_contrast(x, float(rng.uniform(*aug.contrast)))
        if rng.random() < probs["gamma"]:
            x = adjust_gamma(x, float(rng.uniform(*aug.gamma)))
        return x


def _size3(size: Sequence[int], name: str) -> tuple[int, int, int]:
    out = tuple(int(s) for s in size)
    if len(out) != 3 or min(out) < 1:
        raise ValueError(f"{name} must be 3 positive sizes, got {list(size)}")
    return out  # type: ignore[return-value]


def random_region(
    volume: np.ndarray, size: Sequence[int], rng: np.random.Generator, background: float = 0.0
) -> np.ndarray:
    """A float32 copy of a uniformly placed `size` region of `volume` (C, X, Y, Z).

    Along an axis shorter than `size`, the whole axis is placed at a random offset inside the
    region and the rest is `background`.
    """
    shape = volume.shape[1:]
    start = [
        int(rng.integers(0, n - s + 1)) if n >= s else -int(rng.integers(0, s - n + 1))
        for n, s in zip(shape, size)
    ]
    if all(a >= 0 for a in start) and all(n >= s for n, s in zip(shape, size)):
        region = (slice(None),) + tuple(slice(a, a + s) for a, s in zip(start, size))
        return np.array(volume[region], dtype=np.float32)
    out = np.full((volume.shape[0], *size), background, dtype=np.float32)
    src = tuple(slice(max(a, 0), min(a + s, n)) for a, s, n in zip(start, size, shape))
    dst = tuple(slice(max(a, 0) - a, min(a + s, n) - a) for a, s, n in zip(start, size, shape))
    out[(slice(None),) + dst] = volume[(slice(None),) + src]
    return out


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable 3D Gaussian blur of (C, D, H, W) with std `sigma` voxels, edges replicated.

    The kernel is truncated at 3 sigma as in `scipy.ndimage.gaussian_filter(mode="nearest")`;
    each axis is a weighted sum of shifted slices, 4-5x faster on CPU than a 1-channel conv3d.
    `sigma <= 0` means no blur: `x` is returned unchanged (so `augment.blur_sigma=[0, 0]`
    switches the blur off).
    """
    if sigma <= 0:
        return x
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    weights = (k / k.sum()).tolist()
    for axis in (1, 2, 3):
        n = x.shape[axis]
        padded = x.index_select(axis, torch.arange(-radius, n + radius).clamp(0, n - 1))
        out = padded.narrow(axis, 0, n) * weights[0]
        for j in range(1, len(weights)):
            out.add_(padded.narrow(axis, j, n), alpha=weights[j])
        x = out
    return x


def adjust_contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """X' = clip(mean + factor (x - mean), min x, max x)."""
    mean = x.mean()
    return ((x - mean) * factor + mean).clamp(x.min(), x.max())


def adjust_gamma(x: torch.Tensor, gamma: float, eps: float = 1e-7) -> torch.Tensor:
    """X' = min + range ((x - min) / range)^gamma, then rescaled to the mean and std of x."""
    mn, rng = x.min(), x.max() - x.min()
    mean, std = x.mean(), x.std()
    y = ((x - mn) / (rng + eps)).pow(gamma) * rng + mn
    return (y - y.mean()) / (y.std() + eps) * std + mean
