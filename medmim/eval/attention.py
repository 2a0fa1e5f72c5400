"""`medmim attention`: semantic-attention (SATT, SMART eq. 1) or ViT [CLS] attention maps per scan.

Each scan is preprocessed with the encoder's recipe and the encoder's `attn` output (B, N) on
its token grid is upsampled to the crop (trilinear, `medmim.models.attention_maps`).

Field of view (a choice the paper leaves open, made here and recorded in results.json):
by default the map is computed with a sliding window of the pretraining crop size
(`encoder.json` "crop_size", overlap 0.5, Gaussian blending), because that is the token count and
field of view over which the SA block learned its softmax. `--whole` runs the whole
preprocessed scan (padded to the encoder's stride) in one pass instead: one softmax over every
token of the scan, the closest to the paper's figures when the scan is about one crop in size.

Units: each window's attention is multiplied by its token count N, so 1.0 means "uniform
attention" and values are comparable across window sizes (the softmax of eq. 1 sums to 1 over
the N tokens). The map is then resampled to the original scan (`medmim.eval.volumes`) and written
as NIfTI with the scan's affine (it overlays in 3D Slicer / ITK-SNAP); voxels outside the
recipe's foreground crop are 0. A PNG shows three planes through the map's maximum.

Outputs in `--out`: `attention/<case>_attn.nii.gz`, `figures/<case>_attention.png` (first
`--max-figures` scans), `attention.csv` (peak value and its voxel / world position), results.json.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from torch import Tensor, nn
from tqdm.auto import tqdm

from medmim.data.sources import resolve_source
from medmim.errors import ConfigError
from medmim.eval import overlays
from medmim.eval.encoders import describe, load_encoder_or_scratch
from medmim.eval.report import write_results
from medmim.eval.runtime import (
    autocast,
    check_data_recipe,
    default_roi,
    pick_device,
    resolve_recipe,
)
from medmim.eval.volumes import Case, load_case, save_nifti, to_original
from medmim.models.attention_maps import attention_to_volume

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class WindowOptions:
    """How the maps are computed and shown: the options `medmim attention` and `medmim
    localize` share (their flags: `medmim.cli.attention.add_window_flags`).

    Attributes:
        split: the datalist section.
        roi: sliding-window size; None = the encoder's pretraining crop (`default_roi`).
        whole: one pass over the whole preprocessed scan instead of windows.
        overlap: sliding-window overlap.
        recipe: a recipe preset or plan file (`--plan`) instead of the encoder's.
        force_recipe: apply the recipe even to scans of another modality.
        seed, device, progress: as everywhere.
        max_figures: PNG overlays written.
    """

    split: str = "training"
    roi: list[int] | None = None
    whole: bool = False
    overlap: float = 0.5
    recipe: str | None = None
    force_recipe: bool = False
    seed: int = 0
    device: str = "auto"
    max_figures: int = 8
    progress: bool = True


@dataclass
class AttentionConfig(WindowOptions):
    """Options of `medmim attention` (the CLI flags, same names)."""

    encoder: str
    data: str
    out: str


def window_attention(encoder: nn.Module, x: Tensor) -> Tensor:
    """(B, C, D, H, W) -> (B, 1, D, H, W): the encoder's `attn` times N, upsampled to the input."""
    feats = encoder.forward_features(x)
    if feats.get("attn") is None:
        raise ConfigError(
            "this encoder has no attention output ('attn'): use a Swin with a "
            "semantic-attention block (sa_depth > 0) or a ViT with [CLS]"
        )
    attn = feats["attn"].float() * feats["attn"].shape[1]
    return attention_to_volume(attn, feats["grid"], x.shape[2:])[:, None]


def _stride(encoder: nn.Module) -> int:
    """Input sides must be multiples of this (Swin: patch * 16; ViT: the patch)."""
    return int(getattr(encoder, "bottleneck_stride", 32))


