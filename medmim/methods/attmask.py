"""AttMask: what to hide from your students (Kakogeorgiou et al., ECCV 2022), in 3D.

iBOT (medmim.methods.ibot) with the student's masks chosen from the TEACHER's attention: the
teacher's last-block [CLS] -> patch attention (mean over heads) on the unmasked view v decides
view v's mask (AttMask-Hint, the paper's best variant, as the official code does it):

- one ratio r ~ U(0.1, 0.5) per batch (drawn once per step for all samples and views);
- mask the int(r N) most attended tokens (`rounding="floor"`, the code's `int()`);
- hints: reveal int(0.1 r N) tokens chosen uniformly at random among the int(0.1 N) most
  attended (`hints="code"`: show_max 0.1, show_ratio = 0.1 r);
- each (sample, view) is masked at all with probability 0.5 (`masking_prob`), else left whole.

Everything else (heads, losses, temperatures, EMA) is iBOT's. The masking is the only
difference, so this is iBOT with another default `masker`; pass `masker=` to change it (e.g.
`{"name": "attention_high", "hints": "none", ...}` for AttMask-High). Needs a backbone with
`attn` (a ViT, or a Swin with an SA block).
"""

from __future__ import annotations

from typing import Any

from medmim.methods.ibot import IBOT
from medmim.registry import METHODS

#: AttMask-Hint with the README settings: pred_ratio 0.3 +- 0.2, masking_prob 0.5, show_max 0.1.
ATTMASK_MASKER: dict[str, Any] = {
    "name": "attention_high",
    "hints": "code",
    "hint_ratio": 0.1,
    "ratio_range": [0.1, 0.5],
    "masking_prob": 0.5,
    "rounding": "floor",
}


@METHODS.register("attmask")
class AttMask(IBOT):
    """iBOT with AttMask-Hint masks from the teacher's [CLS] attention (options as `IBOT`)."""

    method_name = "attmask"
    default_masker = ATTMASK_MASKER
