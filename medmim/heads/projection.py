"""The DINO/iBOT projection head h^[CLS], h^[g], h^Patch (SMIT eq. 3, SMART eqs. 2-5).

tokens (..., C) -> MLP C -> 2048 -> 2048 -> 256 (GELU, no BatchNorm) -> L2-normalise
-> weight-normed Linear(256 -> K = 8192, no bias) -> logits (..., K).

The softmax with temperature (eq. 3) and the centring live in `medmim.losses.distill`.

Global tokens (the SA [CLS], the pooled token) and patch tokens share the MLP and go through
*separate* last layers, `last_layer` and `last_layer_patch` (as the public SMART code's student
does); `share_last_layer=True` uses `last_layer` for both (iBOT's shared head). The public SMIT
code instead builds two whole heads (separate MLPs) by default; build two `ProjectionHead`s for
that. `last_layer_parameters()` lists the last layers' parameters, which the self-distillation
methods freeze during the first epoch (`SelfDistillation.frozen_parameters`).

The last layer uses `torch.nn.utils.parametrizations.weight_norm`: weight = g * v / ||v||, with
g stored as `last_layer.parametrizations.weight.original0` (K, 1) and v as `...original1`
(K, 256). With `norm_last_layer=True` (DINO's default) g is filled with 1 and frozen
(`requires_grad=False`), so each output unit is a unit-norm prototype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from medmim.errors import ConfigError
from medmim.registry import HEADS


def make_last_layer(bottleneck_dim: int, out_dim: int, norm_last_layer: bool = True) -> nn.Linear:
    """A weight-normed Linear(bottleneck_dim -> out_dim, no bias) with g = 1 (frozen if asked).

    Args:
        bottleneck_dim: input width (256).
        out_dim: K prototypes (8192).
        norm_last_layer: freeze the magnitude g at 1 (DINO/iBOT/SMART default).

    Returns:
        The parametrised nn.Linear; `layer.weight` is recomputed from g and v on access.
    """
    layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
    magnitude = layer.parametrizations.weight.original0
    with torch.no_grad():
        magnitude.fill_(1.0)
    magnitude.requires_grad_(not norm_last_layer)
    return layer


@HEADS.register("projection")
class ProjectionHead(nn.Module):
    """DINO/iBOT projection head with separate last layers for global and patch tokens.

    Args:
        in_dim: token width C of the backbone.
        out_dim: K, number of prototypes (8192).
        hidden_dim: MLP hidden width (2048).
        bottleneck_dim: width before the last layer (256).
        num_layers: MLP layers (3: in -> hidden -> hidden -> bottleneck; 1: in -> bottleneck).
        norm_last_layer: freeze the last layers' weight-norm magnitude g at 1.
        share_last_layer: one last layer for global and patch tokens (iBOT's shared head).

    Example:
        >>> head = ProjectionHead(in_dim=384, out_dim=8192)
        >>> head(torch.randn(4, 384)).shape                       # global tokens
        torch.Size([4, 8192])
        >>> head(torch.randn(4, 216, 384), tokens="patch").shape  # patch tokens
        torch.Size([4, 216, 8192])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 8192,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        norm_last_layer: bool = True,
        share_last_layer: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"head option 'num_layers' must be >= 1, got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.mlp.apply(_init_linear)
        self.last_layer = make_last_layer(bottleneck_dim, out_dim, norm_last_layer)
        self.last_layer_patch = (
            None if share_last_layer else make_last_layer(bottleneck_dim, out_dim, norm_last_layer)
        )
        self.out_dim = out_dim

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The parameters of `last_layer` (and `last_layer_patch`, when separate)."""
        layers = (
            [self.last_layer]
            if self.last_layer_patch is None
            else [self.last_layer, self.last_layer_patch]
        )
        return [p for layer in layers for p in layer.parameters()]

    def embed(self, x: Tensor) -> Tensor:
        """MLP + L2 normalisation: (..., C) -> (..., bottleneck_dim), unit norm."""
        return F.normalize(self.mlp(x), dim=-1, p=2)

    def forward(self, x: Tensor, tokens: str = "global") -> Tensor:
        """Project tokens to K logits.

        Args:
            x: (B, C) or (B, T, C) global tokens, or (B, N, C) patch tokens.
            tokens: "global" (through `last_layer`) or "patch" (through `last_layer_patch`, or
                `last_layer` when shared).

        Returns:
            (..., K) logits (before temperature and softmax).
        """
        if tokens == "global" or (tokens == "patch" and self.last_layer_patch is None):
            return self.last_layer(self.embed(x))
        if tokens == "patch":
            return self.last_layer_patch(self.embed(x))
        raise ValueError(f"tokens must be 'global' or 'patch', got '{tokens}'")


def _init_linear(module: nn.Module) -> None:
    """DINO's init: truncated normal (std 0.02) weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
