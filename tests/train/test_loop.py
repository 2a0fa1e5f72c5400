import json
from pathlib import Path

import pytest
import torch
from toy_training import EXACT, ToyAutoencoder, ToyVolumes, method_state, toy_config

from medmim.train.checkpoint import seed_everything
from medmim.train.loop import NonFiniteLossError, pretrain

CONTRACT_KEYS = {
    "method",
    "optimizer",
    "scaler",
    "step",
    "epoch",
    "rng",
    "sampler",
    "config",
    "encoder",
    "encoder_config",
    "medmim_version",
}


def rows(run: Path) -> list[dict]:
    return [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    ]


def test_run_directory_logs_figures_and_checkpoints(tmp_path: Path) -> None:
    run = pretrain(
        toy_config(tmp_path, "train.vis_every=100", "train.keep_every=8"), dataset=ToyVolumes()
    )
    assert run == tmp_path / "toy"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "last.ckpt",
        "step-000008.ckpt",
        "step-000016.ckpt",
    ]
    assert sorted(p.name for p in (run / "figures").iterdir()) == [
        "loss_curves.png",
        "step-000001.png",
    ]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1 and (run / "config.yaml").is_file()
    assert [r["step"] for r in rows(run)] == [1, 2, 4, 6, 8, 10, 12, 14, 16]
    assert {"loss", "loss/rec", "lr", "wd", "grad_norm", "speed/samples_per_s"} <= set(rows(run)[0])
    assert "step 16 epoch 1.875 loss" in (run / "train.log").read_text(encoding="utf-8")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert CONTRACT_KEYS <= set(ckpt) and ckpt["step"] == 16 and ckpt["epoch"] == 2
    assert ckpt["sampler"] == {
        "epoch": 2,
        "index": 0,
        "seed": 0,
        "world_size": 1,
        "batch_size": 2,
        "accumulate": 1,
        "steps_per_epoch": 8,
    }
    assert ckpt["encoder_config"]["name"] == "toy_encoder" and ckpt["config"]["name"] == "toy"
    for key, value in ckpt["encoder"].items():
        assert torch.equal(value, ckpt["method"][f"student.{key}"])


def test_last_layer_is_frozen_for_the_first_steps(tmp_path: Path) -> None:
    run = pretrain(
        toy_config(tmp_path, "train.keep_every=4", "train.max_steps=8"), dataset=ToyVolumes()
    )
    seed_everything(0)
    initial = ToyAutoencoder({"name": "toy_encoder", "dim": 8}).state_dict()
    at4 = torch.load(run / "checkpoints" / "step-000004.ckpt", weights_only=True)["method"]
    at8 = method_state(run)
    assert torch.equal(at4["head.last_layer.weight"], initial["head.last_layer.weight"])
    assert not torch.equal(at8["head.last_layer.weight"], initial["head.last_layer.weight"])
    assert not torch.equal(at4["head.proj.weight"], initial["head.proj.weight"])


def test_nonfinite_steps_are_rolled_back_and_counted(tmp_path: Path) -> None:
    # keep_every=1: every step is a check step, so each bad step is found before its update
    run = pretrain(
        toy_config(tmp_path, "method.nan_at=[3,6]", "train.keep_every=1", "train.max_steps=8"),
        dataset=ToyVolumes(),
    )
    good = torch.load(run / "checkpoints" / "step-000002.ckpt", weights_only=True)
    after = torch.load(run / "checkpoints" / "step-000004.ckpt", weights_only=True)
    # step 3's NaN shows that the update of step 2 gave weights with a non-finite loss: the
    # guard goes back to the state before step 2, the last one seen to give a finite loss
    for key, value in good["method"].items():
        if key != "center":  # the snapshot is taken after step 2's forward, which updates it
            assert torch.equal(value, after["method"][key]), key
    assert str(good["optimizer"]["state"]) == str(after["optimizer"]["state"])
    assert [r["nonfinite/total"] for r in rows(run)] == [0, 0, 1, 1, 2]
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "step 3: non-finite loss or gradients since step 3 (loss nan" in log
    assert "rolled back to the state before step 2" in log
    assert after["counters"] == {"nonfinite_total": 1, "nonfinite_row": 1}
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    # one clean check after a roll-back is not yet progress (its update is not verified)
    assert final["counters"] == {"nonfinite_total": 2, "nonfinite_row": 1}


