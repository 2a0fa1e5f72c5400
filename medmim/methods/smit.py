"""SMIT: self-distilled masked image transformer (Jiang et al., MICCAI 2022, section 2).

One step, both views as one batch:

1. random masks for the student (eq. 1's m): exactly ceil(0.7 N) random cells of 16^3 voxels
   per sample and per view (the public code's MaskGenerator), replaced by the learned mask token
   right after the patch embedding;
2. the teacher (EMA, no gradient) sees the UNMASKED views;
3. L = l_mip MIP + l_mpd MPD + l_itd ITD (1, 0.1, 0.1; "lambda_MPD = 0.1, lambda_ITD = 0.1"):
   - MIP (eq. 1): masked L1 over the masked voxels of the linear MIP head's reconstruction of
     the bottleneck, both views (symmetrised);
   - MPD (eq. 2): CE between the teacher's tokens of the unmasked view and the student's tokens
     of the same masked view, over the masked tokens, averaged over both views;
   - ITD (eq. 4): CE between the global tokens of the two views, crossed.

Global token: the paper's "[CLS]" on a Swin without one is, in the public code, the average of
the normalised stage-3 tokens (`pool_stage=3`, default here since the paper does not say);
`pool_stage=4` pools after stage 4 as SMART's GITD. Heads: two separate DINO heads for the global
and the patch tokens (the code's default `ibot_head_share=0`). tau_s 0.1, tau_t 0.04 -> 0.07 over
the first 30 epochs (paper), centre momentum 0.9 (code).

The public code's bugs are not reproduced (see medmim.models.ema): the teacher starts as a copy
of the student, the EMA momentum follows its cosine 0.996 -> 1, the teacher has no drop-path.
The backbone is built without the SMART semantic-attention block (`sa_depth=0`).

Options shared with SMART and iBOT (`SelfDistillation`, off by default): Sinkhorn-Knopp teacher
targets, a KoLeo term `loss/koleo` (on the pooled token, SMIT's Swin having no [CLS]), and DINO
multi-crop: `batch["local_views"]` crops run through the student unmasked and add their ITD token
as extra student views; MPD and MIP stay on the two global views.
"""

from __future__ import annotations

from typing import Any, ClassVar

from medmim.errors import ConfigError
from medmim.losses.masked_l1 import MaskedL1Loss
from medmim.masking.random import RandomMasker
from medmim.methods.distillation import (
    HeadSpec,
    LossTerms,
    SelfDistillation,
    backbone_with,
    masked_reconstruction,
    mip_heads,
    views_of,
    visuals,
)
from medmim.registry import BACKBONES, METHODS
from medmim.types import StepOutput, TrainContext


@METHODS.register("smit")
class SMIT(SelfDistillation):
    """SMIT on a Swin (see the module docstring).

    Args:
        backbone: BACKBONES spec (a Swin, e.g. `{"name": "swin_smit"}`).
        context: run facts.
        mask_ratio: fraction of cells masked (0.7).
        rounding: "ceil" (code: ceil(0.7 * 216) = 152), "floor" or "round".
        pool_stage: Swin stage pooled into the ITD token (3, code; 4 = after stage 4).
        l_mip, l_mpd, l_itd: loss weights (1, 0.1, 0.1); 0 turns a loss off.
        **distill: projection heads (8192, 2048, 256), temperatures (tau_s 0.1, tau_t 0.04 ->
            0.07 over 30 epochs), centre momentum 0.9 and EMA momentum (cosine 0.996 -> 1):
            see `medmim.methods.distillation.SelfDistillation`.
    """

    method_name = "smit"
    loss_terms: ClassVar[dict[str, str]] = {
        "mip": "reconstruction",
        "mpd": "distillation",
        "itd": "distillation",
        "koleo": "regularizer",
    }

    def __init__(
        self,
        backbone: dict[str, Any],
        context: TrainContext | None = None,
        mask_ratio: float = 0.7,
        rounding: str = "ceil",
        pool_stage: int = 3,
        l_mip: float = 1.0,
        l_mpd: float = 0.1,
        l_itd: float = 0.1,
        **distill: Any,
    ) -> None:
        if backbone.get("sa_depth", 0) != 0:
            raise ConfigError(
                "SMIT has no semantic-attention block; remove "
                f"model.sa_depth={backbone['sa_depth']}"
            )
        switches = {"pool_stage": ("pool_stage", pool_stage), "sa_depth": ("sa_depth", 0)}
        spec = backbone_with(
            backbone, self.method_name, switches, "SMIT needs a Swin backbone (e.g. swin_smit)."
        )
        net = BACKBONES.build(spec)
        dims = net.feature_dims
        heads = {
            "head_patch": HeadSpec(dims["patch"], share_last_layer=True),
            "head_global": HeadSpec(dims["pooled"], share_last_layer=True),
        }
        super().__init__(net, heads, mip_heads(net), ("patch", "global"), context, **distill)
        self.weights = {"mip": float(l_mip), "mpd": float(l_mpd), "itd": float(l_itd)}
        if not any(self.weights.values()):
            raise ConfigError("method 'smit': every loss weight (l_mip, l_mpd, l_itd) is 0")
        self.masker = RandomMasker(mask_ratio, rounding=rounding)
        self.l1 = MaskedL1Loss()

    def forward(self, batch: dict[str, Any], step: int) -> StepOutput:
        """Random masks -> student; unmasked views -> teacher; MIP + MPD + ITD."""
        x, views = views_of(batch)
        grid = self.encoder.mask_grid(x.shape)
        mask = self.masker(grid, len(x), device=x.device).mask
        t = self.teacher_features(x)
        s = self.student["backbone"](x, mask)
        local = self.local_features(batch, len(x) // views)  # multi-crop: {} without local views

        w, terms, recon = self.weights, LossTerms(), None
        if w["mip"]:
            mip, recon = masked_reconstruction(
                self.student["mip"], self.l1, s["bottleneck"], x, mask
            )
            terms.add("mip", w["mip"], mip)
        terms.add(
            "mpd",
            w["mpd"],
            lambda: self.patch_distillation(
                "patch", "head_patch", s["patch"], t["patch"], mask, views, step
            ),
        )
        terms.add(
            "itd",
            w["itd"],
            lambda: self.global_distillation(
                "global", "head_global", s["pooled"], t["pooled"], views, step, local.get("pooled")
            ),
        )
        terms.add("koleo", self.koleo_weight, lambda: self.koleo(s, views))
        logs = {**terms.logs, **self.log_common(step, mask, None)}
        return StepOutput(terms.total, logs, visuals(x, mask, recon))
