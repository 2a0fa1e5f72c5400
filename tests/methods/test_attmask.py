"""AttMask: the student's masks are the most attended tokens of the TEACHER's last-block [CLS]
attention on the unmasked view, with int(0.1 r N) random hints among the top 10%."""

from __future__ import annotations

import pytest
import torch
from method_helpers import Recorder, build, make_batch, top_k

from medmim.masking.attention import HighAttentionMasker

N = 64


def record(method):
    method.masker = Recorder(method.masker)
    method.teacher_features = Recorder(method.teacher_features)
    batch = make_batch(batch_size=2)
    out = method(batch, step=0)
    return out, batch


def test_default_masker_is_attmask_hint() -> None:
    masker = build("attmask").masker
    assert isinstance(masker, HighAttentionMasker)
    assert (
        masker.hints,
        masker.hint_ratio,
        masker.ratio_range,
        masker.masking_prob,
        masker.rounding,
    ) == ("code", 0.1, (0.1, 0.5), 0.5, "floor")


def test_masks_are_the_top_of_the_teachers_attention_on_the_clean_view() -> None:
    spec = {
        "name": "attention_high",
        "ratio": 0.5,
        "hints": "code",
        "hint_ratio": 0.1,
        "rounding": "floor",
    }
    method = build("attmask", masker=spec)
    out, batch = record(method)
    teacher, masker = method.teacher_features, method.masker
    assert len(teacher.args) == 1  # the teacher sees the unmasked views
    with torch.no_grad():
        clean = method.teacher["backbone"](torch.cat(batch["views"]))["attn"]
    assert torch.equal(masker.kwargs["attn"], clean)
    mask, hints = masker.out.mask.flatten(1), masker.out.hints.flatten(1)
    n_top, n_hint = int(0.5 * N), int(0.1 * 0.5 * N)  # 32, 3
    assert hints.sum(1).tolist() == [n_hint] * 4 and mask.sum(1).tolist() == [n_top - n_hint] * 4
    assert torch.equal(mask | hints, top_k(clean, n_top))
    assert not (hints & ~top_k(clean, int(0.1 * N))).any()
    assert out.logs["mask/hints"] == pytest.approx(n_hint / N)


def test_one_ratio_per_batch_and_whole_samples_left_unmasked() -> None:
    method = build("attmask")
    torch.manual_seed(1)
    record(method)
    counts = method.masker.out.mask.flatten(1).sum(1) + method.masker.out.hints.flatten(1).sum(1)
    r = method.masker.out.ratio
    assert 0.1 <= r <= 0.5
    assert set(counts.tolist()) <= {0, int(r * N)}  # gated to 0, else the batch's int(r N)
