"""MST baseline: low-attention masking from the teacher's [CLS] attention, AttMask-Low style.

The SMART paper (sec. 4) compares against MST (Li et al., NeurIPS 2021) as "low attending
masking". No MST code was found; this is the AttMask code's "AttMask-Low" (the only
low-attention mode in public code), on iBOT's losses:

- one ratio r ~ U(0.1, 0.5) per batch; mask the int(r N) LEAST attended tokens of the teacher's
  last-block [CLS] -> patch attention on the unmasked view;
- each (sample, view) is masked at all with probability 0.5.

Not modelled from the MST paper: its random masking among the low-attention tokens (it protects
the most attended ones and masks part of the rest at random) and its image-restoration decoder;
MST's [CLS] loss is DINO's, which iBOT's [CLS] term equals. Pass `masker=` to change the masks.
"""

from __future__ import annotations

from typing import Any

from medmim.methods.ibot import IBOT
from medmim.registry import METHODS

#: AttMask-Low with the AttMask README settings (pred_ratio 0.3 +- 0.2, masking_prob 0.5).
MST_MASKER: dict[str, Any] = {
    "name": "attention_low",
    "ratio_range": [0.1, 0.5],
    "masking_prob": 0.5,
    "rounding": "floor",
}


@METHODS.register("mst")
class MST(IBOT):
    """iBOT with AttMask-Low masks from the teacher's [CLS] attention (options as `IBOT`)."""

    method_name = "mst"
    default_masker = MST_MASKER
