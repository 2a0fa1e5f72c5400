"""`medmim localize`: zero-shot localization from attention maps (SMART sec. 5.5).

"LC segmentation was produced by thresholding the attention maps using 90% percentile of the
attention values" and scored with the Dice-Sorensen coefficient against the reference masks
(SMART: 0.62 +- 0.32 on the 5R lung-tumor set). Here, per scan, on the original scan grid:

1. the attention map of `medmim attention` (computed, or read back with `--attention DIR`);
2. threshold t = the `percentile`-th percentile of the attention values inside the encoder's
   field of view (voxels with attention > 0: the recipe's foreground crop; voxels cropped away
   as background carry no attention and would only lower t); prediction = attention >= t;
3. optionally keep the largest connected component (26-connectivity, scipy.ndimage);
4. Dice = 2 |P & R| / (|P| + |R|) (MONAI `compute_dice`; NaN when the reference is empty) and
   the "pointing game" hit: whether the attention maximum falls inside the reference.

Outputs in `--out`: `localize.csv` (per case), `masks/<case>_loc.nii.gz` (the binary
prediction, original geometry), `figures/<case>_localize.png`, results.json with
`localize/dice` mean +- std and `localize/pointing`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_dice
from scipy import ndimage
from tqdm.auto import tqdm

from medmim.data.io import load_volume
from medmim.data.sources import resolve_source
from medmim.errors import ConfigError, DataError
from medmim.eval import overlays
from medmim.eval.attention import WindowOptions, case_attention
from medmim.eval.encoders import describe, load_encoder_or_scratch
from medmim.eval.metrics import mean_std
from medmim.eval.report import write_results
from medmim.eval.runtime import check_data_recipe, default_roi, pick_device, resolve_recipe
from medmim.eval.volumes import Case, load_case, mask_path, save_nifti


@dataclass
class LocalizeConfig(WindowOptions):
    """Options of `medmim localize` (the CLI flags, same names)."""

    data: str
    out: str
    encoder: str | None = None
    attention: str | None = None
    mask_key: str = "label"
    percentile: float = 90.0
    largest_component: bool = False


def threshold_attention(
    attn: np.ndarray, percentile: float = 90.0, largest_component: bool = False
) -> tuple[np.ndarray, float]:
    """Binary localization of an (X, Y, Z) attention map and the threshold used (steps 2-3)."""
    if not 0 <= percentile < 100:
        raise ConfigError(f"--percentile {percentile}: give a value in [0, 100)")
    valid = attn > 0
    if not valid.any():
        return np.zeros(attn.shape, bool), float("nan")
    t = float(np.percentile(attn[valid], percentile))
    pred = (attn >= t) & valid
    return (largest_component_mask(pred) if largest_component else pred), t


def largest_component_mask(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a binary (X, Y, Z) mask (scipy.ndimage.label)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if count <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two binary (X, Y, Z) masks (MONAI `compute_dice`); NaN for an empty reference."""
    p = torch.from_numpy(np.asarray(pred, dtype=np.float32))[None, None]
    r = torch.from_numpy(np.asarray(ref, dtype=np.float32))[None, None]
    return float(compute_dice(p, r, include_background=True, ignore_empty=True)[0, 0])


def case_row(
    name: str, attn: np.ndarray, ref: np.ndarray, cfg: LocalizeConfig
) -> tuple[dict, np.ndarray]:
    """The per-case record and the binary prediction."""
    pred, t = threshold_attention(attn, cfg.percentile, cfg.largest_component)
    peak = np.unravel_index(int(np.argmax(attn)), attn.shape)
    row = {
        "case": name,
        "dice": dice(pred, ref),
        "pointing": float(bool(ref[peak])),
        "threshold": t,
        "predicted_voxels": int(pred.sum()),
        "reference_voxels": int(ref.sum()),
    }
    return row, pred


