"""End to end: `medmim pretrain` trains PUMIT's tokenizer, then its MIM, on native-spacing phantom
crops in DA-homogeneous batches, and both runs resume (the tokenizer's exactly)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import medmim.train.loop as loop
from medmim.cli.main import main
from medmim.config import load_config
from medmim.data.pretrain import build_pretrain_batch_sampler, build_pretrain_dataset
from medmim.data.pumit import crop_size
from medmim.train.config import RunConfig
from medmim.train.sampler import build_loader, start_epoch

TIMING = ("time/step_s", "speed/samples_per_s")
#: tiny runs: DA-0 crops of 16 x 32 x 32 (1 x 2 x 2 tokens), 2 scans per batch, every step logged
#: and saved; the 3 phantoms + 1 slice give 2 steps per epoch.
TINY = [
    "data.crop_size=[16,32,32]",
    "data.batch_size=2",
    "train.log_every=1",
    "train.ckpt_every=1",
    "train.progress=false",
    "train.vis_every=0",
]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 small phantoms (slices 5-6 mm, in-plane 2.9-3.6 mm: DA 1, 0, 0) and one axial slice of
    the first as a one-slice 2D image (DA 5)."""
    out = tmp_path_factory.mktemp("phantoms")
    assert main(["data", "phantoms", "--out", str(out), "--n", "3", "--size", "small"]) == 0
    first = nib.load(out / "images" / "phantom_0000.nii.gz")
    array = np.asarray(first.dataobj)
    mid = array[:, :, array.shape[2] // 2 : array.shape[2] // 2 + 1].copy()
    nib.save(nib.Nifti1Image(mid, first.affine), out / "images" / "slice_2d.nii.gz")
    return out / "images"


def pretrain(images: Path, root: Path, preset: str, *overrides: str) -> int:
    args = [f"data.source={images}", f"output_dir={root}", *TINY, *overrides]
    return main(["pretrain", "--config", preset, *args])


def rows(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(ln).items() if k not in TIMING} for ln in lines]


def last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


def test_native_batches_are_da_homogeneous(images: Path, tmp_path: Path) -> None:
    cfg = load_config("pumit_tokenizer_demo", [f"data.source={images}", *TINY], schema=RunConfig)
    assert cfg.data.mode == "native" and cfg.data.recipe.spacing is None
    data = build_pretrain_dataset(cfg.data, tmp_path / "run", seed=0)
    assert sorted(data.das) == [0, 0, 1, 5]
    sampler = build_pretrain_batch_sampler(cfg.data, data, 12, rank=0, world_size=1, seed=0)
    loader, same = build_loader(data, 2, 0, 0, 1, 0, batch_sampler=sampler)
    assert same is sampler
    seen = set()
    for batch in start_epoch(loader, sampler, 0, 0, 0, 0):
        das = {data.das[i] for i in batch["index"].tolist()}
        assert len(das) == 1, das
        da = das.pop()
        seen.add(da)
        assert tuple(batch["views"][0].shape) == (2, 1, *crop_size(da, (1, 2)))
        assert batch["spacing"].shape == (2, 3)
        if da == 5:
            assert (batch["spacing"][:, 0] >= 1e8).all()  # the model infers DA 5 from it too
    assert seen == {0, 1, 5}


@pytest.mark.slow
def test_pretrain_tokenizer_then_mim_on_phantoms_and_resume(
    images: Path, tmp_path: Path, monkeypatch
) -> None:
    root = tmp_path / "runs"
    assert pretrain(images, root, "pumit_tokenizer_demo", "name=tok", "train.max_steps=3") == 0
    tok = root / "tok"
    logged = rows(tok)
    assert [r["step"] for r in logged] == [1, 2, 3]
    assert len({r["data/da"] for r in logged}) >= 2  # mixed DAs, one per batch, in one run

    after_step = loop._after_check

    def stop_after_step_1(s, *args):  # mid-epoch (2 steps per epoch): resuming skips a batch
        after_step(s, *args)
        if s.step == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(loop, "_after_check", stop_after_step_1)
        args = ("name=tok_r", "train.max_steps=3")
        assert pretrain(images, root, "pumit_tokenizer_demo", *args) == 130
    assert last(root / "tok_r")["step"] == 1
    assert pretrain(images, root, "pumit_tokenizer_demo", *args, "resume=true") == 0
    a, b = last(tok), last(root / "tok_r")
    assert a["step"] == b["step"] == 3 and a["sampler"] == b["sampler"]
    for key, value in a["method"].items():
        same = (
            torch.equal(value, b["method"][key])
            if torch.is_tensor(value)
            else value == b["method"][key]
        )
        assert same, key
    assert rows(root / "tok_r") == logged  # the same batches and losses at every step

    ckpt = f"method.tokenizer={tok / 'checkpoints' / 'last.ckpt'}"
    assert pretrain(images, root, "pumit_mim_demo", "name=mim", ckpt, "train.max_steps=2") == 0
    assert (
        pretrain(
            images, root, "pumit_mim_demo", "name=mim", ckpt, "train.max_steps=3", "resume=true"
        )
        == 0
    )
    assert [r["step"] for r in rows(root / "mim")] == [1, 2, 3]
    assert (
        last(root / "mim")["step"] == 3
        and last(root / "mim")["encoder_config"]["name"] == "universal_vit"
    )