def test_nonfinite_between_checks_is_found_at_the_next_check(tmp_path: Path) -> None:
    # log_every=4: step 5 is not a check step; its NaN is found at step 7 (8 done), which rolls
    # back to the state before step 3 (4 done), the snapshot of the last clean check
    run = pretrain(
        toy_config(
            tmp_path,
            "method.nan_at=[5]",
            "train.log_every=4",
            "train.keep_every=4",
            "train.max_steps=8",
        ),
        dataset=ToyVolumes(),
    )
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "step 7: non-finite loss or gradients since step 4" in log
    assert "rolled back to the state before step 3" in log
    assert all(v.isfinite().all() for v in method_state(run).values() if v.is_floating_point())


def test_nonfinite_in_a_row_stops_with_a_usable_checkpoint(tmp_path: Path) -> None:
    cfg = toy_config(
        tmp_path, "method.nan_at=[2,3,4]", "train.max_nonfinite=3", "train.keep_every=1"
    )
    with pytest.raises(
        NonFiniteLossError,
        match=r"3 times in a row \(last at step 4\).*last.ckpt holds the "
        r"state before step 1",
    ):
        pretrain(cfg, dataset=ToyVolumes())
    ckpt = torch.load(tmp_path / "toy" / "checkpoints" / "last.ckpt", weights_only=True)
    good = torch.load(tmp_path / "toy" / "checkpoints" / "step-000001.ckpt", weights_only=True)
    assert ckpt["step"] == 5
    assert all(
        torch.equal(v, good["method"][k]) for k, v in ckpt["method"].items() if k != "center"
    )
    cfg.resume = True
    pretrain(cfg, dataset=ToyVolumes())  # continues past the bad steps
    assert method_state(tmp_path / "toy")["student.mix.weight"].isfinite().all()


def test_following_the_advice_after_a_huge_learning_rate_gives_a_finite_run(tmp_path: Path) -> None:
    """lr=1e6 blows the weights up with a finite loss, then NaN: the guard must save weights
    from before the blow-up, so that resuming with a sane learning rate trains (issue 14)."""
    cfg = toy_config(tmp_path, "optim.lr=1e6", "train.max_nonfinite=3", "train.log_every=1")
    with pytest.raises(NonFiniteLossError, match=r"medmim pretrain --resume .*toy optim.base_lr="):
        pretrain(cfg, dataset=ToyVolumes())
    saved = method_state(tmp_path / "toy")
    assert max(float(v.abs().max()) for v in saved.values() if v.is_floating_point()) < 10
    cfg.resume, cfg.optim.lr = True, 1e-4
    pretrain(cfg, dataset=ToyVolumes())
    done = rows(tmp_path / "toy")
    assert done[-1]["step"] == 16 and done[-1]["loss"] is not None
    assert all(
        v.isfinite().all() for v in method_state(tmp_path / "toy").values() if v.is_floating_point()
    )


