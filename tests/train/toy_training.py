"""A tiny method and dataset that exercise every part of the training engine.

`ToyAutoencoder` ("toy_ae") is a 3D conv masked autoencoder with an EMA teacher, a center buffer
(all-reduced under DDP), a projection head whose `last_layer` is frozen at the start, a
`mask_token` and a `pos_embed` (no weight decay), and randomness from python, numpy and torch
(masks, ratios, noise) so that exact resume must restore every RNG. `ToyVolumes` is an
in-memory dataset with the pretraining items contract and (seed, epoch, index) augmentation.
"""

from __future__ import annotations

import copy
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.data import Dataset

from medmim.methods.base import PretrainMethod
from medmim.registry import METHODS
from medmim.types import StepOutput, TrainContext


class ToyEncoder(nn.Module):
    """Patch-embedding conv + position embedding + mask token + GroupNorm + 1x1 conv."""

    def __init__(
        self,
        name: str = "toy_encoder",
        in_channels: int = 1,
        dim: int = 8,
        patch: int = 4,
        size: int = 16,
    ) -> None:
        super().__init__()
        self.config = {
            "name": name,
            "in_channels": in_channels,
            "dim": dim,
            "patch": patch,
            "size": size,
        }
        grid = size // patch
        self.patch_embed = nn.Conv3d(in_channels, dim, patch, patch)
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, dim, grid, grid, grid))
        self.mask_token = nn.Parameter(torch.zeros(1, dim, 1, 1, 1))
        self.norm = nn.GroupNorm(2, dim)
        self.mix = nn.Conv3d(dim, dim, 1)

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, Any]:
        t = self.patch_embed(x) + self.pos_embed
        if mask is not None:
            t = torch.where(mask[:, None], self.mask_token.expand_as(t), t)
        t = self.mix(F.gelu(self.norm(t)))
        return {"bottleneck": t, "pooled": t.mean((2, 3, 4)), "grid": tuple(t.shape[2:])}


@METHODS.register("toy_ae")
class ToyAutoencoder(PretrainMethod):
    """Masked reconstruction + distillation to an EMA teacher (a miniature SMART)."""

    method_name = "toy_ae"

    def __init__(
        self,
        backbone: dict,
        context: TrainContext | None = None,
        mask_ratio: float = 0.5,
        random_ratio: bool = True,
        noise_std: float = 0.1,
        momentum: float = 0.9,
        center_momentum: float = 0.9,
        index_masks: bool = False,
        nan_at: list[int] | None = None,
    ) -> None:
        super().__init__(context)
        self.student = ToyEncoder(**backbone)
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        dim, patch = self.student.config["dim"], self.student.config["patch"]
        self.head = nn.ModuleDict(
            {"proj": nn.Conv3d(dim, dim, 1), "last_layer": nn.Linear(dim, dim)}
        )
        self.decoder = nn.ConvTranspose3d(dim, self.student.config["in_channels"], patch, patch)
        self.register_buffer("center", torch.zeros(dim))
        self.mask_ratio, self.random_ratio, self.noise_std = mask_ratio, random_ratio, noise_std
        self.momentum, self.center_momentum = momentum, center_momentum
        self.index_masks, self.nan_at = index_masks, set(nan_at or [])
        self.grad_ckpt = False
        self.hang_at = int(os.environ.get("TOY_HANG_AT_STEP", "-1"))
        self.step_sleep = float(os.environ.get("TOY_STEP_SLEEP", "0"))  # signal tests: slow steps

    @property
    def encoder(self) -> nn.Module:
        return self.student

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_ckpt = enable

    def on_encoder_loaded(self) -> None:
        self.teacher.load_state_dict(self.student.state_dict())

    def frozen_parameters(self, step: int) -> list[nn.Parameter]:
        frozen = step < self.context.freeze_last_layer_steps
        return list(self.head["last_layer"].parameters()) if frozen else []

    def forward(self, batch: dict[str, Any], step: int) -> StepOutput:
        if step == self.hang_at:  # the kill/resume test kills the process here
            Path(os.environ["TOY_HANG_MARKER"]).touch()
            time.sleep(600)
        if self.step_sleep:
            time.sleep(self.step_sleep)
        x0, x1 = batch["views"]
        b, grid = x0.shape[0], self.student.patch_embed(x0[:1]).shape[2:]
        ratio = random.uniform(0.3, 0.7) if self.random_ratio else self.mask_ratio
        if self.index_masks:  # per-sample masks from (index, step): independent of batching
            gens = [torch.Generator().manual_seed(int(i) * 100_003 + step) for i in batch["index"]]
            mask = torch.stack([torch.rand(*grid, generator=g) for g in gens]).to(x0.device) < ratio
        else:
            mask = torch.rand(b, *grid, device=x0.device) < ratio
        if self.noise_std:
            x0 = x0 + self.noise_std * float(np.random.uniform(0.5, 1.5)) * torch.randn_like(x0)
        if self.grad_ckpt:
            feats = checkpoint(self.student.forward_features, x0, mask, use_reentrant=False)
        else:
            feats = self.student.forward_features(x0, mask)
        recon = self.decoder(self.head["proj"](feats["bottleneck"]))
        up = F.interpolate(mask[:, None].float(), size=x0.shape[2:])
        err = ((recon - batch["views"][0]) ** 2 * up).sum((1, 2, 3, 4))
        loss_rec = (err / up.sum((1, 2, 3, 4)).clamp(min=1)).mean() / x0.shape[1]  # per-sample mean
        with torch.no_grad():
            target = self.teacher.forward_features(x1)["pooled"]
            self._update_center(target)
        pred = self.head["last_layer"](feats["pooled"])
        loss_dis = ((pred - (target - self.center)) ** 2).mean()
        loss = loss_rec + 0.1 * loss_dis
        if step in self.nan_at:
            loss = loss * float("nan")
        visuals = {
            "view": batch["views"][0][0, 0],
            "mask": up[0, 0],
            "recon": recon[0, 0].detach(),
            "attn": F.interpolate(feats["bottleneck"].norm(dim=1, keepdim=True), size=x0.shape[2:])[
                0, 0
            ].detach(),
        }
        return StepOutput(
            loss,
            {"loss/rec": loss_rec.detach(), "loss/dis": loss_dis.detach(), "mask/ratio": ratio},
            visuals,
        )

    def _update_center(self, target: torch.Tensor) -> None:
        mean = target.mean(0)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(mean)
            mean /= dist.get_world_size()
        self.center.mul_(self.center_momentum).add_((1 - self.center_momentum) * mean)

    @torch.no_grad()
    def on_optimizer_step(self, step: int) -> None:
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.mul_(self.momentum).add_((1 - self.momentum) * s.detach())


