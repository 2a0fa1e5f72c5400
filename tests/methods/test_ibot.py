"""iBOT: block-wise masks per sample and view (exact counts with a fixed ratio), an unmasked
teacher, [CLS] + MIM losses, and the head-width check for pooled global tokens."""

from __future__ import annotations

import pytest
import torch
from method_helpers import TINY_SWIN, Recorder, build, make_batch

from medmim.errors import ConfigError
from medmim.masking.blockwise import BlockwiseMasker


def test_default_masker_is_the_ibot_recipe() -> None:
    masker = build("ibot").masker
    assert isinstance(masker, BlockwiseMasker)
    assert (masker.ratio, masker.ratio_range, masker.zero_prob) == (None, (0.1, 0.5), 0.5)


def test_fixed_ratio_blocks_are_exact_per_sample_and_view_and_the_teacher_is_clean() -> None:
    method = build("ibot", masker={"name": "blockwise", "ratio": 0.4, "exact": True})
    method.masker = Recorder(method.masker)
    method.teacher_features = Recorder(method.teacher_features)
    out = method(make_batch(batch_size=2), step=0)
    mask = method.masker.out.mask.flatten(1)
    assert mask.shape == (4, 64) and mask.sum(1).tolist() == [int(0.4 * 64)] * 4
    assert len({tuple(r.tolist()) for r in mask}) == 4
    assert len(method.teacher_features.args) == 1
    assert out.loss.item() == pytest.approx(
        float(out.logs["loss/cls"] + out.logs["loss/patch"]), rel=1e-5
    )


def test_drawn_ratios_are_zero_or_in_range() -> None:
    method = build("ibot")
    method.masker = Recorder(method.masker)
    torch.manual_seed(3)
    out = method(make_batch(batch_size=4), step=0)
    counts = method.masker.out.mask.flatten(1).sum(1)
    assert counts.shape == (8,) and counts.max() <= int(0.5 * 64), counts  # at most int(0.5 N)
    assert out.logs["mask/ratio"] == pytest.approx(counts.sum().item() / (8 * 64))


def test_global_token_choice_and_width_check() -> None:
    swin = build("ibot", backbone=TINY_SWIN)  # the Swin's SA [CLS]
    assert swin(make_batch(), step=0).logs["loss/cls"] > 0
    with pytest.raises(ConfigError, match="share one head"):
        build("ibot", backbone=TINY_SWIN, global_token="pooled")  # stage 4 is twice as wide
    pooled = build("ibot", backbone={**TINY_SWIN, "pool_stage": 3}, global_token="pooled")
    assert pooled(make_batch(), step=0).logs["loss/cls"] > 0
    with pytest.raises(ConfigError, match="global_token"):
        build("ibot", global_token="gap")
