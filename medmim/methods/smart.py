"""SMART: semantic-attention guided masked image modeling with a noisy teacher (Jiang et al. 2024).

One step (sections 3.2-3.4, Fig. 2), both views as one batch:

1. noisy teacher (sec. 3.4): in each view a random `teacher_drop_ratio` (rho = 0.7) of the
   masking-grid cells (16^3 voxels) is replaced by the TEACHER's own (EMA) mask token; the
   teacher (no gradient) returns SATT (eq. 1), its [CLS], pooled and patch tokens;
2. attention-guided masks for the student (sec. 3.2): the top ceil(r N) SATT tokens of the
   same view are masked (r = 0.7) and the hints (s = 0.1) revealed (`hints`: "paper" keeps the
   top s N, "code" reveals a random int(s r N) of the top int(s N) as the public code);
3. student forward on both masked views; the loss (eq. 2-6, sec. 3.3)

       L = l_amip AMIP + l_ampd AMPD + l_aitd AITD + l_gitd GITD   (1, 0.1, 0.1, 0.1; sec. 4.3)

   - AMIP (eq. 6): masked L1 over the masked voxels of the MIP head's reconstruction of the
     bottleneck (1x1x1 conv + pixel shuffle), both views;
   - AMPD (eq. 5): CE between teacher and student patch tokens (stage `model.sa_stage`,
     before the SA block) of the SAME view, over the student's masked tokens, averaged over both
     views;
   - AITD (eq. 2): CE between the SA [CLS] tokens of the two views, crossed (teacher u vs
     student v and v vs u); GITD (eq. 4): the same for the pooled token.
   Separate centres for the SA [CLS], the pooled token and the patch tokens.

Options shared with SMIT and iBOT (`SelfDistillation`, off by default): Sinkhorn-Knopp teacher
targets, a KoLeo term `loss/koleo`, and DINO multi-crop: `batch["local_views"]` crops run through
the student unmasked and add their SA [CLS] to AITD and their pooled token to GITD as extra student
views; AMPD and AMIP stay on the two global views.

Heads: the [CLS] and the patch tokens share one DINO MLP with separate last layers (as the
public code's student); the pooled token has its own head, because after stage 4 it is twice as
wide. Teacher tau_t: 0.04 -> 0.07 over `teacher_temp_warmup_epochs` (30, SMIT's value; the SMART
paper gives none), student tau_s 0.1, centre momentum 0.9, EMA 0.996 -> 1.

Paper vs public code (winwinJJiang/SMIT_SMART_re_Pretraining), paper by default:

| switch | default (paper) | public code |
|---|---|---|
| `hints` | "paper": top s N kept | "code": random int(s r N) of the top int(s N) |
| `gitd_stage` | 4: pooled after stage 4 | 3: pooled SA-stage tokens (AITD+GITD one term) |
| `teacher_drop_ratio` | 0.7 | 0.3 (CLI), 0 (CT path: no noise) |
| `mask_ratio` | 0.7 | 0.7 (0.75 in the run scripts) |
| `rounding` | "ceil": ceil(r N), at least r masked | "floor" (int()) |
| `l_amip` | 1 (with 0.1 for the others) | 10-60 (with 1 for the others) |

Ablations (Tables 4-6): `semantic_attention=False` builds the Swin without the SA block: no
[CLS], so no SATT and no AITD, and the student gets SMIT's random masks (exactly ceil(r N) random
cells, no hints); the backbone's `model.sa_stage` moves the SA block and with it the masking grid
and the AMPD tokens (paper: 3); `teacher_drop_ratio=0` turns the noisy teacher off; a weight of 0
turns its loss off.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from medmim.errors import ConfigError
from medmim.losses.masked_l1 import MaskedL1Loss
from medmim.masking.attention import HighAttentionMasker
from medmim.masking.random import RandomMasker
from medmim.masking.teacher_noise import TeacherNoiseMasker
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


@METHODS.register("smart")
class SMART(SelfDistillation):
    """SMART on a Swin with a semantic-attention block (see the module docstring).

    Args:
        backbone: BACKBONES spec (a Swin, e.g. `{"name": "swin_smart"}`).
        context: run facts (steps per epoch and total steps for the schedules).
        mask_ratio: r, fraction of tokens masked before hints (0.7).
        hint_ratio: s, the hints (0.1).
        hints: "paper" or "code" (see the table above); "none" = no hints.
        rounding: "ceil", "floor" or "round" for r N (and s N in "paper" mode).
        teacher_drop_ratio: rho, the noisy teacher's patch-drop ratio (0.7; 0 = off).
        semantic_attention: build the SA block (True) or not (the Table 4a "SA x" rows); None
            leaves the backbone spec as it is.
        gitd_stage: Swin stage whose tokens are pooled for GITD (paper 4, code 3); None = the
            backbone's `pool_stage`.
        l_amip, l_ampd, l_aitd, l_gitd: loss weights (1, 0.1, 0.1, 0.1); 0 turns a loss off.
        **distill: projection heads, temperatures, centre and EMA momentum, with the paper's
            values as defaults (K 8192, hidden 2048, bottleneck 256, frozen weight-norm
            magnitude; tau_s 0.1, tau_t 0.04 -> 0.07 over 30 epochs; centre momentum 0.9; EMA
            0.996 -> 1): see `medmim.methods.distillation.SelfDistillation`.
    """

    method_name = "smart"
    #: options that moved to another section (`medmim.registry.check_kwargs` names the new key).
    moved_options: ClassVar[dict[str, str]] = {"sa_stage": "model.sa_stage"}
    loss_terms: ClassVar[dict[str, str]] = {
        "amip": "reconstruction",
        "ampd": "distillation",
        "aitd": "distillation",
        "gitd": "distillation",
        "koleo": "regularizer",
    }
    #: added to the error when a Swin-only switch meets another backbone.
    backbone_hint = "For a ViT backbone use method 'smart_vit'."

    def __init__(
        self,
        backbone: dict[str, Any],
        context: TrainContext | None = None,
        mask_ratio: float = 0.7,
        hint_ratio: float = 0.1,
        hints: str = "paper",
        rounding: str = "ceil",
        teacher_drop_ratio: float = 0.7,
        semantic_attention: bool | None = True,
        gitd_stage: int | None = 4,
        l_amip: float = 1.0,
        l_ampd: float = 0.1,
        l_aitd: float = 0.1,
        l_gitd: float = 0.1,
        **distill: Any,
    ) -> None:
        net = self._build_backbone(backbone, semantic_attention, gitd_stage)
        attention = net.has_cls_attention
        dims = net.feature_dims
        heads = {
            "head": HeadSpec(dims["patch"], share_last_layer=False),  # SA [CLS] and patch tokens
            "head_pooled": HeadSpec(dims["pooled"], share_last_layer=True),
        }
        families = ("patch", "cls", "pooled") if attention else ("patch", "pooled")
        super().__init__(net, heads, mip_heads(net), families, context, **distill)
        self.weights = {
            "amip": float(l_amip),
            "ampd": float(l_ampd),
            "aitd": float(l_aitd) if attention else 0.0,
            "gitd": float(l_gitd),
        }
        if not any(self.weights.values()):
            raise ConfigError(
                f"method '{self.method_name}': "
                "every loss weight (l_amip, l_ampd, l_aitd, l_gitd) is 0"
            )
        self.attention = attention
        self.masker = (
            HighAttentionMasker(mask_ratio, hints=hints, hint_ratio=hint_ratio, rounding=rounding)
            if attention
            else RandomMasker(mask_ratio, rounding=rounding)
        )
        self.teacher_noise = TeacherNoiseMasker(teacher_drop_ratio)
        self.l1 = MaskedL1Loss()

    def _build_backbone(
        self, spec: dict[str, Any], semantic_attention: bool | None, gitd_stage: int | None
    ) -> nn.Module:
        """The student backbone with the SA / stage switches written into its spec."""
        if semantic_attention and spec.get("sa_depth", 1) == 0:
            raise ConfigError(
                f"model.sa_depth=0 removes the semantic-attention block that method "
                f"'{self.method_name}' uses; set method.semantic_attention=false instead"
            )
        switches = {
            "semantic_attention": ("sa_depth", 0 if semantic_attention is False else None),
            "gitd_stage": ("pool_stage", gitd_stage),
        }
        spec = backbone_with(spec, self.method_name, switches, self.backbone_hint)
        return BACKBONES.build(spec)

    def forward(self, batch: dict[str, Any], step: int) -> StepOutput:
        """Noisy teacher -> SATT -> attention-guided masks -> student -> eqs. 2-6."""
        x, views = views_of(batch)
        grid = self.encoder.mask_grid(x.shape)
        noise = (
            self.teacher_noise(grid, len(x), device=x.device).mask
            if self.teacher_noise.enabled
            else None
        )
        t = self.teacher_features(x, noise)
        masks = self.masker(grid, len(x), attn=t.get("attn"), device=x.device)
        mask = masks.mask
        s = self.student["backbone"](x, mask)
        local = self.local_features(batch, len(x) // views)  # multi-crop: {} without local views

        w, terms, recon = self.weights, LossTerms(), None
        if w["amip"]:
            amip, recon = masked_reconstruction(
                self.student["mip"], self.l1, s["bottleneck"], x, mask
            )
            terms.add("amip", w["amip"], amip)
        terms.add(
            "ampd",
            w["ampd"],
            lambda: self.patch_distillation(
                "patch", "head", s["patch"], t["patch"], mask, views, step
            ),
        )
        terms.add(
            "aitd",
            w["aitd"],
            lambda: self.global_distillation(
                "cls", "head", s["cls"], t["cls"], views, step, local.get("cls")
            ),
        )
        terms.add(
            "gitd",
            w["gitd"],
            lambda: self.global_distillation(
                "pooled", "head_pooled", s["pooled"], t["pooled"], views, step, local.get("pooled")
            ),
        )
        terms.add("koleo", self.koleo_weight, lambda: self.koleo(s, views))
        logs = {**terms.logs, **self.log_common(step, mask, masks.hints)}
        return StepOutput(terms.total, logs, visuals(x, mask, recon, t.get("attn")))
