"""PUMIT methods: one-step smoke tests, overfitting a fixed batch, engine-facing properties."""

from __future__ import annotations

import io

import pytest
import torch
from method_helpers import PUMIT_TOKENIZER, PUMIT_TOKENIZER_OPTS, PUMIT_VIT, write_pumit_tokenizer

from medmim.errors import ConfigError
from medmim.registry import METHODS
from medmim.types import TrainContext

TOKENIZER, TOKENIZER_OPTS, VIT = PUMIT_TOKENIZER, PUMIT_TOKENIZER_OPTS, PUMIT_VIT


def _batch(b: int = 2, spacing: tuple[float, float, float] | None = None) -> dict:
    z, y, x = torch.meshgrid(
        torch.linspace(-1, 1, 16),
        torch.linspace(-1, 1, 32),
        torch.linspace(-1, 1, 32),
        indexing="ij",
    )
    x = torch.stack(
        [torch.sigmoid(8 * (0.6 + 0.1 * i - (z**2 + y**2 + x**2).sqrt())) for i in range(b)]
    )[:, None]
    batch = {"views": [x, x.flip(-1)], "index": torch.arange(b)}
    if spacing is not None:
        batch["spacing"] = torch.tensor([spacing] * b)
    return batch


def _tokenizer_method(**opts):
    return METHODS.build(
        {"name": "pumit_tokenizer", **TOKENIZER_OPTS, **opts},
        backbone=TOKENIZER,
        context=TrainContext(total_steps=40),
    )


def _overfit(method, batch, steps: int, lr: float) -> tuple[list[float], list[dict[str, float]]]:
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=lr)
    losses, logs = [], []
    for step in range(steps):
        out = method(batch, step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        method.on_optimizer_step(step)
        losses.append(float(out.loss.detach()))
        logs.append({k: float(v) for k, v in out.logs.items()})
    return losses, logs


def test_tokenizer_method_one_step_and_engine_view() -> None:
    method = _tokenizer_method()
    out = method(_batch(), step=0)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert {
        "loss/rec",
        "loss/prior",
        "loss/entropy",
        "loss/gan_g",
        "loss/disc",
        "gan/active",
        "codebook/usage",
    } <= set(out.logs)
    assert out.visuals["recon"].shape == (16, 32, 32)
    trainable = {n.split(".")[0] for n, p in method.named_parameters() if p.requires_grad}
    assert trainable == {"tokenizer"}  # the discriminator is never in the engine's optimizer
    assert method.encoder is method.tokenizer
    out.loss.backward()
    disc = [p.detach().clone() for p in method.gan.discriminator.parameters()]
    method.on_optimizer_step(5)  # past the 2-step warm-up (lr 0 at step 0)
    assert any(not torch.equal(a, b) for a, b in zip(disc, method.gan.discriminator.parameters()))
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    _tokenizer_method().load_state_dict(torch.load(buffer, weights_only=True))  # exact resume


def test_tokenizer_method_overfits_a_fixed_batch() -> None:
    torch.manual_seed(0)
    losses, logs = _overfit(_tokenizer_method(), _batch(b=1), steps=20, lr=5e-3)
    assert losses[-1] < 0.8 * losses[0], losses
    assert logs[-1]["loss/rec"] < 0.7 * logs[0]["loss/rec"], [log["loss/rec"] for log in logs]


def test_tokenizer_method_takes_spacing_from_the_batch() -> None:
    method = _tokenizer_method(gan_weight=0.0)
    batch = _batch(spacing=(2.0, 1.0, 1.0))
    batch["views"] = [v[:, :, :8] for v in batch["views"]]  # DA 1: 8-slice crops give 1x2x2 tokens
    out = method(batch, 0)
    assert out.logs["data/da"] == 1.0 and method.gan is None


def test_tokenizer_method_perceptual_without_weights_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="perceptual_weight=0"):
        _tokenizer_method(perceptual_weight=1.0)


@pytest.fixture
def tokenizer_ckpt(tmp_path):
    return write_pumit_tokenizer(tmp_path / "last.ckpt")


def test_mim_method_one_step_and_frozen_tokenizer(tokenizer_ckpt) -> None:
    method = METHODS.build(
        {"name": "pumit_mim", "tokenizer": tokenizer_ckpt}, backbone=VIT, context=TrainContext()
    )
    method.train()
    assert not method.tokenizer.training
    out = method(_batch(), step=0)
    assert torch.isfinite(out.loss) and {"loss/mim", "mim/kl", "mim/accuracy", "mask/ratio"} <= set(
        out.logs
    )
    assert (
        float(out.logs["mask/ratio"]) == 3 / 4
    )  # 4 - int(4 * 0.45) of a 1x2x2 grid (the code's count)
    assert out.visuals["mask"].shape == (16, 32, 32)
    trainable = {n.split(".")[0] for n, p in method.named_parameters() if p.requires_grad}
    assert trainable == {"vit", "head"}
    assert method.head[-1].out_features == 32 and method.encoder is method.vit


def test_mim_method_overfits_a_fixed_batch(tokenizer_ckpt) -> None:
    torch.manual_seed(0)
    method = METHODS.build({"name": "pumit_mim", "tokenizer": tokenizer_ckpt}, backbone=VIT)
    losses, _ = _overfit(method, _batch(), steps=20, lr=3e-3)
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses


def test_mim_method_errors(tokenizer_ckpt, tmp_path) -> None:
    with pytest.raises(ConfigError, match="train one first"):
        METHODS.build({"name": "pumit_mim", "tokenizer": str(tmp_path / "none.ckpt")}, backbone=VIT)
    with pytest.raises(ConfigError, match="token grids must coincide"):
        METHODS.build(
            {"name": "pumit_mim", "tokenizer": tokenizer_ckpt}, backbone={**VIT, "patch_size": 8}
        )


def test_pumit_steps_have_no_host_sync(tokenizer_ckpt) -> None:
    """Issue 15: PUMIT's steps read nothing back from the device (see tests/host_sync.py).
    The tokenizer's GAN stage is left out: its gate decides on the host, once per step, from
    the discriminator's loss (medmim/losses/gan.py)."""
    from host_sync import count_host_syncs

    tokenizer = _tokenizer_method(gan_weight=0.0)
    mim = METHODS.build(
        {"name": "pumit_mim", "tokenizer": tokenizer_ckpt}, backbone=VIT, context=TrainContext()
    )
    for method in (tokenizer, mim):
        method.train()
        method(_batch(), step=0).loss.backward()  # first call: lazy set-up
        with count_host_syncs() as calls:
            out = method(_batch(), step=1)
            out.loss.backward()
            method.on_optimizer_step(1)
        assert calls == [], (method.method_name, calls)


def test_mim_masks_as_many_patches_as_the_pumit_code() -> None:
    """The code keeps int(L (1 - 0.55)) patches visible: 224 of 500 (float rounding), 44 of 100."""
    from medmim.config import load_config
    from medmim.methods.pumit_mim import DEFAULT_MASKER
    from medmim.registry import MASKERS
    from medmim.train.config import RunConfig

    preset = load_config("pumit_mim", schema=RunConfig).method.masker
    for spec in (DEFAULT_MASKER, dict(preset)):
        masker = MASKERS.build(dict(spec))
        assert (
            masker((5, 10, 10), 2).mask.flatten(1).sum(1).tolist()
            == [500 - int(500 * (1 - 0.55))] * 2
            == [276] * 2
        )
        assert masker((1, 10, 10), 1).mask.sum().item() == 100 - int(100 * (1 - 0.55)) == 56
