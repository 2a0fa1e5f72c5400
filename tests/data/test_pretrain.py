"""The pretraining dataset: the contract, skip vs fail before training, determinism as a pure
function of (seed, epoch, index), and no crash on a cache entry lost mid-run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from medmim.data.config import DataConfig
from medmim.data.pretrain import build_pretrain_dataset
from medmim.errors import ConfigError, DataError


@pytest.fixture
def source(tmp_path: Path, scans) -> Path:
    folder = tmp_path / "scans"
    for i in range(3):
        scans.write_nifti(folder / f"ct{i}.nii.gz", scans.ct_array(seed=i))
    (folder / "truncated.nii.gz").write_bytes((folder / "ct0.nii.gz").read_bytes()[:200])
    return folder


def _cfg(source: Path, tmp_path: Path, **kw) -> DataConfig:
    return DataConfig(
        source=str(source), cache_dir=str(tmp_path / "cache"), crop_size=[16, 16, 16], **kw
    )


def test_items_follow_the_contract_and_bad_files_are_skipped(tmp_path: Path, source: Path) -> None:
    run = tmp_path / "runs" / "r1"
    ds = build_pretrain_dataset(_cfg(source, tmp_path), run, seed=0)
    assert len(ds) == 3
    item = ds[1]
    assert item["index"] == 1 and len(item["views"]) == 2
    assert all(v.shape == (1, 16, 16, 16) and v.dtype == torch.float32 for v in item["views"])
    lines = (run / "skipped.jsonl").read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert (
        rec["path"] == str(source / "truncated.nii.gz") and "corrupt or truncated" in rec["reason"]
    )
    build_pretrain_dataset(_cfg(source, tmp_path), run, seed=0)  # appends
    assert len((run / "skipped.jsonl").read_text().splitlines()) == 2


def test_fail_stops_before_training(tmp_path: Path, source: Path) -> None:
    with pytest.raises(DataError, match="truncated.nii.gz: cannot be read"):
        build_pretrain_dataset(_cfg(source, tmp_path, on_error="fail"), tmp_path / "run", seed=0)
    assert not (tmp_path / "run" / "skipped.jsonl").exists()
    with pytest.raises(ConfigError, match="on_error='skp' is unknown. Did you mean 'skip'"):
        build_pretrain_dataset(_cfg(source, tmp_path, on_error="skp"), None, seed=0)


def test_no_usable_scan(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match="no usable scan: all 1 failed"):
        build_pretrain_dataset(_cfg(tmp_path / "d", tmp_path), None, seed=0)


def test_views_are_a_pure_function_of_seed_epoch_index(tmp_path: Path, source: Path) -> None:
    cfg = OmegaConf.structured(_cfg(source, tmp_path))  # an OmegaConf node works too
    ds = build_pretrain_dataset(cfg, None, seed=7)
    same = build_pretrain_dataset(cfg, None, seed=7)
    other = build_pretrain_dataset(cfg, None, seed=8)
    assert torch.equal(ds[0]["views"][0], same[0]["views"][0])
    assert not torch.equal(ds[0]["views"][0], other[0]["views"][0])
    first = ds[0]["views"][0]
    ds.set_epoch(1)
    assert not torch.equal(first, ds[0]["views"][0])
    ds.set_epoch(0)
    assert torch.equal(first, ds[0]["views"][0])


def _same(batches_a: list, batches_b: list) -> bool:
    return len(batches_a) == len(batches_b) and all(
        torch.equal(a["index"], b["index"])
        and all(torch.equal(x, y) for x, y in zip(a["views"], b["views"]))
        for a, b in zip(batches_a, batches_b)
    )


def test_same_batches_with_and_without_workers(tmp_path: Path, source: Path) -> None:
    ds = build_pretrain_dataset(_cfg(source, tmp_path), None, seed=3)
    serial = {}
    for epoch in (2, 3):
        ds.set_epoch(epoch)
        serial[epoch] = list(DataLoader(ds, batch_size=2, num_workers=0))
    assert serial[2][0]["views"][0].shape == (2, 1, 16, 16, 16) and not _same(serial[2], serial[3])
    loader = DataLoader(ds, batch_size=2, num_workers=2, persistent_workers=True)
    ds.set_epoch(2)
    assert _same(serial[2], list(loader))
    ds.set_epoch(3)  # reaches the persistent workers through shared memory
    assert _same(serial[3], list(loader))
    del loader  # stop the workers here (at a later garbage collection they took 10 s)


def test_lost_cache_entry_does_not_stop_the_epoch(tmp_path: Path, source: Path, caplog) -> None:
    ds = build_pretrain_dataset(_cfg(source, tmp_path), None, seed=0)
    ds.entries[1].path.unlink()
    item = ds[1]
    assert item["index"] == 2 and "unreadable" in caplog.text
