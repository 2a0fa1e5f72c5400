"""GPU checks (marked `gpu`: skipped without CUDA, see tests/conftest.py). One step of every
method in bf16 autocast against fp32 on the same weights and batch, and the demo's GPU profile
end to end."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "methods"))
from method_helpers import BACKBONE_OF, build, make_batch  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", sorted(BACKBONE_OF))
def test_bf16_step_matches_fp32(name: str) -> None:
    torch.manual_seed(0)
    fp32 = build(name).cuda()
    bf16 = copy.deepcopy(fp32)
    batch = {
        k: [v.cuda() for v in x] if isinstance(x, list) else x.cuda()
        for k, x in make_batch(batch_size=2).items()
    }
    losses = {}
    for label, method, dtype in (("fp32", fp32, None), ("bf16", bf16, torch.bfloat16)):
        torch.manual_seed(1)  # the same masks and noise in both
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = method(batch, step=1)
        out.loss.float().backward()
        losses[label] = float(out.loss.detach())
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in method.parameters()), (
            label
        )
    assert math.isfinite(losses["bf16"])
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05, abs=0.05), losses


@pytest.mark.slow
def test_demo_gpu_profile_end_to_end(tmp_path: Path) -> None:
    from medmim.cli.main import main

    assert main(["demo", "--gpu", "--out", str(tmp_path / "demo")]) == 0
    assert (tmp_path / "demo" / "report.md").is_file()