@torch.no_grad()
def attention_volume(
    encoder: nn.Module,
    image: np.ndarray,
    device: torch.device,
    roi: Sequence[int] | None = None,
    overlap: float = 0.5,
) -> Tensor:
    """Attention (X, Y, Z) on the recipe grid of one (C, X, Y, Z) image.

    Args:
        encoder: the backbone whose attention is mapped (put in eval mode).
        image: (C, X, Y, Z) preprocessed image.
        device: where the encoder runs; the result is on the CPU.
        roi: sliding-window size (multiples of the encoder's stride), or None for one pass over
            the whole image padded to the stride.
        overlap: sliding-window overlap (Gaussian blending).
    """
    encoder.eval()
    x = torch.from_numpy(np.ascontiguousarray(image))[None].float()
    stride = _stride(encoder)
    with autocast(device):
        if roi is None:
            shape = x.shape[2:]
            pad = [p for s in reversed(shape) for p in (0, -s % stride)]
            out = window_attention(encoder, F.pad(x, pad).to(device)).cpu()
            out = out[..., : shape[0], : shape[1], : shape[2]]
        else:
            if any(r % stride for r in roi):
                raise ConfigError(f"--roi {list(roi)}: sides must be multiples of {stride}")
            out = sliding_window_inference(
                x,
                list(roi),
                1,
                lambda w: window_attention(encoder, w),
                overlap=overlap,
                mode="gaussian",
                sw_device=device,
                device="cpu",
            )
    return out[0, 0].float()


def case_attention(
    encoder: nn.Module, case: Case, device: torch.device, roi: Sequence[int] | None, overlap: float
) -> tuple[np.ndarray, np.ndarray]:
    """(map on the recipe grid, map on the original scan grid), both float32."""
    grid = attention_volume(encoder, case.image, device, roi, overlap)
    original = to_original(grid[None], case.meta, mode="bilinear")[0]
    return grid.numpy(), original.numpy()


def peak_row(name: str, original: np.ndarray, affine: Any) -> dict[str, Any]:
    """The maximum of a map: value, voxel index and world position (mm, RAS)."""
    idx = np.unravel_index(int(np.argmax(original)), original.shape)
    world = np.asarray(affine, dtype=np.float64) @ np.array([*idx, 1.0])
    return {
        "case": name,
        "peak": float(original[idx]),
        "i": int(idx[0]),
        "j": int(idx[1]),
        "k": int(idx[2]),
        "x_mm": round(float(world[0]), 2),
        "y_mm": round(float(world[1]), 2),
        "z_mm": round(float(world[2]), 2),
    }


def run_attention(cfg: AttentionConfig) -> dict[str, Any]:
    """Maps, figures, table and results.json for every scan of `cfg.data`."""
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    encoder, meta = load_encoder_or_scratch(cfg.encoder, seed=cfg.seed, device=device)
    recipe = resolve_recipe(meta, cfg.recipe)
    roi = None if cfg.whole else default_roi(cfg.roi, meta)
    rows, figures = [], []
    records = resolve_source(cfg.data, split=cfg.split)
    check_data_recipe(records, recipe, cfg.force_recipe, cfg.recipe, str(cfg.data))
    for record in tqdm(records, desc="attention", leave=False, disable=not cfg.progress):
        case = load_case(record, recipe)
        grid, original = case_attention(encoder, case, device, roi, cfg.overlap)
        save_nifti(
            original, case.meta["original_affine"], out / "attention" / f"{case.name}_attn.nii.gz"
        )
        rows.append(peak_row(case.name, original, case.meta["original_affine"]))
        if len(figures) < cfg.max_figures:
            path = f"figures/{case.name}_attention.png"
            overlays.three_planes(case.image[0], grid, out / path, f"{case.name}: attention")
            figures.append({"title": f"{case.name} attention", "path": path})
    with open(out / "attention.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    metrics = {
        "attention/peak": {
            "mean": float(np.mean([r["peak"] for r in rows])),
            "std": float(np.std([r["peak"] for r in rows])),
        }
    }
    config = {
        **dataclasses.asdict(cfg),
        "roi": roi or "whole",
        "cases": len(rows),
        "recipe_used": recipe,
    }
    write_results(
        out,
        "attention",
        describe(cfg.encoder, meta),
        metrics,
        [{"title": "Attention peaks", "path": "attention.csv"}],
        figures,
        cfg.data,
        config,
    )
    return metrics
