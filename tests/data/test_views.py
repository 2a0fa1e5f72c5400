"""Two-view sampling: shapes, determinism, padding, scale jitter, flips and each augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from medmim.data.config import AugmentConfig
from medmim.data.views import (
    VIEW_PROBS,
    ViewSampler,
    adjust_contrast,
    adjust_gamma,
    gaussian_blur,
    random_region,
)

NO_AUG = AugmentConfig(flip_prob=0.0, intensity=False)


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(0).random((1, 40, 36, 30), dtype=np.float32)


def test_views_shapes_and_determinism(volume: np.ndarray) -> None:
    sampler = ViewSampler([16, 20, 24], AugmentConfig(scale_jitter=[0.7, 1.4]), num_views=3)
    a = sampler(volume, np.random.default_rng([0, 0, 5]))
    b = sampler(volume, np.random.default_rng([0, 0, 5]))
    c = sampler(volume, np.random.default_rng([0, 1, 5]))
    assert [v.shape for v in a] == [torch.Size([1, 16, 20, 24])] * 3 and a[0].dtype == torch.float32
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], a[1])


def test_plain_crop_is_a_block_of_the_volume(volume: np.ndarray) -> None:
    view = ViewSampler([8, 8, 8], NO_AUG, num_views=1)(volume, np.random.default_rng(3))[0].numpy()
    corner = np.argwhere(volume[0] == view[0, 0, 0, 0])[0]
    x, y, z = corner
    np.testing.assert_array_equal(view, volume[:, x : x + 8, y : y + 8, z : z + 8])


def test_small_volume_is_padded_with_background() -> None:
    small = np.ones((1, 5, 6, 7), np.float32)
    region = random_region(small, (8, 8, 8), np.random.default_rng(0), background=-1.0)
    assert (
        region.shape == (1, 8, 8, 8)
        and (region == 1).sum() == 5 * 6 * 7
        and (region == -1).sum() == 512 - 210
    )


def test_flips() -> None:
    vol = np.arange(4 * 5 * 6, dtype=np.float32).reshape(1, 4, 5, 6)
    view = ViewSampler([4, 5, 6], AugmentConfig(flip_prob=1.0, intensity=False))(
        vol, np.random.default_rng(0)
    )[0]
    np.testing.assert_array_equal(view.numpy(), vol[:, ::-1, ::-1, ::-1])


def test_scale_jitter_resizes_back(volume: np.ndarray) -> None:
    sampler = ViewSampler(
        [12, 12, 12], AugmentConfig(scale_jitter=[2.0, 2.0], flip_prob=0.0, intensity=False)
    )
    view = sampler(volume, np.random.default_rng(0))[0]
    assert view.shape == (1, 12, 12, 12)
    assert view.std() < torch.from_numpy(volume).std() * 0.8  # 2x downsampling averages voxels


def test_intensity_probabilities_per_view(volume: np.ndarray) -> None:
    off = [dict.fromkeys(VIEW_PROBS[0], 0.0)] * 2
    plain = ViewSampler([8, 8, 8], NO_AUG)(volume, np.random.default_rng(1))
    aug_off = ViewSampler([8, 8, 8], AugmentConfig(flip_prob=0.0), view_probs=off)(
        volume, np.random.default_rng(1)
    )
    assert all(torch.equal(x, y) for x, y in zip(plain, aug_off))
    assert VIEW_PROBS[0] != VIEW_PROBS[1]  # asymmetric views, as in DINO / SMART


def test_gaussian_blur_matches_scipy() -> None:
    x = torch.rand(1, 12, 10, 9, generator=torch.Generator().manual_seed(0))
    ours = gaussian_blur(x, 0.8)
    ref = gaussian_filter(x[0].numpy().astype(np.float64), 0.8, mode="nearest", truncate=3.0)
    np.testing.assert_allclose(ours[0].numpy(), ref, atol=1e-5)


def test_gaussian_blur_sigma_zero_is_no_blur() -> None:
    x = torch.rand(1, 6, 5, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gaussian_blur(x, 0.0), x) and torch.equal(gaussian_blur(x, -1.0), x)
    assert not torch.equal(gaussian_blur(x, 0.5), x)
    volume = np.random.default_rng(0).random((1, 10, 10, 10), dtype=np.float32)
    only_blur = [{"noise": 0.0, "blur": 1.0, "brightness": 0.0, "contrast": 0.0, "gamma": 0.0}]
    plain = ViewSampler([8, 8, 8], AugmentConfig(flip_prob=0.0, intensity=False), 1)
    off = ViewSampler(
        [8, 8, 8], AugmentConfig(flip_prob=0.0, blur_sigma=[0.0, 0.0]), 1, view_probs=only_blur
    )
    a, b = plain(volume, np.random.default_rng(1))[0], off(volume, np.random.default_rng(1))[0]
    assert torch.isfinite(b).all() and torch.equal(a, b)


def test_gamma_and_contrast() -> None:
    x = torch.rand(1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(adjust_gamma(x, 1.0), x, atol=1e-5, rtol=0)
    g = adjust_gamma(x, 1.5)
    assert (
        not torch.allclose(g, x)
        and abs(g.mean() - x.mean()) < 1e-5
        and abs(g.std() - x.std()) < 1e-5
    )
    c = adjust_contrast(x, 1.5)
    assert c.min() >= x.min() and c.max() <= x.max() and c.std() > x.std()
    assert torch.allclose(adjust_contrast(x, 1.0), x, atol=1e-6)


def _locate(volume: np.ndarray, view: torch.Tensor) -> np.ndarray:
    """Start corner of an unaugmented view inside `volume` (values are unique floats)."""
    return np.argwhere(volume[0] == view[0, 0, 0, 0].item())[0]


def test_shared_views_lie_inside_one_base_crop() -> None:
    volume = np.arange(80 * 80 * 80, dtype=np.float32).reshape(1, 80, 80, 80)
    base, crop = (24, 24, 24), (16, 16, 16)
    sampler = ViewSampler(crop, NO_AUG, num_views=2, base_crop=base)
    spans = []
    for seed in range(30):
        starts = [_locate(volume, v) for v in sampler(volume, np.random.default_rng(seed))]
        lo, hi = np.min(starts, axis=0), np.max(starts, axis=0) + np.array(crop)
        assert np.all(hi - lo <= np.array(base)), (seed, starts)  # both inside one 24^3 region
        spans.append(hi - lo)
    # independent crops of an 80^3 scan spread far wider than a 24^3 base
    indep = ViewSampler(crop, NO_AUG, num_views=2)
    wide = [
        np.ptp([_locate(volume, v) for v in indep(volume, np.random.default_rng(s))], axis=0)
        for s in range(30)
    ]
    assert np.max(wide) > 24 and np.max(spans) <= 24


def test_local_views_come_from_the_base_crop_with_their_own_size() -> None:
    volume = np.arange(64 * 64 * 64, dtype=np.float32).reshape(1, 64, 64, 64)
    sampler = ViewSampler(
        (16, 16, 16), NO_AUG, 2, base_crop=(24, 24, 24), local_views=3, local_crop_size=(8, 8, 8)
    )
    views, local = sampler.sample(volume, np.random.default_rng(1))
    assert [v.shape[1:] for v in views] == [torch.Size([16, 16, 16])] * 2
    assert [v.shape[1:] for v in local] == [torch.Size([8, 8, 8])] * 3
    starts = np.array([_locate(volume, v) for v in views + local])
    ends = starts + np.array([[16] * 3] * 2 + [[8] * 3] * 3)
    assert np.all(ends.max(axis=0) - starts.min(axis=0) <= 24)
    again = sampler.sample(volume, np.random.default_rng(1))
    assert all(torch.equal(a, b) for a, b in zip(views + local, again[0] + again[1]))


def test_base_crop_smaller_than_the_view_is_refused() -> None:
    with pytest.raises(ValueError, match="base_crop_size"):
        ViewSampler((16, 16, 16), NO_AUG, base_crop=(12, 16, 16))


def test_view_geometry_from_the_data_config() -> None:
    from medmim.data.config import DataConfig, view_geometry
    from medmim.errors import ConfigError

    shared = view_geometry(DataConfig(crop_size=[96, 96, 96]))
    assert shared == {
        "base_crop": [128, 128, 128],
        "local_views": 0,
        "local_crop_size": [48, 48, 48],
    }
    assert view_geometry(DataConfig(views="independent"))["base_crop"] is None
    with pytest.raises(ConfigError, match="Did you mean 'shared'"):
        view_geometry(DataConfig(views="shard"))
