"""Device, precision and recipe choices shared by segment / attention / localize / reconstruct."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from medmim.data.preprocess import RECIPES, recipe_dict
from medmim.errors import ConfigError, did_you_mean

log = logging.getLogger(__name__)


def pick_device(name: str = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; fp32 elsewhere (bf16 on CPU is not faster, cpu-and-monai notes)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def default_roi(roi: Sequence[int] | None, meta: dict[str, Any]) -> list[int]:
    """The sliding-window / training ROI: `--roi`, else the encoder's pretraining crop
    (`crop_size` of its encoder.json, the field of view it learned), else 96^3."""
    return [int(r) for r in (roi or meta.get("crop_size") or [96, 96, 96])]


def resolve_recipe(meta: dict[str, Any], override: str | None) -> dict[str, Any]:
    """The preprocessing recipe: the `--recipe` preset, else the encoder's, else "smart".

    A scratch encoder built from a backbone preset records no recipe; use `scratch:<export>`
    (or `--recipe`) to compare pretrained and scratch encoders on identical inputs.
    """
    if override:
        if override not in RECIPES:
            raise ConfigError(f"--recipe {override}: unknown.{did_you_mean(override, RECIPES)}"
                              f" Choose one of {', '.join(RECIPES)}")
        return recipe_dict(RECIPES[override])
    if meta.get("recipe"):
        return recipe_dict(meta["recipe"])
    log.warning("the encoder records no recipe (scratch preset): using the 'smart' recipe")
    return recipe_dict(RECIPES["smart"])
