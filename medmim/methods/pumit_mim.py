"""PUMIT stage 2: masked image modeling with soft visual tokens (Luo et al. 2024, eq. 6).

A frozen tokenizer (stage 1, loaded from `tokenizer=PATH`) turns the image into a grid of soft
tokens q_i = softmax(l_i). The universal ViT sees the same image with 55% of its patches replaced
by a learnable mask token (uniform random cells per sample, as many as the code masks: it keeps
int(N (1 - 0.55)) visible, which float rounding makes 224 of 500, so 276 are masked, one more than
the paper's 55% = 275; `rounding="floor_visible"`, and `"ceil"` gives the paper's count); an
MLP with one hidden layer (Linear C->C, GELU, Linear C->K) maps the final hidden states to logits
over the K codes, and the loss is the cross-entropy against q on the
masked positions only (`medmim.losses.soft_token`). All blocks see the mask tokens (BEiT/EVA
style; the code's ViT-B setting).

Batches: `views[0]` of the engine's batch, in [0, 1]. The ViT gets it as is (the data recipe's
intensities, so the exported encoder sees downstream what it saw here; the code normalised RGB
with ImageNet statistics instead), the tokenizer gets `2x - 1` as in its training. An optional
`"spacing"` (B, 3) entry, (s_D, s_H, s_W) in mm, sets the degree of anisotropy for both (one per
batch); without it `spacing` below is used (None = isotropic, or 2D for one-slice inputs).

The tokenizer (frozen, always in eval mode) is part of this method's state_dict, so a resumed run
uses exactly the targets it started with, even if the file was retrained since (the file must
still exist to build the method); only the ViT is the exported `encoder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn

from medmim.errors import ConfigError
from medmim.losses.soft_token import SoftTokenCrossEntropyLoss
from medmim.masking.utils import mask_to_voxels
from medmim.methods.base import PretrainMethod
from medmim.methods.pumit_tokenizer import batch_spacing
from medmim.models.tokenizer import load_tokenizer, to_tokenizer_range
from medmim.models.universal_vit import UniversalViT
from medmim.registry import BACKBONES, MASKERS, METHODS
from medmim.types import StepOutput, TrainContext

#: the paper's masking, 55% uniformly random patches, counted as the code does (N - int(0.45 N)
#: in floats: 276 of 500; "ceil" gives the paper's 275).
DEFAULT_MASKER = {"name": "random", "ratio": 0.55, "rounding": "floor_visible"}


class MIMHead(nn.Sequential):
    """MLP with one hidden layer: Linear(C, H) -> GELU -> Linear(H, K)."""

    def __init__(self, dim: int, hidden: int, codebook_size: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, codebook_size))


@METHODS.register("pumit_mim")
class PUMITMIM(PretrainMethod):
    """PUMIT MIM: universal ViT + mask token + MLP head, soft-token CE on masked patches.

    Args:
        backbone: BACKBONES spec of the universal ViT (e.g. `{"name": "uvit_b16"}`).
        context: run facts.
        tokenizer: path to the trained tokenizer (checkpoint, run directory or export directory).
        masker: MASKERS spec (default 55% random cells).
        head_hidden: hidden width of the MLP head (default: the ViT width).
        spacing: default (s_D, s_H, s_W) when a batch has no "spacing" entry.
    """

    method_name = "pumit_mim"
    loss_terms: ClassVar[dict[str, str]] = {"mim": "prediction"}

    def __init__(
        self,
        backbone: dict[str, Any],
        context: TrainContext | None = None,
        tokenizer: str = "",
        masker: dict[str, Any] | None = None,
        head_hidden: int | None = None,
        spacing: Sequence[float] | None = None,
    ) -> None:
        super().__init__(context)
        self.vit: UniversalViT = BACKBONES.build(dict(backbone))
        if not isinstance(self.vit, UniversalViT):
            raise ConfigError(
                "pumit_mim needs a universal ViT backbone (uvit_b16, uvit_demo), got "
                f"'{backbone.get('name')}'"
            )
        self.tokenizer = load_tokenizer(tokenizer)
        if (
            self.tokenizer.stride != self.vit.patch_size
            or self.tokenizer.in_channels != self.vit.in_channels
        ):
            raise ConfigError(
                f"pumit_mim: tokenizer '{tokenizer}' has stride {self.tokenizer.stride} and "
                f"{self.tokenizer.in_channels} channels, the ViT patch {self.vit.patch_size} and "
                f"{self.vit.in_channels} channels; their token grids must coincide"
            )
        self.masker = MASKERS.build(dict(masker or DEFAULT_MASKER))
        width = self.vit.embed_dim
        self.head = MIMHead(width, head_hidden or width, self.tokenizer.codebook_size)
        self.loss = SoftTokenCrossEntropyLoss()
        self.spacing = list(spacing) if spacing is not None else None

    @property
    def encoder(self) -> nn.Module:
        """The universal ViT."""
        return self.vit

    def train(self, mode: bool = True) -> PUMITMIM:
        """Train mode for the ViT and head; the tokenizer always stays in eval mode."""
        super().train(mode)
        self.tokenizer.eval()
        return self

    def forward(self, batch: dict[str, Any], step: int) -> StepOutput:
        """Mask, predict the masked soft tokens, score them with eq. 6."""
        x = batch["views"][0]
        spacing = batch_spacing(batch, self.spacing)
        grid = self.vit.mask_grid(x.shape, spacing)
        targets = self.tokenizer.token_probs(to_tokenizer_range(x), spacing)
        if targets.shape[1] != grid[0] * grid[1] * grid[2]:
            raise ValueError(
                f"pumit_mim: tokenizer grid has {targets.shape[1]} tokens, the ViT grid {grid}"
            )
        mask = self.masker(grid, x.shape[0], device=x.device).mask
        feats = self.vit.forward_features(x, mask=mask, spacing=spacing, return_features=False)
        flat = mask.flatten(1)
        out = self.loss(self.head(feats["patch"][flat]), targets[flat])
        logs = {
            "loss/mim": out.loss.detach(),
            "mim/kl": out.kl,
            "mim/accuracy": out.accuracy,
            "mim/target_entropy": out.target_entropy,
            "mask/ratio": flat.float().mean().detach(),
        }
        visuals = {
            "view": x[0, 0].detach(),
            "mask": mask_to_voxels(mask[:1].float(), x.shape[-3:])[0, 0],
            "attn": mask_to_voxels(feats["attn"][:1].reshape(1, *grid).float(), x.shape[-3:])[0, 0],
        }
        return StepOutput(loss=out.loss, logs=logs, visuals=visuals)
