"""A step whose loss is finite but whose gradients are not is rolled back like a NaN loss."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import torch
from toy_training import ToyAutoencoder, ToyVolumes, method_state, toy_config

from medmim.train.loop import pretrain


class InfiniteGradient(torch.autograd.Function):
    """Identity forward; the gradient that flows back is infinite."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("inf")


def test_infinite_gradients_with_a_finite_loss_are_rolled_back(tmp_path: Path, monkeypatch) -> None:
    real = ToyAutoencoder.forward

    def forward(self, batch, step):
        out = real(self, batch, step)
        return dataclasses.replace(out, loss=InfiniteGradient.apply(out.loss)) if step == 3 else out

    monkeypatch.setattr(ToyAutoencoder, "forward", forward)
    run = pretrain(
        toy_config(tmp_path, "train.keep_every=1", "train.log_every=1", "train.max_steps=6"),
        dataset=ToyVolumes(),
    )
    rows = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert [r["nonfinite/total"] for r in rows] == [0, 0, 0, 1, 1, 1]
    log = (run / "train.log").read_text(encoding="utf-8")
    found = re.search(
        r"non-finite loss or gradients since step 3 \(loss (\S+), grad norm (\S+)\); rolled back",
        log,
    )
    assert found, log
    assert math.isfinite(float(found[1])) and not math.isfinite(
        float(found[2])
    )  # the loss alone looked fine
    assert all(v.isfinite().all() for v in method_state(run).values() if v.is_floating_point())
