"""iBOT: image BERT pre-training with an online tokenizer (Zhou et al., ICLR 2022), in 3D.

One step, both views as one batch:

1. the teacher (EMA, no gradient) sees the UNMASKED views and returns its [CLS], patch tokens
   and, for the attention-guided subclasses (AttMask, MST), its last-block [CLS] attention;
2. the student's masks come from `masker` (here 3D block-wise masking: per sample and per view
   a ratio of 0 with probability 0.5, else U(0.1, 0.5), the iBOT ViT-S recipe) and replace the
   masked patch embeddings by the mask token;
3. L = l_cls L_[CLS] + l_patch L_MIM (1, 1): L_[CLS] is the cross-view CE of the [CLS] tokens,
   L_MIM the same-view CE of the patch tokens over the masked ones (iBOT eq. 1-2), each with its
   own centre; tau_s 0.1, tau_t 0.04 -> 0.07 over 30 epochs for both.

Head: one DINO head for [CLS] and patch tokens with a shared last layer and a trainable
weight-norm magnitude (`share_last_layer=True`, `norm_last_layer=False`: iBOT's ViT-S recipe,
as the AttMask code). iBOT's local crops are optional: when the batch carries
`batch["local_views"]` (smaller crops), the student sees them unmasked and their global token
joins L_[CLS] as extra student views (iBOT / DINO multi-crop); L_MIM stays on the global views.
Sinkhorn-Knopp targets and a KoLeo term `loss/koleo` are options (`SelfDistillation`, off).

Any backbone with a global token works: `global_token="cls"` (a ViT's [CLS], a Swin's SA
[CLS]) or "pooled" (its pooled token, which must then be as wide as the patch tokens, e.g. a
Swin with `pool_stage` equal to `sa_stage`). The masker is a MASKERS spec, so a variant that
only changes the masking (AttMask, MST) is a subclass with another default `masker`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from medmim.errors import ConfigError
from medmim.methods.distillation import HeadSpec, LossTerms, SelfDistillation, views_of, visuals
from medmim.registry import BACKBONES, MASKERS, METHODS
from medmim.types import StepOutput, TrainContext

#: iBOT ViT-S recipe: `--pred_ratio 0 0.3 --pred_ratio_var 0 0.2`, block-wise, per sample.
IBOT_MASKER = {"name": "blockwise", "ratio": None, "ratio_range": [0.1, 0.5], "zero_prob": 0.5}


@METHODS.register("ibot")
class IBOT(SelfDistillation):
    """iBOT: masked patch-token and [CLS] self-distillation (see the module docstring).

    Args:
        backbone: BACKBONES spec (e.g. `{"name": "vit_s16"}`).
        context: run facts.
        masker: MASKERS spec of the student's masks (default: iBOT's 3D block-wise recipe).
        global_token: "cls" or "pooled", the token of the cross-view loss.
        l_cls, l_patch: loss weights (1, 1); 0 turns a loss off.
        share_last_layer: one last layer for [CLS] and patch tokens (True, iBOT).
        norm_last_layer: freeze the weight-norm magnitude (False, iBOT ViT-S recipe).
        **distill: projection head (8192, 2048, 256), temperatures (tau_s 0.1, tau_t 0.04 ->
            0.07 over 30 epochs; iBOT uses the same for the patch tokens), centre momentum 0.9
            and EMA momentum (cosine 0.996 -> 1): see
            `medmim.methods.distillation.SelfDistillation`.
    """

    method_name = "ibot"
    loss_terms: ClassVar[dict[str, str]] = {
        "cls": "distillation",
        "patch": "distillation",
        "koleo": "regularizer",
    }
    default_masker: dict[str, Any] = IBOT_MASKER

    def __init__(
        self,
        backbone: dict[str, Any],
        context: TrainContext | None = None,
        masker: dict[str, Any] | None = None,
        global_token: str = "cls",
        l_cls: float = 1.0,
        l_patch: float = 1.0,
        share_last_layer: bool = True,
        norm_last_layer: bool = False,
        **distill: Any,
    ) -> None:
        net = BACKBONES.build(dict(backbone))
        dims = net.feature_dims
        if global_token not in ("cls", "pooled"):
            raise ConfigError(
                f"method '{self.method_name}': global_token must be 'cls' or 'pooled', got "
                f"'{global_token}'"
            )
        if dims[global_token] != dims["patch"]:
            raise ConfigError(
                f"method '{self.method_name}': the {global_token} token ({dims[global_token]} "
                f"wide) and the patch tokens ({dims['patch']}) share one head; use "
                "global_token=cls or a backbone whose pool_stage equals its sa_stage"
            )
        heads = {"head": HeadSpec(dims["patch"], share_last_layer=share_last_layer)}
        super().__init__(
            net, heads, {}, ("cls", "patch"), context, norm_last_layer=norm_last_layer, **distill
        )
        self.global_token = global_token
        self.weights = {"cls": float(l_cls), "patch": float(l_patch)}
        if not any(self.weights.values()):
            raise ConfigError(
                f"method '{self.method_name}': both loss weights (l_cls, l_patch) are 0"
            )
        self.masker = MASKERS.build(dict(masker or self.default_masker))

    def forward(self, batch: dict[str, Any], step: int) -> StepOutput:
        """Unmasked views -> teacher (-> attention) -> masks -> student -> [CLS] + MIM losses."""
        x, views = views_of(batch)
        grid = self.encoder.mask_grid(x.shape)
        t = self.teacher_features(x)
        masks = self.masker(grid, len(x), attn=t.get("attn"), device=x.device)
        mask = masks.mask
        s = self.student["backbone"](x, mask)
        local = self.local_features(batch, len(x) // views)  # multi-crop: {} without local views

        key, terms = self.global_token, LossTerms()
        terms.add(
            "cls",
            self.weights["cls"],
            lambda: self.global_distillation(
                "cls", "head", s[key], t[key], views, step, local.get(key)
            ),
        )
        terms.add(
            "patch",
            self.weights["patch"],
            lambda: self.patch_distillation(
                "patch", "head", s["patch"], t["patch"], mask, views, step
            ),
        )
        terms.add("koleo", self.koleo_weight, lambda: self.koleo(s, views))
        logs = {**terms.logs, **self.log_common(step, mask, masks.hints)}
        return StepOutput(terms.total, logs, visuals(x, mask, None, t.get("attn")))
