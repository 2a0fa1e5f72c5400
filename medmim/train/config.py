"""Schema of a pretraining run (`medmim pretrain --config PRESET key=value ...`).

`model` and `method` are registry build specs (`name:` plus that entry's options), checked by
the registry when built: `METHODS.build(cfg.method, backbone=dict(cfg.model), context=ctx)`.

Steps are optimizer steps. One epoch is `steps_per_epoch = (len(dataset) // world_size //
data.batch_size) // optim.accumulate` steps; the run lasts `total_steps = epochs *
steps_per_epoch`, or `train.max_steps` if that is smaller. Every schedule (learning rate, weight
decay, the last-layer freeze, the methods' own) is a pure function of the step over
`total_steps`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from medmim.data.config import DataConfig

#: parameter-name fragments that never get weight decay (tokens and embeddings; norms and
#: biases are caught by `ndim <= 1`). The names used by our backbones, MONAI and timm.
NO_DECAY_KEYS = [
    "cls_token",
    "mask_token",
    "pos_embed",
    "absolute_pos_embed",
    "relative_position_bias_table",
    "register_tokens",
]


@dataclass
class OptimConfig:
    """AdamW with parameter groups, cosine LR with linear warm-up, weight-decay schedule.

    Attributes:
        base_lr: the learning rate per 256 samples: with `lr_scaling="linear"` the peak learning
            rate is `base_lr * global_batch / 256`, global_batch = `data.batch_size *
            accumulate * world_size` (the DINO/iBOT rule, lr = 5e-4 x batch / 256: Caron et al.
            2021, Sec. 4; Zhou et al. 2022). With `lr_scaling="none"` it is the peak itself.
        lr_scaling: "linear" (default) or "none" (an absolute learning rate).
        lr: the peak learning rate actually used. Leave it null: medmim resolves it from
            `base_lr` at the start of the run, logs it and writes it into config.yaml. A value
            set here is used as it is (absolute; `base_lr` and `lr_scaling` are then ignored).
        min_lr: learning rate at the last step (cosine decay from `lr`; absolute, not scaled).
        warmup_epochs: linear warm-up from 0 to `lr`, in epochs (fractions allowed).
        warmup_steps: the warm-up in optimizer steps; when set (not null) it overrides
            `warmup_epochs`. For runs counted in steps (PUMIT: 25k tokenizer / 10k MIM steps),
            where an "epoch" of a with-replacement sampler has no fixed meaning.
        weight_decay: weight decay at step 0 ...
        weight_decay_end: ... cosine-scheduled to this value at the last step (DINO/iBOT).
        betas: AdamW (beta1, beta2).
        clip_grad: gradient clipping threshold; 0 disables clipping.
        clip_mode: "per_param" clips each parameter's gradient norm to `clip_grad` on its own
            (the `clip_gradients` of the DINO/iBOT/SMART code); "global" clips the norm of all
            gradients together (`torch.nn.utils.clip_grad_norm_`).
        freeze_last_layer_epochs: for this many epochs the gradients of the method's
            `frozen_parameters` (the projection heads' last layers) are dropped, so they keep
            their initial values (DINO's `cancel_gradients_last_layer`); the method reads it
            as `TrainContext.freeze_last_layer_steps`.
        accumulate: micro-batches per optimizer step (gradient accumulation); the effective
            batch is `data.batch_size * accumulate * world_size`.
        no_decay_keys: parameter-name fragments excluded from weight decay, besides every
            parameter with `ndim <= 1` (norms, biases) and the method's `no_weight_decay()`.
    """

    base_lr: float = 5e-4
    lr_scaling: str = "linear"
    lr: Optional[float] = None
    min_lr: float = 1e-6
    warmup_epochs: float = 10.0
    warmup_steps: int | None = None
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad: float = 3.0
    clip_mode: str = "per_param"
    freeze_last_layer_epochs: float = 1.0
    accumulate: int = 1
    no_decay_keys: list[str] = field(default_factory=lambda: list(NO_DECAY_KEYS))


@dataclass
class TrainConfig:
    """Loop settings. `max_steps` (if set) caps the run before `epochs` ends.

    Attributes:
        epochs: passes over the dataset.
        max_steps: if set, the run (and its schedules) lasts min(this, epochs * steps/epoch).
        seed: seeds model init, data order, augmentations and masks; process `r` of a
            distributed run draws its masks from `seed + r`.
        device: "auto" (CUDA `LOCAL_RANK` if available, else CPU), "cpu", "cuda", "cuda:N".
        precision: "auto" (bf16 autocast on CUDA, fp32 elsewhere), "fp32", "bf16" or "fp16"
            (fp16 uses a gradient scaler).
        compile: `torch.compile` the method in place (state-dict keys unchanged).
        activation_checkpointing: ask the method (or its encoder) to recompute activations in
            the backward pass via `set_grad_checkpointing(True)`; warns if it has none.
        log_every: steps between lines in metrics.jsonl / TensorBoard / train.log.
        vis_every: steps between progress PNGs in figures/ (0 = never).
        ckpt_every: steps between writes of checkpoints/last.ckpt (also written at the end).
        keep_every: steps between kept copies checkpoints/step-XXXXXX.ckpt (0 = none).
        max_nonfinite: a non-finite loss or gradient is found at the next check step (a
            logging or checkpoint step), which rolls the run back to the last state seen to
            give a finite loss (medmim/train/guard.py); this many roll-backs in a row, with no
            progress in between, stop the run (last.ckpt then holds that state).
        deterministic: `torch.use_deterministic_algorithms(True)` (slower; exact reruns on GPU).
        progress: tqdm progress bar on rank 0.
        find_unused_parameters: DDP option; true is safe for methods whose forward leaves some
            trainable parameters unused; false is faster when every parameter gets a gradient.
        dist_backend: "auto" (nccl on CUDA, gloo on CPU), "nccl" or "gloo".
    """

    epochs: int = 100
    max_steps: int | None = None
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
    progress: bool = True
    find_unused_parameters: bool = True
    dist_backend: str = "auto"


@dataclass
class RunConfig:
    """A whole pretraining run; saved resolved as `runs/<name>/config.yaml`.

    Attributes:
        name: the run directory's name under `output_dir`.
        output_dir: parent folder of run directories.
        resume: continue the run in `output_dir/name` exactly from checkpoints/last.ckpt.
        init_from: start a NEW run from pretrained encoder weights: a checkpoint file, a run
            directory, or an exported encoder directory (encoder.safetensors + encoder.json).
        data: the data source and views (medmim/data/config.py).
        model: the backbone's registry build spec (`name` + options).
        method: the method's registry build spec (`name` + options); no default: a preset or
            `method.name=...` names it.
        optim: optimizer and schedules.
        train: loop settings.
    """

    name: str = "run"
    output_dir: str = "runs"
    resume: bool = False
    init_from: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"name": "swin_demo"})
    method: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    #: `load_config` applies `data.plan=...` before the other overrides, which then win.
    config_first: ClassVar[tuple[str, ...]] = ("data.plan",)

    @staticmethod
    def config_shortcut(key: str, value: Any) -> Any:
        """`data.recipe=mr` / `=ct` / `=<preset>` -> that preset's fields (did-you-mean)."""
        from medmim.data.plan import recipe_shortcut

        return recipe_shortcut(key, value)

    @staticmethod
    def config_prepare(cfg: Any) -> Any:
        """Before validation: `data.recipe: <preset>` in YAML and `data.plan` (medmim.data.plan);
        a preset's `demo` section (what `medmim demo` adds to the preset) is not a run setting.
        """
        from medmim.data.plan import prepare_run_config

        if "demo" in cfg:
            cfg.pop("demo")
        return prepare_run_config(cfg)
