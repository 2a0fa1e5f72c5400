"""SMIT: exact random masks per sample and per view, an unmasked teacher, no SA block, the loss
sum MIP + 0.1 MPD + 0.1 ITD, and MIP over the masked voxels only."""

from __future__ import annotations

import math

import pytest
import torch
from method_helpers import TINY_SWIN, TINY_VIT, Recorder, build, make_batch

from medmim.errors import ConfigError
from medmim.masking.utils import mask_to_voxels


def test_random_masks_are_exact_and_independent_and_the_teacher_sees_clean_views() -> None:
    method = build("smit", backbone={**TINY_SWIN, "sa_stage": 2})  # 4^3 cells
    method.masker = Recorder(method.masker)
    method.teacher_features = Recorder(method.teacher_features)
    out = method(make_batch(batch_size=2), step=0)
    mask = method.masker.out.mask.flatten(1)
    assert mask.shape == (4, 64) and mask.sum(1).tolist() == [math.ceil(0.7 * 64)] * 4
    assert len({tuple(row.tolist()) for row in mask}) == 4  # per sample and per view
    assert len(method.teacher_features.args) == 1  # no mask for the teacher
    assert out.logs["mask/ratio"] == pytest.approx(45 / 64) and "mask/hints" not in out.logs


def test_backbone_has_no_sa_block_and_pools_stage_3_tokens() -> None:
    method = build("smit")
    assert method.encoder.sa is None and method.encoder.config["sa_depth"] == 0
    assert method.encoder.config["pool_stage"] == 3
    assert build("smit", pool_stage=4).encoder.config["pool_stage"] == 4
    assert set(method.losses) == {"patch", "global"}
    with pytest.raises(ConfigError, match="every loss weight"):
        build("smit", l_mip=0, l_mpd=0, l_itd=0)
    with pytest.raises(ConfigError, match="no semantic-attention block"):
        build("smit", backbone={**TINY_SWIN, "sa_depth": 2})
    with pytest.raises(ConfigError, match="needs a Swin"):
        build("smit", backbone=TINY_VIT)


def test_loss_is_mip_plus_weighted_distillation() -> None:
    out = build("smit")(make_batch(), step=0)
    logs = out.logs
    expected = logs["loss/mip"] + 0.1 * logs["loss/mpd"] + 0.1 * logs["loss/itd"]
    assert out.loss.item() == pytest.approx(float(expected), rel=1e-5)
    assert build("smit", l_mip=0.0)(make_batch(), step=0).logs.keys() >= {"loss/mpd", "loss/itd"}


def test_mip_reads_only_masked_voxels() -> None:
    method = build("smit", l_mpd=0.0, l_itd=0.0)
    method.masker = Recorder(method.masker)
    batch = make_batch()
    out = method(batch, step=0)
    x = torch.cat(batch["views"])
    voxels = mask_to_voxels(method.masker.out.mask, x.shape[-3:])
    # changing the unmasked voxels of the target changes nothing once the masks are fixed
    recon = out.visuals["recon"]
    assert recon.shape == (32, 32, 32)
    with torch.no_grad():
        pred = method.student["mip"](
            method.student["backbone"](x, method.masker.out.mask)["bottleneck"]
        )
    target = torch.where(voxels, x, torch.full_like(x, 7.0))
    loss_a = method.l1(pred, x, voxels)
    loss_b = method.l1(pred, target, voxels)
    assert loss_a.item() == pytest.approx(loss_b.item()) and loss_a.item() == pytest.approx(
        out.loss.item(), rel=1e-5
    )
