"""Device, precision and recipe choices shared by segment / attention / localize / reconstruct."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medmim.data.config import DEFAULT_RECIPE
from medmim.data.preprocess import RECIPES, preset_name, recipe_dict

log = logging.getLogger(__name__)


def pick_device(name: str = "auto") -> torch.device:
    """The device for `name`: "auto" -> CUDA when available, else CPU; else the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; fp32 elsewhere (bf16 on CPU is not faster, cpu-and-monai notes)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def default_roi(roi: Sequence[int] | None, meta: dict[str, Any]) -> list[int]:
    """The sliding-window / training ROI: `--roi`, else the encoder's pretraining crop
    (`crop_size` of its encoder.json, the field of view it learned), else 96^3.
    """
    return [int(r) for r in (roi or meta.get("crop_size") or [96, 96, 96])]


def resolve_recipe(meta: dict[str, Any], override: str | None) -> dict[str, Any]:
    """The preprocessing recipe: `--plan` / `--recipe` (a plan file of `medmim data plan`, or a
    preset name such as mr, ct, smit), else the encoder's, else "smart".

    A scratch encoder built from a backbone preset records no recipe; use `scratch:<export>`
    (or `--recipe`) to compare pretrained and scratch encoders on identical inputs.
    """
    if override:
        if Path(override).suffix.lower() in (".yaml", ".yml"):
            from medmim.data.plan import plan_recipe

            return plan_recipe(override)
        return recipe_dict(RECIPES[preset_name(override, "--recipe")])
    if meta.get("recipe"):
        return recipe_dict(meta["recipe"])
    log.warning(
        "the encoder records no recipe (scratch preset): using the '%s' recipe", DEFAULT_RECIPE
    )
    return recipe_dict(RECIPES[DEFAULT_RECIPE])


def check_data_recipe(
    records: Sequence[Any],
    recipe: Any,
    force: bool = False,
    override: str | None = None,
    source: str = "",
    crops: bool = False,
) -> None:
    """Stop (`ConfigError`) when `recipe` is made for another modality than a few of `records`
    (`medmim.data.recipe_check`; `crops`: volumes cut around objects, see there), naming
    `--plan` / `--recipe` / `--force-recipe`; `force` skips the check.
    """
    if force:
        return
    from medmim.data.recipe_check import EVAL_FIXES, check_recipe_modality

    what = f"--recipe {override}" if override else "the encoder's recipe"
    check_recipe_modality(records, recipe, fixes=EVAL_FIXES, what=what, source=source, crops=crops)
