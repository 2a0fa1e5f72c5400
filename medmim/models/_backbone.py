"""Helpers shared by the backbones: input and mask checks, build specs, size presets."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from medmim.errors import ConfigError
from medmim.registry import BACKBONES, check_kwargs


def check_input(x: Tensor, in_channels: int, divisor: int, who: str) -> None:
    """Raise ValueError unless `x` is (B, in_channels, D, H, W) with D, H, W divisible
    by `divisor`.
    """
    if x.ndim != 5:
        raise ValueError(f"{who}: expected a (B, C, D, H, W) tensor, got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{who}: the input has {x.shape[1]} channels but the encoder was built with "
            f"in_channels={in_channels}; rebuild it with in_channels={x.shape[1]} or fix the data"
        )
    grid_of(x.shape[-3:], divisor, who)


def grid_of(spatial: Sequence[int], divisor: int, who: str) -> tuple[int, int, int]:
    """The grid of `divisor`-voxel cells over a (D, H, W) shape; ValueError if it
    does not divide.
    """
    shape = tuple(int(s) for s in spatial)
    if len(shape) != 3 or any(s % divisor or s == 0 for s in shape):
        fix = (
            tuple(max(divisor, round(s / divisor) * divisor) for s in shape)
            if len(shape) == 3
            else None
        )
        raise ValueError(
            f"{who}: spatial shape {shape} must be 3 sizes divisible by {divisor}; "
            f"crop or pad to a multiple of {divisor}, e.g. {fix}"
        )
    d, h, w = (s // divisor for s in shape)
    return d, h, w


def check_mask(mask: Tensor, batch: int, grid: tuple[int, int, int], who: str) -> None:
    """Raise ValueError unless `mask` is a bool (B, d, h, w) tensor on the masking grid."""
    if mask.dtype != torch.bool:
        raise ValueError(f"{who}: the mask must be a bool tensor (True = masked), got {mask.dtype}")
    if tuple(mask.shape) != (batch, *grid):
        raise ValueError(
            f"{who}: the mask has shape {tuple(mask.shape)} but this input needs (B, d, h, w) = "
            f"{(batch, *grid)} (masking grid = input size / mask cell); "
            "use encoder.mask_grid(x.shape)"
        )


def jsonable(value: Any) -> Any:
    """Tuples become lists (recursively), so that a build spec survives a JSON round
    trip unchanged.
    """
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def register_presets(cls: Callable[..., Any], presets: Mapping[str, Mapping[str, Any]]) -> None:
    """Register one builder per preset: `name(**overrides)` = `cls(**preset, **overrides)`.

    Unknown overrides raise ConfigError with a did-you-mean hint (as `BACKBONES.build` does for
    classes). The built model's `.config` is the full resolved spec of `cls`, so it rebuilds even
    if a preset's defaults change later.
    """
    for name, preset in presets.items():

        def build(_preset: Mapping[str, Any] = preset, _name: str = name, **overrides: Any) -> Any:
            check_kwargs(cls, overrides, f"backbone '{_name}'")
            return cls(**{**_preset, **overrides})

        build.__name__ = name
        build.base = cls  # type: ignore[attr-defined]  # the class a preset builds (for contract tests)
        build.preset = dict(preset)  # type: ignore[attr-defined]
        build.__doc__ = (
            f"{cls.__name__} preset '{name}': {dict(preset)}; keyword overrides allowed."
        )
        BACKBONES.register(name)(build)


def check_choice(field: str, value: int, low: int, high: int) -> None:
    """ConfigError unless low <= value <= high."""
    if not low <= int(value) <= high:
        raise ConfigError(f"{field}={value} is out of range; choose {low}..{high}")
