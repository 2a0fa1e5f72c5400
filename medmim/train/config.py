"""Schema of a pretraining run (`medmim pretrain --config PRESET key=value ...`).

`model` and `method` are registry build specs (`name:` plus that entry's options), checked by
the registry when built: `METHODS.build(cfg.method, backbone=dict(cfg.model), context=ctx)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from medmim.data.config import DataConfig


@dataclass
class OptimConfig:
    """AdamW with parameter groups, cosine LR with linear warm-up, weight-decay schedule."""

    lr: float = 8e-4
    min_lr: float = 1e-6
    warmup_epochs: float = 10.0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad: float = 3.0
    freeze_last_layer_epochs: float = 1.0
    accumulate: int = 1


@dataclass
class TrainConfig:
    """Loop settings. `max_steps` (if set) caps the run before `epochs` ends."""

    epochs: int = 100
    max_steps: Optional[int] = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    activation_checkpointing: bool = False
    log_every: int = 10
    vis_every: int = 200
    ckpt_every: int = 200
    keep_every: int = 0
    max_nonfinite: int = 5
    deterministic: bool = False


@dataclass
class RunConfig:
    """A whole pretraining run; saved resolved as `runs/<name>/config.yaml`."""

    name: str = "run"
    output_dir: str = "runs"
    resume: bool = False
    init_from: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: Dict[str, Any] = field(default_factory=lambda: {"name": "swin_demo"})
    method: Dict[str, Any] = field(default_factory=lambda: {"name": "smart"})
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
