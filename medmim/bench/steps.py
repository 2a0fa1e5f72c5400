"""One pretraining step of each method beside the bare encoder passes it cannot avoid.

A *case* is a method built from its preset at one input size, with two callables:

- `step(i)`: `method(batch, i)` + `loss.backward()` + AdamW step (the engine's parameter groups)
  + `on_optimizer_step(i)` (the EMA teacher update), exactly what the training loop does;
- `bare(i)`: the backbone passes of that step: the student's forward + backward on the two
  views (masked with the method's typical ratio; the loss touches every output) and, for
  self-distillation methods, the teacher's forward without gradients. For PUMIT's MIM the ViT
  on one masked view; for PUMIT's tokenizer its forward + backward with an L1 loss.

`step / bare` is what the method adds on top of its encoder (masking, heads, losses,
reconstruction head, optimizer, EMA). Presets: `<method>_demo` up to 64^3, the paper preset
above; the crop (and a ViT's position grid) follow the size.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from medmim.config import load_config, to_dict
from medmim.registry import METHODS
from medmim.train.config import RunConfig
from medmim.train.optim import build_optimizer
from medmim.types import TrainContext

#: masked fraction of the student's cells in the bare pass (a typical step of each method).
BARE_MASK_RATIO = {
    "smart": 0.6,
    "smit": 0.7,
    "ibot": 0.3,
    "attmask": 0.3,
    "mst": 0.3,
    "smart_vit": 0.6,
    "pumit_mim": 0.55,
    "pumit_tokenizer": 0.0,
}
METHODS_ALL = list(BARE_MASK_RATIO)

Amp = Callable[[], AbstractContextManager]


@dataclass
class Case:
    """A built method at one size, its batch, and the step / bare callables."""

    method: str
    preset: str
    size: list[int]
    batch: dict[str, Any]
    net: Any
    step: Callable[[int], None]
    bare: Callable[[int], None]
    facts: dict[str, Any] = field(default_factory=dict)


def preset_for(method: str, size: int) -> str:
    """`<method>_demo` up to 64^3, the paper preset above."""
    return f"{method}_demo" if size <= 64 else method


def _config(method: str, size: int, preset: str | None) -> Any:
    preset = preset or preset_for(method, size)
    base = load_config(preset, schema=RunConfig)
    crop = [int(c) for c in base.data.crop_size]
    if not method.startswith("pumit"):
        crop = [size] * 3
    overrides = [f"data.crop_size=[{crop[0]},{crop[1]},{crop[2]}]"]
    if str(base.model.get("name", "")).startswith("vit"):
        overrides.append(f"model.pos_grid=[{size // 16},{size // 16},{size // 16}]")
    return preset, load_config(preset, overrides, schema=RunConfig), crop


def _step_fn(
    net: Any, optimizer: torch.optim.Optimizer, batch: dict[str, Any], amp: Amp
) -> Callable[[int], None]:
    def run(i: int) -> None:
        with amp():
            out = net(batch, i)
        out.loss.float().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        net.on_optimizer_step(i)

    return run


def _touch_all(feats: Any) -> torch.Tensor:
    if torch.is_tensor(feats):
        return feats.float().mean()
    tensors = [v for v in feats.values() if torch.is_tensor(v) and v.is_floating_point()]
    tensors += [t for t in feats.get("features") or [] if torch.is_tensor(t)]
    return sum(t.float().mean() for t in tensors)


def _teacher_backbone(net: Any) -> Any:
    """The EMA teacher's backbone of a self-distillation method, or None."""
    try:
        return net.teacher["backbone"]
    except (AttributeError, KeyError, TypeError):
        return None


def _bare_fn(net: Any, method: str, batch: dict[str, Any], amp: Amp) -> Callable[[int], None]:
    views = batch["views"]
    if method == "pumit_tokenizer":
        tok, x = net.tokenizer, 2 * views[0] - 1

        def run_tok(i: int) -> None:
            with amp():
                loss = F.l1_loss(tok(x, batch.get("spacing")).recon.float(), x)
            loss.backward()
            tok.zero_grad(set_to_none=True)

        return run_tok
    x = views[0] if method == "pumit_mim" else torch.cat(views)
    student = net.encoder
    grid = (
        student.mask_grid(x.shape)
        if method != "pumit_mim"
        else student.mask_grid(x.shape, batch.get("spacing"))
    )
    mask = torch.rand(len(x), *grid, device=x.device) < BARE_MASK_RATIO[method]
    teacher = _teacher_backbone(net)

    def run(i: int) -> None:
        with amp():
            if teacher is not None:
                with torch.no_grad():
                    teacher(x)
            loss = _touch_all(
                student.forward_features(x, mask)
                if method != "pumit_mim"
                else student.forward_features(x, mask=mask, spacing=batch.get("spacing"))
            )
        loss.backward()
        student.zero_grad(set_to_none=True)

    return run


def _build_method(method: str, cfg: Any, context: TrainContext, tmp: Path) -> Any:
    spec = to_dict(cfg.method)
    if method == "pumit_mim":  # targets from a random tokenizer: same cost as a trained one
        tok_cfg = load_config("pumit_tokenizer_demo", schema=RunConfig)
        tok = METHODS.build(
            to_dict(tok_cfg.method), backbone=to_dict(tok_cfg.model), context=context
        )
        path = tmp / "tokenizer.ckpt"
        torch.save(
            {"encoder": tok.tokenizer.state_dict(), "encoder_config": tok.tokenizer.config}, path
        )
        spec["tokenizer"] = str(path)
    return METHODS.build(spec, backbone=to_dict(cfg.model), context=context)


def build_case(
    method: str,
    size: int,
    batch: int,
    device: torch.device,
    amp: Amp = nullcontext,
    preset: str | None = None,
) -> Case:
    """The method from its preset at `size`, with a batch of `batch` volumes per view.

    Raises:
        ConfigError / KeyError: an unknown method or preset.
    """
    preset, cfg, crop = _config(method, size, preset)
    context = TrainContext(
        steps_per_epoch=100, total_steps=100 * int(cfg.train.epochs or 1), crop_size=tuple(crop)
    )
    with tempfile.TemporaryDirectory() as tmp:
        net = _build_method(method, cfg, context, Path(tmp)).to(device).train()
    optimizer = build_optimizer(net, cfg.optim)
    views = [
        torch.rand(batch, int(cfg.model.get("in_channels", 1)), *crop, device=device)
        for _ in range(2)
    ]
    data: dict[str, Any] = {"views": views, "index": torch.arange(batch, device=device)}
    if method.startswith("pumit"):
        data["spacing"] = torch.ones(batch, 3, device=device)
    facts = {
        "params_trained": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "params_encoder": sum(p.numel() for p in net.encoder.parameters()),
        "model": to_dict(cfg.model).get("name"),
    }
    return Case(
        method,
        preset,
        crop,
        data,
        net,
        _step_fn(net, optimizer, data, amp),
        _bare_fn(net, method, data, amp),
        facts,
    )
