"""MST (AttMask-Low): the student's masks are the LEAST attended tokens of the teacher's
last-block [CLS] attention on the unmasked view."""

from __future__ import annotations

import torch
from method_helpers import Recorder, build, make_batch, top_k

from medmim.masking.attention import LowAttentionMasker


def test_default_masker_is_attmask_low() -> None:
    masker = build("mst").masker
    assert isinstance(masker, LowAttentionMasker)
    assert (masker.ratio_range, masker.masking_prob, masker.rounding) == ((0.1, 0.5), 0.5, "floor")


def test_masks_are_the_least_attended_tokens_of_the_teacher() -> None:
    method = build("mst", masker={"name": "attention_low", "ratio": 0.3, "rounding": "floor"})
    method.masker = Recorder(method.masker)
    batch = make_batch(batch_size=2)
    out = method(batch, step=0)
    with torch.no_grad():
        clean = method.teacher["backbone"](torch.cat(batch["views"]))["attn"]
    mask = method.masker.out.mask.flatten(1)
    assert mask.sum(1).tolist() == [int(0.3 * 64)] * 4
    assert torch.equal(mask, top_k(clean, int(0.3 * 64), largest=False))
    assert "loss/patch" in out.logs and "mask/hints" not in out.logs
