"""Tiny backbones, heads and batches shared by the method tests (32^3 volumes, widths 12-24)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from medmim.methods.base import PretrainMethod
from medmim.registry import METHODS
from medmim.types import TrainContext

#: Swin: inputs divisible by 32; at 32^3 the stage-3 masking grid is 2^3 (stage 2: 4^3).
TINY_SWIN: dict[str, Any] = {
    "name": "swin",
    "embed_dim": 12,
    "depths": [1, 1, 1, 1],
    "num_heads": [3, 3, 3, 3],
}
#: ViT with 8^3 patches: a 4^3 grid at 32^3.
TINY_VIT: dict[str, Any] = {
    "name": "vit",
    "embed_dim": 24,
    "depth": 2,
    "num_heads": 2,
    "patch_size": 8,
    "pos_grid": [4, 4, 4],
}
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

#: PUMIT: a tiny tokenizer (stage 1) and universal ViT (stage 2); 16 x 32 x 32 inputs,
#: 1 x 2 x 2 tokens.
PUMIT_TOKENIZER: dict[str, Any] = {
    "name": "soft_vq_tokenizer",
    "channels": [8, 8, 16],
    "codebook_size": 32,
    "embed_dim": 8,
}
PUMIT_TOKENIZER_OPTS: dict[str, Any] = {
    "perceptual_weight": 0.0,
    "disc_channels": [8, 8],
    "disc_groups": 4,
    "disc_warmup_steps": 2,
}
PUMIT_VIT: dict[str, Any] = {
    "name": "universal_vit",
    "embed_dim": 24,
    "depth": 2,
    "num_heads": 2,
    "pos_embed_shape": [1, 2, 2],
}


def write_pumit_tokenizer(path: Any) -> str:
    """A stage-1 checkpoint of `PUMIT_TOKENIZER` at `path` (sharpened logits, as a trained one)."""
    from medmim.models.tokenizer import TOKENIZERS

    tok = TOKENIZERS.build(dict(PUMIT_TOKENIZER))
    with torch.no_grad():
        tok.to_logits.weight.mul_(30.0)
    torch.save({"encoder": tok.state_dict(), "encoder_config": tok.config}, path)
    return str(path)


def build_pumit(name: str, tokenizer: str) -> PretrainMethod:
    """`pumit_tokenizer` or `pumit_mim` (on the stage-1 checkpoint `tokenizer`), tiny."""
    if name == "pumit_tokenizer":
        return METHODS.build(
            {"name": name, **PUMIT_TOKENIZER_OPTS},
            backbone=dict(PUMIT_TOKENIZER),
            context=TrainContext(total_steps=40),
        )
    return METHODS.build(
        {"name": name, "tokenizer": tokenizer}, backbone=dict(PUMIT_VIT), context=CONTEXT
    )


def make_pumit_batch(batch_size: int = 2) -> dict[str, Any]:
    """Two views (one flipped) of 16 x 32 x 32 balls in [0, 1]."""
    axes = [torch.linspace(-1, 1, n) for n in (16, 32, 32)]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    radius = (z**2 + y**2 + x**2).sqrt()
    vol = torch.stack([torch.sigmoid(8 * (0.6 + 0.1 * i - radius)) for i in range(batch_size)])[
        :, None
    ]
    return {"views": [vol, vol.flip(-1)], "index": torch.arange(batch_size)}


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
