"""The persistent cache: memory-mapped reads, content + recipe keys, atomic concurrent writes,
metadata that maps back to the scan, skip vs fail."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import medmim.data.cache as cache_mod
from medmim.data.cache import VolumeCache, cache_records
from medmim.data.config import RecipeConfig
from medmim.data.sources import Record
from medmim.errors import DataError

RECIPE = RecipeConfig(spacing=[2.0, 2.0, 2.0])


@pytest.fixture
def counted(monkeypatch) -> list[str]:
    """Count the calls of `preprocess` made by the cache."""
    calls: list[str] = []
    real = cache_mod.preprocess

    def wrapper(volume, recipe):
        calls.append(volume.meta["filename_or_obj"])
        return real(volume, recipe)

    monkeypatch.setattr(cache_mod, "preprocess", wrapper)
    return calls


def test_entry_is_memory_mapped_with_metadata(tmp_path: Path, ct_file: Path, counted) -> None:
    cache = VolumeCache(tmp_path / "cache", RECIPE)
    entry = cache.ensure(Record(str(ct_file)))
    array = entry.array()
    assert isinstance(array, np.memmap) and not array.flags.writeable and array.dtype == np.float32
    meta = json.loads(entry.path.with_suffix(".json").read_text(encoding="utf-8"))
    assert meta["source"] == str(ct_file) and meta["recipe"]["spacing"] == [2.0, 2.0, 2.0]
    assert meta["shape"] == list(array.shape[1:]) and meta["spacing"] == [2.0, 2.0, 2.0]
    assert meta["original_shape"] == [40, 36, 30] and len(meta["crop_box"]) == 3
    assert np.asarray(meta["affine"]).shape == (4, 4) and np.asarray(
        meta["original_affine"]
    ).shape == (4, 4)
    assert cache.ensure(Record(str(ct_file))).path == entry.path and counted == [str(ct_file)]
    assert json.loads((cache.root / "recipe.json").read_text(encoding="utf-8"))["spacing"] == [
        2.0,
        2.0,
        2.0,
    ]


def test_content_change_with_same_size_and_mtime_is_seen(
    tmp_path: Path, ct_file: Path, scans, counted
) -> None:
    cache = VolumeCache(tmp_path / "cache", RECIPE)
    first = cache.ensure(Record(str(ct_file)))
    before = np.array(first.array())
    stat = ct_file.stat()
    scans.write_nifti(
        ct_file, np.clip(scans.ct_array().astype(np.int32) + 300, -1000, 3000).astype(np.int16)
    )
    os.utime(ct_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
    second = cache.ensure(Record(str(ct_file)))
    assert second.path != first.path and len(counted) == 2
    assert not np.array_equal(before, np.asarray(second.array()))


def test_recipe_change_never_reads_stale_data(tmp_path: Path, ct_file: Path, counted) -> None:
    a = VolumeCache(tmp_path / "cache", RECIPE).ensure(Record(str(ct_file)))
    b = VolumeCache(
        tmp_path / "cache", RecipeConfig(spacing=[2.0, 2.0, 2.0], window=[-175, 250])
    ).ensure(Record(str(ct_file)))
    assert a.path.parent.parent != b.path.parent.parent and len(counted) == 2
    assert not np.array_equal(np.asarray(a.array()), np.asarray(b.array()))
    assert VolumeCache(tmp_path / "cache", RECIPE).lookup(Record(str(ct_file))).path == a.path
    same = VolumeCache(
        tmp_path / "cache", {"spacing": [2, 2, 2], "window": [-750, 1750], "orientation": "ras"}
    )
    assert (
        same.recipe_hash == VolumeCache(tmp_path / "cache", RECIPE).recipe_hash
    )  # canonical numbers


def test_archive_members_have_their_own_entries(tmp_path: Path, scans) -> None:
    stack = np.stack([scans.ct_array(seed=0), scans.ct_array(seed=1)])
    np.savez(tmp_path / "stack.npz", train_images=stack)
    cache = VolumeCache(
        tmp_path / "cache", RecipeConfig(orientation="", spacing=None, foreground_crop=False)
    )
    e0, e1 = (
        cache.ensure(Record(str(tmp_path / "stack.npz"), array_key="train_images", array_index=i))
        for i in (0, 1)
    )
    assert e0.path != e1.path and e1.meta["source"].endswith("::train_images[1]")


def test_series_of_one_dicom_folder_have_their_own_entries(tmp_path: Path) -> None:
    """Two series in one folder: same folder content, so the series must be in the key."""
    from test_dicom import _series_from

    from medmim.data.sources import resolve_source

    _series_from("CT_small.dcm", tmp_path / "study", 3, prefix="A")
    _series_from("CT_small.dcm", tmp_path / "study", 2, prefix="B")
    cache = VolumeCache(
        tmp_path / "cache", RecipeConfig(orientation="", spacing=None, foreground_crop=False)
    )
    entries = [cache.ensure(r) for r in resolve_source(tmp_path / "study")]
    assert entries[0].path != entries[1].path
    assert sorted(e.array().shape[-1] for e in entries) == [2, 3]
    assert all("::series-" in e.meta["source"] for e in entries)


def test_concurrent_writers_and_partial_entries(tmp_path: Path, ct_file: Path, counted) -> None:
    cache = VolumeCache(tmp_path / "cache", RECIPE)
    with ThreadPoolExecutor(4) as pool:
        entries = list(pool.map(lambda _: cache.ensure(Record(str(ct_file))), range(4)))
    assert len({e.path for e in entries}) == 1
    assert not list(cache.root.rglob("*.tmp")) and np.asarray(entries[0].array()).size > 0
    entries[0].path.with_suffix(".json").unlink()  # a writer died between array and JSON
    assert cache.lookup(Record(str(ct_file))) is None
    n = len(counted)
    cache.ensure(Record(str(ct_file)))
    assert len(counted) == n + 1


def test_float16_cache(tmp_path: Path, ct_file: Path) -> None:
    entry = VolumeCache(tmp_path / "c", RecipeConfig(cache_dtype="float16")).ensure(
        Record(str(ct_file))
    )
    assert entry.array().dtype == np.float16 and entry.meta["dtype"] == "float16"


def test_cache_records_skip_and_fail(tmp_path: Path, scans) -> None:
    good = [scans.write_nifti(tmp_path / f"g{i}.nii.gz", scans.ct_array(seed=i)) for i in range(2)]
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"")
    records = [
        Record(str(good[0])),
        Record(str(bad)),
        Record(str(tmp_path / "missing.nii.gz")),
        Record(str(good[1])),
    ]
    cache = VolumeCache(tmp_path / "cache", RECIPE)
    volumes, errors = cache_records(records, cache, on_error="skip", progress=False)
    assert [r.image for r, _ in volumes] == [str(good[0]), str(good[1])]
    assert [(e.path, e.reason) for e in errors] == [
        (str(bad), "empty file (0 bytes)"),
        (str(tmp_path / "missing.nii.gz"), "file not found"),
    ]
    with pytest.raises(DataError, match="empty file"):
        cache_records(records, cache, on_error="fail", progress=False)