def test_accumulation_matches_a_larger_batch(tmp_path: Path) -> None:
    acc = pretrain(
        toy_config(tmp_path, "name=acc", "optim.accumulate=2", "train.max_steps=6", *EXACT),
        dataset=ToyVolumes(),
    )
    big = pretrain(
        toy_config(tmp_path, "name=big", "data.batch_size=4", "train.max_steps=6", *EXACT),
        dataset=ToyVolumes(),
    )
    a, b = method_state(acc), method_state(big)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_activation_checkpointing_and_init_from(tmp_path: Path) -> None:
    first = pretrain(toy_config(tmp_path, "name=a", "train.max_steps=3"), dataset=ToyVolumes())
    second = pretrain(
        toy_config(tmp_path, "name=b", "train.max_steps=3", "train.activation_checkpointing=true"),
        dataset=ToyVolumes(),
    )
    a, b = method_state(first), method_state(second)
    assert all(torch.equal(a[k], b[k]) for k in a)  # recomputation changes nothing
    frozen = ("optim.lr=0", "optim.min_lr=0", "optim.weight_decay=0", "optim.weight_decay_end=0")
    third = pretrain(
        toy_config(tmp_path, "name=c", "train.max_steps=2", f"init_from={first}", *frozen),
        dataset=ToyVolumes(),
    )
    c = method_state(third)
    for key in [k for k in a if k.startswith("student.")]:
        assert torch.equal(c[key], a[key])
        torch.testing.assert_close(c[key.replace("student.", "teacher.")], a[key])


def test_mixed_precision_and_compile_flag(tmp_path: Path, monkeypatch) -> None:
    compiled = []
    monkeypatch.setattr(
        ToyAutoencoder, "compile", lambda self: compiled.append(type(self).__name__)
    )
    bf16 = pretrain(
        toy_config(
            tmp_path, "name=bf16", "train.max_steps=2", "train.precision=bf16", "train.compile=true"
        ),
        dataset=ToyVolumes(),
    )
    assert compiled == ["ToyAutoencoder"] and all(r["loss"] < 1 for r in rows(bf16))
    fp16 = pretrain(
        toy_config(
            tmp_path, "name=fp16", "train.max_steps=3", "train.precision=fp16", "train.log_every=1"
        ),
        dataset=ToyVolumes(),
    )
    # the first step overflowed at the initial scale 2^16: the scaler skipped it and backed off
    assert (
        rows(fp16)[0]["grad_norm"] is None and [r["amp/scale"] for r in rows(fp16)] == [2.0**15] * 3
    )
    assert [r["nonfinite/total"] for r in rows(fp16)] == [0, 0, 0]  # not counted as a bad step
    assert (
        torch.load(fp16 / "checkpoints" / "last.ckpt", weights_only=True)["scaler"]["scale"]
        == 2.0**15
    )


def test_lr_is_scaled_by_the_global_batch_and_saved(tmp_path: Path) -> None:
    """optim.lr null: base_lr x batch x accumulate / 256, logged, written into config.yaml."""
    from omegaconf import OmegaConf

    run = pretrain(
        toy_config(
            tmp_path,
            "optim.lr=null",
            "optim.base_lr=0.128",
            "optim.accumulate=2",
            "optim.warmup_epochs=0",
            "train.max_steps=6",
        ),
        dataset=ToyVolumes(),
    )
    assert OmegaConf.load(run / "config.yaml").optim.lr == pytest.approx(0.128 * 4 / 256)
    assert rows(run)[0]["lr"] == pytest.approx(0.128 * 4 / 256)  # step 0, no warm-up: the peak
    assert "peak learning rate 0.002 at a global batch of 4 (optim.base_lr 0.128 x 4 / 256)" in (
        run / "train.log"
    ).read_text(encoding="utf-8")


def test_fp16_rollback_leaves_the_scaler_ready_for_the_next_step(tmp_path: Path) -> None:
    """A roll-back skips the update after the gradients were unscaled: the scaler must still be
    reset, or the next step's unscale_ fails ("already been called since the last update")."""
    run = pretrain(
        toy_config(
            tmp_path,
            "train.max_steps=6",
            "train.precision=fp16",
            "train.log_every=1",
            "method.nan_at=[3]",
        ),
        dataset=ToyVolumes(),
    )
    logged = rows(run)
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5, 6]
    assert [r["nonfinite/total"] for r in logged] == [0, 0, 0, 1, 1, 1]
