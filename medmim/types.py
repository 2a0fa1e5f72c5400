"""The contracts between parts (DESIGN.md "Contracts").

Backbone: `forward_features(x, mask=None) -> Features`, where `x` is (B, C, D, H, W) and `mask`
is a bool tensor on the masking grid (B, d, h, w), True = masked. Keys (present when the
backbone has them):

- `patch`      (B, N, C') tokens on the masking grid, N = d*h*w, normalised.
- `cls`        (B, C') the semantic-attention or ViT [CLS] embedding, normalised.
- `attn`       (B, N) [CLS]->patch attention averaged over heads (SMART eq. 1); rows sum to <= 1.
- `pooled`     (B, C') global average of the pooled-token source (GITD/ITD).
- `bottleneck` (B, C'', d', h', w') the deepest map (MIP/AMIP head input).
- `features`   list of multi-scale maps (B, C_i, D_i, H_i, W_i), finest first, for decoders.
- `grid`       (d, h, w) of the masking grid.

Masker: returns `MaskOutput`. Method: `forward(batch, step) -> StepOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from torch import Tensor


class Features(TypedDict, total=False):
    """What every backbone's `forward_features` returns (see the module docstring)."""

    patch: Tensor
    cls: Tensor
    attn: Tensor
    pooled: Tensor
    bottleneck: Tensor
    features: list[Tensor]
    grid: tuple[int, int, int]


@dataclass
class MaskOutput:
    """A mask on the masking grid.

    Attributes:
        mask: (B, d, h, w) bool, True = masked.
        hints: (B, d, h, w) bool, tokens that would have been masked but are revealed as hints
            (attention-guided maskers only), else None.
        ratio: the masking ratio that was asked for (per batch), for logging.
    """

    mask: Tensor
    hints: Tensor | None = None
    ratio: float | None = None


@dataclass
class StepOutput:
    """What a method's `forward(batch, step)` returns to the loop.

    Attributes:
        loss: the scalar to minimise.
        logs: named scalars (`loss/amip`, `loss/ampd`, `mask/ratio`, ...), floats or 0-d tensors.
        visuals: optional volumes for the progress PNG, each (D, H, W) at input resolution for the
            first sample of view 1: `view`, `mask`, `recon`, `attn`.
    """

    loss: Tensor
    logs: dict[str, Any] = field(default_factory=dict)
    visuals: dict[str, Tensor] | None = None


@dataclass
class TrainContext:
    """Facts about the run that a method's schedules need (e.g. a temperature warm-up in epochs).

    Attributes:
        steps_per_epoch: optimizer steps in one epoch.
        total_steps: optimizer steps in the whole run.
        in_channels: image channels.
        crop_size: (D, H, W) of the training views.
        freeze_last_layer_steps: the first steps during which the projection heads' last
            layers are frozen (`optim.freeze_last_layer_epochs`;
            `PretrainMethod.frozen_parameters`).
    """

    steps_per_epoch: int = 1
    total_steps: int = 1
    in_channels: int = 1
    crop_size: tuple[int, int, int] = (96, 96, 96)
    freeze_last_layer_steps: int = 0
