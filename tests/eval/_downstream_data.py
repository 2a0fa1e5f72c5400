"""Tiny labelled scans, checkpoints and exported encoders for the downstream and export tests.

The fixtures built from these live in `tests/eval/conftest.py`."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from safetensors.torch import save_file

from medmim import __version__
from medmim.registry import BACKBONES

TINY_SWIN = {"name": "swin", "embed_dim": 12, "depths": [1, 1, 1, 1], "num_heads": [3, 3, 3, 3]}
TINY_VIT = {
    "name": "vit",
    "embed_dim": 24,
    "depth": 2,
    "num_heads": 2,
    "patch_size": 8,
    "pos_grid": [4, 4, 4],
}
#: A tiny PUMIT universal ViT (patch 16, 2 blocks) whose position table fits 16x32x32 crops.
TINY_UVIT = {
    "name": "uvit_demo",
    "embed_dim": 24,
    "depth": 2,
    "num_heads": 2,
    "pos_embed_shape": [1, 2, 2],
}
#: The data section of a `pumit_mim` run: native spacing, slice-first DA-0 crops (D, H, W).
PUMIT_DATA = {
    "mode": "native",
    "crop_size": [16, 32, 32],
    "recipe": {
        "orientation": "RAS",
        "spacing": None,
        "intensity": "mr_percentile",
        "percentiles": [0.5, 99.5],
        "foreground_crop": True,
    },
}
#: A recipe that keeps the native spacing (exact geometry round trips) and CT windowing.
NATIVE = {
    "orientation": "RAS",
    "spacing": None,
    "intensity": "ct",
    "window": [-200.0, 300.0],
    "foreground_crop": True,
}
#: Non-RAS (x -> L, y -> S, z -> P), anisotropic (0.9, 1.1, 2.0 mm) voxel -> world mapping.
AFFINE = np.array([[-0.9, 0, 0, 40.0], [0, 0, -2.0, 60.0], [0, 1.1, 0, -30.0], [0, 0, 0, 1]])


def write_case(
    folder: Path, name: str, shape=(44, 40, 24), seed: int = 0, affine: np.ndarray = AFFINE
) -> dict[str, str]:
    """A CT-like body box with two organs (labels 1, 2) and a bright 'tumor' inside organ 1."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    img = np.full(shape, -1000.0, np.float32)
    img[3:-3, 3:-3, 2:-2] = 0.0
    label = np.zeros(shape, np.uint8)
    for k, (center, radius, hu) in enumerate([((14, 14, 12), 7, 120), ((30, 26, 12), 6, 220)], 1):
        c = np.asarray(center) + rng.integers(-2, 3, 3)
        inside = (
            (
                (grid - c[:, None, None, None])
                / np.array([radius, radius, radius / 2])[:, None, None, None]
            )
            ** 2
        ).sum(0) <= 1
        label[inside] = k
        img[inside] = hu
    tumor = ((grid - np.array([14, 14, 12])[:, None, None, None]) ** 2).sum(0) <= 6
    img[tumor] = 280
    img += rng.normal(0, 10, shape).astype(np.float32)
    paths = {
        "image": f"images/{name}.nii.gz",
        "label": f"labels/{name}.nii.gz",
        "tumor": f"labels/{name}_tumor.nii.gz",
    }
    for key, arr in (("image", img), ("label", label), ("tumor", tumor.astype(np.uint8))):
        (folder / paths[key]).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(arr, affine), str(folder / paths[key]))
    return paths


def write_export(folder: Path, spec: dict, recipe: dict = NATIVE, crop=(64, 64, 64)) -> Path:
    """An exported encoder folder (encoder.safetensors + encoder.json) for `spec`."""
    model = BACKBONES.build(spec)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "encoder.safetensors"),
    )
    meta = {
        "medmim_version": "test",
        "backbone": model.config,
        "method": "smart",
        "patch_size": None,
        "spacing": None,
        "recipe": recipe,
        "in_channels": 1,
        "crop_size": list(crop),
    }
    (folder / "encoder.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


def write_checkpoint(run: Path, spec: dict, data: dict, method: str = "smart") -> torch.nn.Module:
    """`run/checkpoints/last.ckpt` with every key of the contract, as the training loop writes
    it, for a run of `method` on `data` (its config's data section); returns the encoder."""
    encoder = BACKBONES.build(spec)
    ckpt = {
        "method": {"student.w": torch.zeros(1)},
        "optimizer": {"state": {}, "param_groups": []},
        "scaler": {},
        "step": 12,
        "epoch": 1,
        "rng": {"torch": torch.get_rng_state()},
        "sampler": {"epoch": 1},
        "config": {"name": run.name, "data": data, "method": {"name": method}},
        "encoder": encoder.state_dict(),
        "encoder_config": encoder.config,
        "medmim_version": __version__,
    }
    (run / "checkpoints").mkdir(parents=True)
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    return encoder.eval()
