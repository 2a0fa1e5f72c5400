"""SMART: the masks it builds (counts, hints, top of the TEACHER's SATT on the noisy view), the
noisy teacher (own mask token, exact drop count), the ablation switches and the loss sum."""

from __future__ import annotations

import math

import pytest
import torch
from method_helpers import TINY_SWIN, Recorder, build, make_batch, top_k

from medmim.errors import ConfigError
from medmim.masking.attention import HighAttentionMasker
from medmim.masking.random import RandomMasker

#: SA at stage 2: a 4^3 = 64-cell masking grid (8^3-voxel cells) at 32^3.
STAGE2 = {**TINY_SWIN, "sa_stage": 2}
N = 64


def run_recorded(method, batch=None):
    """One forward with the teacher, its noise and the masker recorded."""
    method.teacher_features = Recorder(method.teacher_features)
    method.teacher_noise = Recorder(method.teacher_noise)
    method.masker = Recorder(method.masker)
    out = method(batch or make_batch(batch_size=2), step=0)
    return out, method.teacher_features, method.teacher_noise, method.masker


def test_paper_hints_mask_the_top_r_of_the_teacher_satt_minus_the_top_s() -> None:
    method = build("smart", backbone=STAGE2)
    out, teacher, noise, masker = run_recorded(method)
    attn = teacher.out["attn"]
    assert attn.shape == (4, N) and torch.equal(masker.kwargs["attn"], attn)
    mask, hints = masker.out.mask.flatten(1), masker.out.hints.flatten(1)
    n_top, n_hint = math.ceil(0.7 * N), math.ceil(0.1 * N)  # 45, 7
    assert mask.sum(1).tolist() == [n_top - n_hint] * 4 and hints.sum(1).tolist() == [n_hint] * 4
    assert torch.equal(mask | hints, top_k(attn, n_top)) and torch.equal(hints, top_k(attn, n_hint))
    assert out.logs["mask/ratio"] == pytest.approx((n_top - n_hint) / N)
    assert out.logs["mask/hints"] == pytest.approx(n_hint / N)
    # the SATT came from the teacher on the noisy view: exactly ceil(0.7 N) dropped cells
    drop = noise.out.mask
    assert drop.flatten(1).sum(1).tolist() == [n_top] * 4
    assert teacher.args[1] is drop
    with torch.no_grad():
        clean = method.teacher["backbone"](torch.cat(make_batch(batch_size=2)["views"]))["attn"]
    assert not torch.allclose(clean, attn)


def test_code_hints_reveal_a_random_subset_of_the_top_tenth() -> None:
    method = build("smart", backbone=STAGE2, hints="code")
    _, teacher, _, masker = run_recorded(method)
    attn, mask, hints = teacher.out["attn"], masker.out.mask.flatten(1), masker.out.hints.flatten(1)
    n_top, n_hint = math.ceil(0.7 * N), int(0.1 * 0.7 * N)  # 45, 4
    assert hints.sum(1).tolist() == [n_hint] * 4 and mask.sum(1).tolist() == [n_top - n_hint] * 4
    assert not (hints & ~top_k(attn, int(0.1 * N))).any()
    assert torch.equal(mask | hints, top_k(attn, n_top))


def test_the_teacher_drops_patches_with_its_own_mask_token() -> None:
    method = build("smart", backbone=STAGE2)
    x = torch.cat(make_batch(batch_size=1)["views"])
    drop = method.teacher_noise((4, 4, 4), 2).mask
    before = method.teacher_features(x, drop)["patch"]
    with torch.no_grad():
        method.student["backbone"].mask_token.add_(5.0)  # the student's token does not matter
    assert torch.allclose(method.teacher_features(x, drop)["patch"], before)
    with torch.no_grad():
        method.teacher["backbone"].mask_token.add_(5.0)
    assert not torch.allclose(method.teacher_features(x, drop)["patch"], before)


def test_noisy_teacher_off_gives_the_teacher_clean_views() -> None:
    method = build("smart", teacher_drop_ratio=0.0)
    _, teacher, _, _ = run_recorded(method)
    assert teacher.args[1] is None


def test_without_semantic_attention_masks_are_random_and_aitd_is_off() -> None:
    method = build("smart", backbone=STAGE2, semantic_attention=False)
    assert method.encoder.sa is None and isinstance(method.masker, RandomMasker)
    assert "cls" not in method.losses
    out, _, _, masker = run_recorded(method)
    assert masker.out.mask.flatten(1).sum(1).tolist() == [math.ceil(0.7 * N)] * 4
    assert (
        "loss/aitd" not in out.logs and "attn" not in out.visuals and "mask/hints" not in out.logs
    )
    assert {"loss/amip", "loss/ampd", "loss/gitd"} <= set(out.logs)


def test_switches_reach_the_backbone_and_the_masker() -> None:
    method = build("smart", backbone=STAGE2, gitd_stage=3, mask_ratio=0.5, hint_ratio=0.2)
    assert method.encoder.config["sa_stage"] == 2 and method.encoder.config["pool_stage"] == 3
    assert isinstance(method.masker, HighAttentionMasker)
    assert (method.masker.ratio, method.masker.hint_ratio, method.masker.hints) == (
        0.5,
        0.2,
        "paper",
    )
    assert build("smart").encoder.config["pool_stage"] == 4  # GITD after stage 4 (paper)
    with pytest.raises(ConfigError, match="semantic_attention=false"):
        build("smart", backbone={**TINY_SWIN, "sa_depth": 0})
    with pytest.raises(ConfigError, match="option 'sa_stage' moved to 'model.sa_stage'"):
        build("smart", sa_stage=2)  # the stage is the backbone's: one home, model.sa_stage
    with pytest.raises(ConfigError, match="every loss weight"):
        build("smart", l_amip=0, l_ampd=0, l_aitd=0, l_gitd=0)


def test_loss_is_the_weighted_sum_and_a_zero_weight_turns_a_term_off() -> None:
    out = build("smart")(make_batch(), step=0)
    logs = out.logs
    expected = logs["loss/amip"] + 0.1 * (logs["loss/ampd"] + logs["loss/aitd"] + logs["loss/gitd"])
    assert out.loss.item() == pytest.approx(float(expected), rel=1e-5)
    out = build("smart", l_ampd=0.0, l_amip=0.0)(make_batch(), step=0)
    assert set(k for k in out.logs if k.startswith("loss/")) == {"loss/aitd", "loss/gitd"}
    assert "recon" not in out.visuals


def test_teacher_temperature_warms_up_in_epochs() -> None:
    # 10 steps per epoch; np.linspace(0.04, 0.07, 3) per epoch as the official code, then 0.07
    method = build("smart", teacher_temp_warmup_epochs=3)
    temps = [method(make_batch(), step=s).logs["teacher/temp"] for s in (0, 9, 10, 20, 29, 30, 50)]
    assert temps == pytest.approx([0.04, 0.04, 0.055, 0.07, 0.07, 0.07, 0.07])
    assert method.momentum_at(0) == pytest.approx(0.996) and method.momentum_at(
        99
    ) == pytest.approx(1.0)
