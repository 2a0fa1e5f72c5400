"""Tiny backbones, heads and batches shared by the method tests (32^3 volumes, widths 12-24)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from medmim.methods.base import PretrainMethod
from medmim.registry import METHODS
from medmim.types import TrainContext

#: Swin: inputs divisible by 32; at 32^3 the stage-3 masking grid is 2^3 (stage 2: 4^3).
TINY_SWIN: dict[str, Any] = {"name": "swin", "embed_dim": 12, "depths": [1, 1, 1, 1], "num_heads": [3, 3, 3, 3]}
#: ViT with 8^3 patches: a 4^3 grid at 32^3.
TINY_VIT: dict[str, Any] = {"name": "vit", "embed_dim": 24, "depth": 2, "num_heads": 2, "patch_size": 8, "pos_grid": [4, 4, 4]}
TINY_HEAD: dict[str, Any] = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16}
#: the backbone each method is tested on (a new method must be added here).
BACKBONE_OF: dict[str, dict[str, Any]] = {
    "smart": TINY_SWIN,
    "smit": TINY_SWIN,
    "ibot": TINY_VIT,
    "attmask": TINY_VIT,
    "mst": TINY_VIT,
    "smart_vit": TINY_VIT,
}
CONTEXT = TrainContext(steps_per_epoch=10, total_steps=100, in_channels=1, crop_size=(32, 32, 32))


def build(name: str, backbone: dict[str, Any] | None = None, **options: Any) -> PretrainMethod:
    """Method `name` on its tiny backbone with a tiny head (`options` override)."""
    spec = {"name": name, **TINY_HEAD, **options}
    return METHODS.build(spec, backbone=dict(backbone or BACKBONE_OF[name]), context=CONTEXT)


def make_batch(batch_size: int = 1, size: int = 32, seed: int = 0) -> dict[str, Any]:
    """Two views of smooth random volumes in [0, 1] (so a linear decoder can fit them)."""
    g = torch.Generator().manual_seed(seed)
    views = []
    for _ in range(2):
        x = torch.rand(batch_size, 1, size // 8, size // 8, size // 8, generator=g)
        views.append(torch.nn.functional.interpolate(x, size=(size,) * 3, mode="trilinear"))
    return {"views": views, "index": torch.arange(batch_size)}


class Recorder:
    """Wraps a callable (a masker or a backbone) and keeps its last arguments and result."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.args, self.kwargs, self.out = fn, (), {}, None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fn, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.args, self.kwargs = args, kwargs
        self.out = self.fn(*args, **kwargs)
        return self.out


def top_k(scores: Tensor, k: int, largest: bool = True) -> Tensor:
    """(B, N) bool: the k largest (or smallest) entries of each row."""
    idx = scores.topk(k, dim=1, largest=largest).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, idx, True)