def _reference(case: Case, key: str, base: Path) -> np.ndarray:
    path = mask_path(case.record, key, base)
    if path is None:
        raise DataError(
            case.record.image,
            f"has no '{key}' mask; set --mask-key to the datalist field holding the reference mask",
        )
    ref = load_volume(path)[0].numpy() > 0
    if list(ref.shape) != list(case.meta["original_shape"]):
        raise DataError(
            path, f"shape {ref.shape} differs from the image's {case.meta['original_shape']}"
        )
    return ref


def _attention_source(cfg: LocalizeConfig, device: torch.device) -> tuple[Any, dict, dict]:
    """(encoder or None, encoder meta, results.json encoder entry)."""
    if cfg.attention:
        results = Path(cfg.attention) / "results.json"
        if not results.is_file():
            raise DataError(
                cfg.attention, "not an output folder of `medmim attention` (no results.json)"
            )
        record = json.loads(results.read_text(encoding="utf-8"))
        return None, {"recipe": record.get("config", {}).get("recipe_used")}, record["encoder"]
    if not cfg.encoder:
        raise ConfigError(
            "give --encoder (to compute attention maps) or --attention DIR (maps "
            "written by `medmim attention`)"
        )
    encoder, meta = load_encoder_or_scratch(cfg.encoder, seed=cfg.seed, device=device)
    return encoder, meta, describe(cfg.encoder, meta)


def _map(
    cfg: LocalizeConfig, encoder: Any, case: Case, device: torch.device
) -> tuple[np.ndarray, np.ndarray | None]:
    """(attention on the original grid, on the recipe grid or None when read from disk)."""
    if encoder is None:
        path = Path(cfg.attention) / "attention" / f"{case.name}_attn.nii.gz"
        vol = load_volume(path)[0].numpy()
        if list(vol.shape) != list(case.meta["original_shape"]):
            raise DataError(
                path, f"shape {vol.shape} differs from the image's {case.meta['original_shape']}"
            )
        return vol, None
    grid, original = case_attention(
        encoder, case, device, None if cfg.whole else cfg.roi, cfg.overlap
    )
    return original, grid


def run_localize(cfg: LocalizeConfig) -> dict[str, Any]:
    """Localize every scan of `cfg.data`, score it, write every output."""
    out, device = Path(cfg.out), pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    encoder, meta, who = _attention_source(cfg, device)
    recipe = resolve_recipe(meta, cfg.recipe)
    if encoder is not None and not cfg.whole and cfg.roi is None:
        cfg = dataclasses.replace(cfg, roi=default_roi(None, meta))
    base = Path(cfg.data).parent
    rows, figures = [], []
    records = resolve_source(cfg.data, split=cfg.split)
    check_data_recipe(records, recipe, cfg.force_recipe, cfg.recipe, str(cfg.data))
    for record in tqdm(records, desc="localize", leave=False, disable=not cfg.progress):
        case = load_case(record, recipe)
        attn, grid = _map(cfg, encoder, case, device)
        ref = _reference(case, cfg.mask_key, base)
        row, pred = case_row(case.name, attn, ref, cfg)
        rows.append(row)
        save_nifti(
            pred, case.meta["original_affine"], out / "masks" / f"{case.name}_loc.nii.gz", np.uint8
        )
        if len(figures) < cfg.max_figures:
            path = f"figures/{case.name}_localize.png"
            overlays.three_planes(
                load_volume(record.image)[0].numpy(),
                attn,
                out / path,
                f"{case.name}: Dice {row['dice']:.3f}",
                contour=ref,
                plane_names=("axis 0", "axis 1", "axis 2"),
                spacing=case.original_spacing,
            )
            figures.append({"title": f"{case.name} localization", "path": path})
    with open(out / "localize.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    metrics = {
        "localize/dice": mean_std([r["dice"] for r in rows]),
        "localize/pointing": float(np.mean([r["pointing"] for r in rows])),
    }
    config = {**dataclasses.asdict(cfg), "cases": len(rows)}
    write_results(
        out,
        "localize",
        who,
        metrics,
        [{"title": "Per case", "path": "localize.csv"}],
        figures,
        cfg.data,
        config,
    )
    return metrics
