"""SMART-ViT: SMART's noisy teacher and attention-guided masks on the ViT's own [CLS] attention."""

from __future__ import annotations

import math

import pytest
import torch
from method_helpers import TINY_VIT, Recorder, build, make_batch, top_k

from medmim.errors import ConfigError
from medmim.methods.smart import SMART

N = 64


def test_masks_follow_the_vit_teachers_attention_on_the_noisy_view() -> None:
    method = build("smart_vit")
    assert isinstance(method, SMART) and method.encoder.config["name"] == "vit"
    method.teacher_features = Recorder(method.teacher_features)
    method.masker = Recorder(method.masker)
    out = method(make_batch(batch_size=2), step=0)
    drop = method.teacher_features.args[1]
    assert drop.flatten(1).sum(1).tolist() == [math.ceil(0.7 * N)] * 4  # whole patches dropped
    attn = method.teacher_features.out["attn"]
    mask, hints = method.masker.out.mask.flatten(1), method.masker.out.hints.flatten(1)
    assert torch.equal(mask | hints, top_k(attn, math.ceil(0.7 * N)))
    assert torch.equal(hints, top_k(attn, math.ceil(0.1 * N)))
    assert {"loss/amip", "loss/ampd", "loss/aitd", "loss/gitd"} <= set(out.logs)
    assert out.visuals["recon"].shape == (32, 32, 32)


def test_swin_only_switches_are_refused_and_typos_named() -> None:
    with pytest.raises(ConfigError, match="gitd_stage"):
        build("smart_vit", gitd_stage=4)
    with pytest.raises(ConfigError, match="hint_ration"):
        build("smart_vit", hint_ration=0.1)
    assert build("smart_vit", backbone=TINY_VIT, hints="code").masker.hints == "code"