class ToyVolumes(Dataset):
    """`n` random volumes; item i of epoch e has flips and noise drawn from (seed, e, i)."""

    in_channels = 1

    def __init__(self, n: int = 16, size: int = 16, seed: int = 0) -> None:
        self.base = torch.rand(
            n, 1, size, size, size, generator=torch.Generator().manual_seed(seed)
        )
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, i)) & 0xFFFF_FFFF)
        views = []
        for _ in range(2):
            v = self.base[i].flip(-1) if torch.rand((), generator=g) < 0.5 else self.base[i]
            views.append(v + 0.05 * torch.randn(v.shape, generator=g))
        return {"views": views, "index": i}


#: options that make the toy's randomness independent of how samples are split into batches
#: (per-sample masks from (index, step), no noise, frozen center): for equivalence tests.
EXACT = (
    "method.random_ratio=false",
    "method.noise_std=0",
    "method.center_momentum=1.0",
    "method.index_masks=true",
)


def toy_config(root: Path, *overrides: str) -> Any:
    """A tiny run config under `root` (16 volumes of 16^3, batch 2: 8 steps per epoch)."""
    base = {
        "name": "toy",
        "output_dir": str(root),
        "model": {"name": "toy_encoder", "dim": 8},
        "method": {"name": "toy_ae"},
        "data": {"batch_size": 2, "crop_size": [16, 16, 16], "num_workers": 0},
        "optim": {"lr": 1e-2, "warmup_epochs": 0.5, "freeze_last_layer_epochs": 0.5},
        "train": {"epochs": 2, "log_every": 2, "vis_every": 0, "ckpt_every": 4, "progress": False},
    }
    return OmegaConf.merge(OmegaConf.create(base), OmegaConf.from_dotlist(list(overrides)))


def method_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """The method weights in a run's last.ckpt."""
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["method"]


SCRIPT = """
import sys
sys.path.insert(0, {toy_dir!r})
import torch
torch.set_num_threads(1)
from toy_training import ToyVolumes, toy_config
from medmim.train.loop import pretrain

cfg = toy_config({root!r}, *sys.argv[1:])
pretrain(cfg, dataset=ToyVolumes())
"""


def write_script(tmp_path: Path, root: Path) -> Path:
    """A script `python run_toy.py key=value ...` that trains the toy method under `root`."""
    path = tmp_path / "run_toy.py"
    path.write_text(
        SCRIPT.format(toy_dir=str(Path(__file__).parent), root=str(root)), encoding="utf-8"
    )
    return path
