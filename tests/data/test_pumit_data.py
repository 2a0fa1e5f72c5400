"""PUMIT data: crop sizes per DA, DA-homogeneous batches, native spacing, 2D images, sharding."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch.utils.data import DataLoader

from medmim.data.pumit import (
    SLICE_2D_SPACING,
    CachedArray,
    DABatchSampler,
    NativeSpacingCropDataset,
    SpacedImage,
    crop_size,
    from_cached,
    from_volume,
    slice_axis,
)
from medmim.errors import DataError


def _images() -> list[SpacedImage]:
    rng = np.random.default_rng(0)
    return [
        SpacedImage(rng.random((1, 40, 40, 40), dtype=np.float32), (1.0, 1.0, 1.0), "iso"),  # DA 0
        SpacedImage(
            rng.random((1, 12, 40, 40), dtype=np.float32), (4.0, 1.0, 1.0), "thick"
        ),  # DA 2
        SpacedImage(
            rng.random((1, 1, 40, 48), dtype=np.float32), (1.0, 0.2, 0.2), "xray"
        ),  # 2D: DA 5
        SpacedImage(
            rng.random((1, 9, 30, 30), dtype=np.float32), (5.0, 1.25, 1.3), "thick2"
        ),  # DA 2
    ]


def test_crop_size_rule() -> None:
    assert [crop_size(a, (4, 8)) for a in range(6)] == [
        (64, 128, 128),
        (32, 128, 128),
        (16, 128, 128),
        (8, 128, 128),
        (4, 128, 128),
        (1, 128, 128),
    ]
    assert crop_size(0, (5, 10)) == (80, 160, 160) and crop_size(5, (5, 10)) == (1, 160, 160)


def test_batches_share_one_da_and_shape() -> None:
    data = NativeSpacingCropDataset(_images(), tokens=(2, 2))
    assert data.das == [0, 2, 5, 2]
    sampler = DABatchSampler(data.das, batch_size=2, num_batches=12, seed=1)
    batches = list(DataLoader(data, batch_sampler=sampler))
    assert len(batches) == len(sampler) == 12
    seen = Counter()
    for batch in batches:
        das = {data.das[i] for i in batch["index"].tolist()}
        assert len(das) == 1
        da = das.pop()
        seen[da] += 1
        assert tuple(batch["views"][0].shape) == (2, 1, *crop_size(da, (2, 2)))
        assert batch["spacing"].shape == (2, 3)
    assert set(seen) == {0, 2, 5}
    assert any(3 in b["index"].tolist() for b in batches)  # the 30x30 image, zero-padded to 32x32


def test_crops_are_native_voxels_not_resampled() -> None:
    img = SpacedImage(
        np.arange(12 * 32 * 32, dtype=np.float32).reshape(1, 12, 32, 32), (4.0, 1.0, 1.0)
    )
    data = NativeSpacingCropDataset([img], tokens=(2, 2), flip_prob=0.0)
    crop = data[(0, 7)]["views"][0]
    assert crop.shape == (1, 8, 32, 32)
    values = set(img.array.ravel().tolist())
    assert set(crop.ravel().tolist()) <= values
    assert float(crop[0, 1, 0, 0] - crop[0, 0, 0, 0]) == 32 * 32  # consecutive native slices
    torch.testing.assert_close(data[(0, 7)]["views"][0], crop)  # same draw, same crop


def test_sampler_is_deterministic_and_shards_without_overlap() -> None:
    das = [0, 1, 0, 1, 2, 2, 0, 1]
    a = list(DABatchSampler(das, 2, 6, seed=3))
    assert a == list(DABatchSampler(das, 2, 6, seed=3))
    s = DABatchSampler(das, 2, 6, seed=3)
    s.set_epoch(1)
    assert list(s) != a
    r0 = list(DABatchSampler(das, 2, 3, seed=3, rank=0, world_size=2))
    r1 = list(DABatchSampler(das, 2, 3, seed=3, rank=1, world_size=2))
    assert r0 == a[0:6:2] and r1 == a[1:6:2]
    only = list(DABatchSampler(das, 2, 5, weights=[0, 0, 0, 0, 1, 1, 0, 0]))
    assert all(i in (4, 5) for batch in only for i, _ in batch)


def test_from_volume_moves_the_slice_axis_first_and_scales() -> None:
    volume = MetaTensor(
        torch.rand(1, 20, 24, 6) * 1000, affine=torch.diag(torch.tensor([0.8, 0.8, 5.0, 1.0]))
    )
    img = from_volume(volume)
    assert img.array.shape == (1, 6, 20, 24) and img.spacing == pytest.approx((5.0, 0.8, 0.8))
    assert img.array.min() >= 0 and img.array.max() <= 1


def test_bad_images_raise_data_errors() -> None:
    with pytest.raises(DataError, match="spacing must be three positive"):
        NativeSpacingCropDataset(
            [SpacedImage(np.zeros((4, 4, 4), np.float32), (0.0, 1.0, 1.0), "a.nii")]
        )
    with pytest.raises(DataError, match=r"a.nii: expected a \(C, D, H, W\)"):
        NativeSpacingCropDataset(
            [SpacedImage(np.zeros((4, 4), np.float32), (1.0, 1.0, 1.0), "a.nii")]
        )


def test_sampler_resumes_mid_epoch_by_skipping_batches() -> None:
    das = [0, 1, 0, 1, 2, 2, 0, 1]
    full = list(DABatchSampler(das, 2, 6, seed=3))
    s = DABatchSampler(das, 2, 6, seed=3)
    s.set_epoch(0, start=4)
    assert list(s) == full[4:] and len(s) == 2
    s.set_epoch(0, start=6)
    assert list(s) == [] and len(s) == 0
    r1 = DABatchSampler(das, 2, 3, seed=3, rank=1, world_size=2)
    r1.set_epoch(0, start=1)
    assert list(r1) == full[3:6:2]  # rank 1's batches 1 and 2 of the global order


def test_slice_axis_and_one_slice_images_see_the_max_da() -> None:
    assert slice_axis((0.8, 0.8, 5.0), (20, 20, 6)) == 2
    assert slice_axis((3.0, 0.8, 0.8), (6, 20, 20)) == 0
    assert slice_axis((1.0, 1.0, 1.0), (8, 8, 8)) == 2  # ties: the last axis
    assert slice_axis((0.5, 0.5, 0.2), (30, 1, 40)) == 1  # a one-slice image: its singleton axis
    from medmim.layers.sac import degree_of_anisotropy

    data = NativeSpacingCropDataset(_images(), tokens=(2, 2))
    item = data[(2, 0)]  # the "xray" image, spacing (1.0, 0.2, 0.2): DA 2 by spacing alone
    assert item["spacing"].tolist() == pytest.approx([SLICE_2D_SPACING, 0.2, 0.2])
    assert degree_of_anisotropy(item["spacing"]) == data.das[2] == 5


def test_cached_array_reads_lazily_and_pickles_without_voxels(tmp_path) -> None:
    import pickle

    xyz = np.arange(1 * 6 * 5 * 4, dtype=np.float32).reshape(1, 6, 5, 4)
    np.save(tmp_path / "v.npy", xyz)
    img = from_cached(tmp_path / "v.npy", (0.7, 0.8, 2.0), "v")
    assert img.array.shape == (1, 4, 6, 5) and img.spacing == (2.0, 0.7, 0.8)
    np.testing.assert_array_equal(img.array[:, 1:3, :, 2], xyz.transpose(0, 3, 1, 2)[:, 1:3, :, 2])
    assert len(pickle.dumps(img.array)) < xyz.nbytes  # workers get the path, not the voxels
    clone = pickle.loads(pickle.dumps(img.array))
    np.testing.assert_array_equal(clone[:], xyz.transpose(0, 3, 1, 2))
    data = NativeSpacingCropDataset([img], tokens=(1, 1), patch_size=4, flip_prob=0.0)
    assert data.das == [1] and data[(0, 0)]["views"][0].shape == (1, 2, 4, 4)
    np.save(tmp_path / "bad.npy", np.zeros((6, 5, 4), np.float32))
    with pytest.raises(DataError, match=r"bad.npy: expected a cached \(C, X, Y, Z\) array"):
        CachedArray(tmp_path / "bad.npy", (1.0, 1.0, 1.0))
