"""SMART-ViT: SMART's attention-guided masking and noisy teacher on a plain 3D ViT.

The ViT's own [CLS] plays the semantic-attention [CLS]: SATT is the mean over heads of the
teacher's last-block [CLS] -> patch attention on the noisy view (the ViT analogue of eq. 1),
AITD distils the final [CLS], GITD the mean of the final patch tokens, AMPD the patch tokens, and
AMIP reconstructs the voxels from the patch-token map (1x1x1 conv + pixel shuffle by the patch
size). The masking grid is the patch grid and the teacher's patch drop replaces whole patches by
the teacher's mask token. Everything else, defaults included, is `medmim.methods.smart.SMART`;
the Swin-only switches (`semantic_attention`, `gitd_stage`) are off.
"""

from __future__ import annotations

from typing import Any

from medmim.methods.smart import SMART
from medmim.registry import METHODS, check_kwargs
from medmim.types import TrainContext


@METHODS.register("smart_vit")
class SMARTViT(SMART):
    """SMART on a ViT (e.g. `{"name": "vit_smart"}`); options as `SMART` minus the Swin ones."""

    method_name = "smart_vit"
    backbone_hint = ""

    def __init__(
        self, backbone: dict[str, Any], context: TrainContext | None = None, **options: Any
    ) -> None:
        check_kwargs(SMART, options, "method 'smart_vit'")
        for swin_only in ("semantic_attention", "gitd_stage"):
            options.setdefault(swin_only, None)
        super().__init__(backbone, context, **options)
