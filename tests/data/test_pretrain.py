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
    lines = (run / "skipped.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert (
        rec["path"] == str(source / "truncated.nii.gz") and "corrupt or truncated" in rec["reason"]
    )
    build_pretrain_dataset(_cfg(source, tmp_path), run, seed=0)  # appends
    assert len((run / "skipped.jsonl").read_text(encoding="utf-8").splitlines()) == 2


def test_unlistable_sub_folder_is_skipped_and_recorded(
    tmp_path: Path, source: Path, monkeypatch
) -> None:
    """Under on_error=skip a sub-folder that cannot be listed goes to skipped.jsonl; under fail
    it stops the run, named."""
    (source / "locked").mkdir()
    real_iterdir = Path.iterdir

    def iterdir(self: Path):
        if self.name == "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    run = tmp_path / "runs" / "r1"
    assert len(build_pretrain_dataset(_cfg(source, tmp_path), run, seed=0)) == 3
    rows = [
        json.loads(line)
        for line in (run / "skipped.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert [r["path"] for r in rows] == [str(source / "locked"), str(source / "truncated.nii.gz")]
    assert "cannot be listed (Permission denied)" in rows[0]["reason"]
    with pytest.raises(DataError, match="locked: cannot be listed"):
        build_pretrain_dataset(_cfg(source, tmp_path, on_error="fail"), tmp_path / "r2", seed=0)


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


def _native(source: Path, tmp_path: Path, **kw) -> DataConfig:
    cfg = _cfg(source, tmp_path, mode="native", num_views=1)
    cfg.recipe.spacing = None
    cfg.crop_size = [16, 32, 32]
    for key, value in kw.items():
        setattr(cfg, key, value)
    return cfg


def test_native_mode_keeps_spacing_and_takes_2d_slices(tmp_path: Path, source: Path, scans) -> None:
    """The conftest scans are 0.8 x 0.9 x 2.5 mm (DA 1, slice axis z); a one-slice file is DA 5
    in native mode and still a bad file in views mode, even once cached."""
    from medmim.data.pumit import SLICE_2D_SPACING
    from medmim.layers.sac import degree_of_anisotropy

    scans.write_nifti(source / "slice.nii.gz", scans.ct_array()[:, :, 15:16])
    ds = build_pretrain_dataset(_native(source, tmp_path), tmp_path / "run", seed=0)
    assert len(ds) == 4 and sorted(ds.das) == [1, 1, 1, 5]
    for i, da in enumerate(ds.das):
        item = ds[(i, 3)]
        d = 8 if da == 1 else 1  # 16 >> DA, one slice at DA 5
        assert item["views"][0].shape == (1, d, 32, 32) and item["views"][0].dtype == torch.float32
        assert degree_of_anisotropy(item["spacing"]) == da  # the model sees the dataset's DA
        assert item["spacing"].tolist() == pytest.approx(
            [SLICE_2D_SPACING, 0.8, 0.9] if da == 5 else [2.5, 0.8, 0.9]
        )
    views_cfg = _cfg(source, tmp_path)
    views_cfg.recipe.spacing = None  # the same recipe: the 2D entry is in the cache
    run = tmp_path / "views"
    assert len(build_pretrain_dataset(views_cfg, run, seed=0)) == 3
    assert "slice.nii.gz" in (run / "skipped.jsonl").read_text(encoding="utf-8")


def test_native_mode_settings_fail_fast(tmp_path: Path, source: Path) -> None:
    cases = {
        "would resample them; set data.recipe.spacing=null": {"spacing": [1.0, 1.0, 1.0]},
        "set data.num_views=1 \\(got 2\\)": {"num_views": 2},
        "crop_size=\\[16, 32, 16\\]: in mode native give the DA-0 crop": {
            "crop_size": [16, 32, 16]
        },
        "crop_size=\\[24, 32, 32\\]": {"crop_size": [24, 32, 32]},
        "patch_size=12: give a power of two": {"patch_size": 12},
    }
    for message, change in cases.items():
        cfg = _native(source, tmp_path, **{k: v for k, v in change.items() if k != "spacing"})
        cfg.recipe.spacing = change.get("spacing")
        with pytest.raises(ConfigError, match=message):
            build_pretrain_dataset(cfg, None, seed=0)
    with pytest.raises(ConfigError, match="data.mode='nativ' is unknown. Did you mean 'native'"):
        build_pretrain_dataset(_cfg(source, tmp_path, mode="nativ"), None, seed=0)
    assert not (tmp_path / "cache").exists()  # nothing was preprocessed


def test_batch_sampler_follows_the_mode(tmp_path: Path, source: Path) -> None:
    from medmim.data.pretrain import build_pretrain_batch_sampler
    from medmim.data.pumit import DABatchSampler

    views = build_pretrain_dataset(_cfg(source, tmp_path), None, seed=0)
    assert build_pretrain_batch_sampler(_cfg(source, tmp_path), views, 4, 0, 1, 0) is None
    with pytest.raises(ConfigError, match="has no `das`; use medmim.data.pumit"):
        build_pretrain_batch_sampler(_native(source, tmp_path), views, 4, 0, 1, 0)
    mixed = torch.utils.data.TensorDataset(torch.zeros(3))
    mixed.das = [0, 2, 2]  # type: ignore[attr-defined]
    with pytest.raises(
        ConfigError, match=r"several degrees of anisotropy \[0, 2\].*data.mode=native"
    ):
        build_pretrain_batch_sampler(_cfg(source, tmp_path), mixed, 4, 0, 1, 0)
    sampler = build_pretrain_batch_sampler(_native(source, tmp_path), mixed, 4, 1, 2, 7)
    assert isinstance(sampler, DABatchSampler) and len(sampler) == 4
    assert (sampler.batch_size, sampler.rank, sampler.world_size, sampler.seed) == (2, 1, 2, 7)
