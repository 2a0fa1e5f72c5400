"""PUMIT stage 1: the universal visual tokenizer (Luo et al. 2024, eq. 5).

    L_G = L1(x, x_hat) + w_p LPIPS(x, x_hat) + w_q KL(p_bar || U) + w_e mean_i H(p_i)
          + [L_D <= threshold] lambda_gan (-mean D(x_hat))

The tokenizer (`medmim.models.tokenizer`, built from `cfg.model`, a `TOKENIZERS` spec) encodes
the image into soft tokens and decodes it; the prior regularizer keeps codebook usage spread
and tokens sharp; the hinge patch discriminator trains with its own optimizer inside this method
(see `medmim.losses.gan.HingeGANLoss` for why and how: the engine's optimizer never sees it, its
update happens in `on_optimizer_step`, its optimizer state is in this method's state_dict).

Batches: the engine's `{"views": [...], "index": ...}`; only `views[0]` is used, in [0, 1] (mapped
to [-1, 1]). An optional `"spacing"` (B, 3) entry, (s_D, s_H, s_W) in mm, sets the degree of
anisotropy (one per batch, see `medmim.data.pumit`); without it `spacing` below is used (None =
isotropic volumes, or 2D for one-slice inputs). `encoder` is the tokenizer, so `medmim export`
writes it and `pumit_mim` loads it (`method.tokenizer=runs/<name>/checkpoints/last.ckpt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medmim.losses.gan import HingeGANLoss
from medmim.losses.perceptual import LPIPSLoss
from medmim.losses.prior import PriorRegularizationLoss
from medmim.methods.base import PretrainMethod
from medmim.models.discriminator import PatchDiscriminator
from medmim.models.tokenizer import TOKENIZERS, SoftVQTokenizer, to_tokenizer_range
from medmim.registry import METHODS
from medmim.schedules import warmup_cosine
from medmim.types import StepOutput, TrainContext


def batch_spacing(
    batch: dict[str, Any], default: Sequence[float] | None
) -> Tensor | Sequence[float] | None:
    """The batch's `spacing` (B, 3) if present, else the method's default (or None)."""
    spacing = batch.get("spacing")
    return spacing if spacing is not None else default


@METHODS.register("pumit_tokenizer")
class PUMITTokenizer(PretrainMethod):
    """PUMIT tokenizer training: L1 + prior regularization + gated hinge GAN (+ optional LPIPS).

    Args:
        backbone: TOKENIZERS build spec, e.g. `{"name": "pumit_tokenizer"}`.
        context: run facts (total steps for the discriminator's schedule).
        prior_weight: w_q (README 0.03).
        entropy_weight: w_e (README 1.0).
        perceptual_weight: w_p (paper/code 1.0; needs `perceptual_weights`, else set 0).
        perceptual_weights: path to VGG16 weights (torchvision keys); nothing is downloaded.
        perceptual_lin_weights: optional path to LPIPS linear heads.
        gan_weight: lambda_gan (3e-3); 0 removes the discriminator.
        gan_threshold: the gate's threshold on the discriminator loss (0.025).
        gan_momentum: the gate's EMA momentum (0.9).
        disc_channels: discriminator widths (128, 256, 512).
        disc_groups: discriminator GroupNorm groups (16).
        disc_lr: discriminator peak learning rate (1e-3), cosine to `disc_min_lr`.
        disc_min_lr: final discriminator learning rate (1e-6).
        disc_warmup_steps: linear warm-up of the discriminator learning rate (paper run 25000).
        disc_weight_decay: discriminator AdamW weight decay (0.05).
        spacing: default (s_D, s_H, s_W) when a batch has no "spacing" entry.
    """

    method_name = "pumit_tokenizer"
    loss_terms: ClassVar[dict[str, str]] = {
        "rec": "reconstruction",
        "perceptual": "reconstruction",
        "prior": "regularizer",
        "entropy": "regularizer",
        "gan_g": "adversarial",
        "disc": "adversarial",
    }

    def __init__(
        self,
        backbone: dict[str, Any],
        context: TrainContext | None = None,
        prior_weight: float = 0.03,
        entropy_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        perceptual_weights: str = "",
        perceptual_lin_weights: str = "",
        gan_weight: float = 3e-3,
        gan_threshold: float = 0.025,
        gan_momentum: float = 0.9,
        disc_channels: Sequence[int] = (128, 256, 512),
        disc_groups: int = 16,
        disc_lr: float = 1e-3,
        disc_min_lr: float = 1e-6,
        disc_warmup_steps: int = 25000,
        disc_weight_decay: float = 0.05,
        spacing: Sequence[float] | None = None,
    ) -> None:
        super().__init__(context)
        self.tokenizer: SoftVQTokenizer = TOKENIZERS.build(dict(backbone))
        self.prior = PriorRegularizationLoss(prior_weight, entropy_weight)
        self.perceptual_weight = float(perceptual_weight)
        self.perceptual = (
            LPIPSLoss(perceptual_weights, perceptual_lin_weights)
            if self.perceptual_weight > 0
            else None
        )
        self.gan = None
        if gan_weight > 0:
            disc = PatchDiscriminator(
                self.tokenizer.in_channels, disc_channels, num_groups=disc_groups
            )
            self.gan = HingeGANLoss(
                disc, gan_weight, gan_threshold, gan_momentum, weight_decay=disc_weight_decay
            )
        self.disc_lr, self.disc_min_lr = disc_lr, disc_min_lr
        self.disc_warmup_steps = disc_warmup_steps
        # The discriminator's AdamW moments are equal on every rank (its gradients are all-reduced):
        # keep DDP from broadcasting them at every forward (torch's DDP ignore-list attribute).
        self._ddp_params_and_buffers_to_ignore = [
            name for name, _ in self.named_buffers() if name.startswith("gan.optimizer.")
        ]
        self.spacing = list(spacing) if spacing is not None else None
        self._disc_step: int | None = None  # the step whose discriminator gradient is buffered

    @property
    def encoder(self) -> nn.Module:
        """The tokenizer (what `medmim export` writes and `pumit_mim` loads)."""
        return self.tokenizer

    def forward(self, batch: dict[str, Any], step: int) -> StepOutput:
        """One generator step; also accumulates the discriminator's gradient."""
        x = to_tokenizer_range(batch["views"][0])
        spacing = batch_spacing(batch, self.spacing)
        aniso = self.tokenizer.anisotropy(x.shape, spacing)
        out = self.tokenizer(x, spacing)
        rec = F.l1_loss(out.recon.float(), x.float())
        reg = self.prior(out.logits)
        loss = rec + reg.loss
        logs: dict[str, Any] = {
            "loss/rec": rec.detach(),
            "loss/prior": reg.prior.detach(),
            "loss/entropy": reg.entropy.detach(),
            "codebook/perplexity": reg.perplexity,
            "codebook/usage": self.codebook_usage(out.logits),
            "data/da": float(aniso.da),
        }
        if self.perceptual is not None:
            perceptual = self.perceptual(x, out.recon)
            loss = loss + self.perceptual_weight * perceptual
            logs["loss/perceptual"] = perceptual.detach()
        if self.gan is not None:
            if self._disc_step != step:  # a new step; a leftover buffer belongs to a skipped one
                self.gan.discard()
                self._disc_step = step
            g_loss, weight = self.gan.generator_loss(out.recon, aniso)
            loss = loss + weight * g_loss
            logs["loss/gan_g"] = g_loss.detach()
            logs["loss/disc"] = self.gan.accumulate(x, out.recon, aniso)
            logs["gan/active"] = float(weight > 0)
            logs["gan/disc_ema"] = float(self.gan.gate.ema)
        visuals = {
            "view": batch["views"][0][0, 0].detach(),
            "recon": ((out.recon[0, 0].detach().float() + 1) / 2).clamp(0, 1),
        }
        return StepOutput(loss=loss, logs=logs, visuals=visuals)

    @torch.no_grad()
    def codebook_usage(self, logits: Tensor) -> Tensor:
        """Fraction of codes that are the argmax of at least one token in the batch (0-d, on
        the logits' device: read at logging steps only).
        """
        codes = logits.argmax(dim=-1).flatten()
        return torch.bincount(codes, minlength=logits.shape[-1]).gt(0).float().mean()

    def on_optimizer_step(self, step: int) -> None:
        """Step the discriminator with its accumulated gradient and update the GAN gate."""
        if self.gan is not None:
            total = max(self.context.total_steps, 1)
            lr = warmup_cosine(
                step, total, self.disc_lr, self.disc_min_lr, min(self.disc_warmup_steps, total)
            )
            self.gan.step(lr)
