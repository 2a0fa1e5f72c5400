"""Settings of `medmim demo`: one dataclass, three budgets, `key=value` overrides.

The budgets are chosen so that the whole study fits on two CPU cores: `default` (about 12-15
minutes on an idle 2-core machine), `quick` (about 3 minutes; a smoke test without the noise
floor) and `tiny` (seconds; for the tests, the numbers mean nothing); `gpu` is a larger budget
for a machine with a CUDA GPU (3000 pretraining steps at a batch of 16). Every field can be
overridden from the command line, e.g. `medmim demo pretrain_steps=600 phantoms=48`.

Why these sizes (see docs/demo.md for the long version):

- Phantoms are generated at the `small` size (about 3 mm in-plane, 3-6 mm slices) and
  preprocessed to 4 mm isotropic voxels, so that 32^3 crops (128 mm, the field of view of the
  SMART paper's 64^3 crops at 2 mm) train at about half a second per step on a CPU.
- Every method pretrains its `<method>_demo` preset on the same training phantoms, crops, recipe
  (SMART's HU window -750..1750) and number of steps; the default pair, SMART and SMIT, share
  one small Swin (`swin_demo`, 2.2 M parameters), so only the method differs. What a preset
  needs at the demo's crop is its own `demo:` section (`PresetDemo`): the Swin presets mask one
  cell per 8^3 voxels (`model.sa_stage=2`: 4^3 cells per crop), the ViT presets size their
  position grid to the crop.
- "scratch" is the first method's encoder architecture with random weights (seeded).
- Held-out phantoms (the last `holdout` of them) are never seen in pretraining; they hold the
  test nodules and the evaluation cases of segmentation and localization.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from medmim.config import apply_overrides, validate
from medmim.errors import ConfigError, did_you_mean

#: The downstream tasks, in the order they run.
TASKS = ("linear", "finetune", "cluster", "localize", "segment")


@dataclass
class DemoConfig:
    """Everything the demo does; the defaults are the `default` budget.

    Attributes:
        seed: seeds the phantoms, pretraining, splits, fine-tuning and UMAP.
        phantoms: number of phantoms.
        phantom_size: "small" (fast) or "default" (1.2-2 mm, about 8x the voxels).
        holdout: fraction of the phantoms (the last ones) never used in pretraining: the
            test nodules, segmentation and localization cases come from them.
        nodules: [min, max] lung nodules per phantom (the malignancy task's sample size).
        nodule_crop_mm: voxel size of the 32^3 nodule crops (0.75: a 24 mm field of view, so
            the nodule, not its surroundings, dominates a global feature).
        spacing: isotropic voxel size of the preprocessing recipe, mm.
        crop: pretraining view size (voxels per side, a multiple of 32).
        methods: pretraining methods; each uses its `<method>_demo` preset.
        tasks: downstream tasks (a subset of TASKS), run for every encoder.
        pretrain_steps: optimizer steps per method.
        batch_size: scans per pretraining step (two views each).
        pretrain_overrides: extra `key=value` overrides for every pretraining run.
        tiny_model: also apply each preset's `demo.tiny` overrides (a network of a few
            thousand parameters; the `tiny` budget, for tests).
        feature: embedding for the linear probe and clustering ("pooled": the same for all).
        linear_folds: stratified folds of the linear probe.
        finetune_folds: folds of the fine-tuning (1 = a stratified 20% of the training nodules
            validates).
        finetune_epochs: fine-tuning epochs per fold.
        finetune_lr: fine-tuning peak learning rate.
        cluster_projection: "umap" or "pca" for the 2-D map.
        localize_percentile: attention percentile that makes the localization mask.
        segment_train_cases: labelled training phantoms of the few-label segmentation.
        segment_steps: segmentation fine-tuning steps (one 64^3 crop each).
        segment_lr: segmentation peak learning rate (the paper's 1e-4 is for thousands of
            steps; a short run needs more).
        segment_roi: segmentation crop / sliding-window size (SwinUNETR: >= 64).
        segment_eval_cases: held-out phantoms scored in segmentation (0 = all).
        localize_eval_cases: held-out phantoms scored in localization (0 = all).
        noise_floor: also score scratch under the next seed ("scratch2"): the gap between
            the two scratch runs is what chance alone produces at this budget.
        max_figures: overlay figures per command.
        threads: torch CPU threads (0 = torch's default).
    """

    seed: int = 0
    phantoms: int = 40
    phantom_size: str = "small"
    holdout: float = 0.5
    nodules: list[int] = field(default_factory=lambda: [4, 8])
    nodule_crop_mm: float = 0.75
    spacing: float = 4.0
    crop: int = 32
    methods: list[str] = field(default_factory=lambda: ["smart", "smit"])
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    pretrain_steps: int = 250
    batch_size: int = 4
    pretrain_overrides: list[str] = field(default_factory=list)
    tiny_model: bool = False
    feature: str = "pooled"
    linear_folds: int = 5
    finetune_folds: int = 2
    finetune_epochs: int = 4
    finetune_lr: float = 3e-4
    cluster_projection: str = "umap"
    localize_percentile: float = 99.0
    segment_train_cases: int = 4
    segment_steps: int = 40
    segment_lr: float = 1e-3
    segment_roi: int = 64
    segment_eval_cases: int = 8
    localize_eval_cases: int = 12
    noise_floor: bool = True
    max_figures: int = 2
    threads: int = 0


#: Named budgets: overrides of the defaults above.
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "quick": {
        "phantoms": 24,
        "nodules": [3, 5],
        "pretrain_steps": 50,
        "linear_folds": 3,
        "finetune_folds": 1,
        "finetune_epochs": 3,
        "segment_steps": 12,
        "segment_eval_cases": 2,
        "localize_eval_cases": 4,
        "cluster_projection": "pca",
        "noise_floor": False,
    },
    # For a machine with a GPU (`medmim demo --gpu`): 12x the pretraining steps at a batch of 16
    # (at most the 20 pretraining phantoms), longer fine-tuning and segmentation, every held-out
    # case scored. Not measured on a GPU yet.
    "gpu": {
        "pretrain_steps": 3000,
        "batch_size": 16,
        "finetune_epochs": 12,
        "segment_steps": 400,
        "segment_eval_cases": 0,
        "localize_eval_cases": 0,
    },
    "tiny": {
        "phantoms": 4,
        "nodules": [4, 6],
        "pretrain_steps": 2,
        "batch_size": 2,
        "tiny_model": True,  # each preset's demo.tiny: the network's sizes are the method's
        "linear_folds": 2,
        "finetune_folds": 1,
        "finetune_epochs": 1,
        "segment_steps": 1,
        "segment_eval_cases": 1,
        "localize_eval_cases": 1,
        "max_figures": 1,
        "cluster_projection": "pca",
        "noise_floor": False,
    },
}


@dataclass
class PresetDemo:
    """The `demo:` section of a `<method>_demo` preset: what `medmim demo` adds to the preset.

    Attributes:
        overrides: `key=value` overrides, e.g. `[model.sa_stage=2]` (a masking grid fine
            enough for the demo's small crops).
        crop_grid: config key -> cell size in voxels: the key is set to [crop / cell] * 3, e.g.
            `{model.pos_grid: 16}` for a ViT whose position grid must match the crop.
        tiny: overrides of the `tiny` budget (`DemoConfig.tiny_model`): the smallest network of
            this architecture and head, so that a whole study runs in seconds.
    """

    overrides: list[str] = field(default_factory=list)
    crop_grid: dict[str, int] = field(default_factory=dict)
    tiny: list[str] = field(default_factory=list)

    def for_crop(self, crop: int) -> list[str]:
        """The overrides for cubic crops of `crop` voxels."""
        grids = [
            f"{key}=[{crop // cell},{crop // cell},{crop // cell}]"
            for key, cell in self.crop_grid.items()
        ]
        return list(self.overrides) + grids


def preset_demo(preset: str) -> PresetDemo:
    """The `demo:` section of `preset` (and of its `base:` presets); empty if it has none.

    Raises:
        ConfigError: an unknown key or a bad value in the section (with the closest name).
    """
    from medmim.config import load_preset

    section = load_preset(preset).get("demo") or {}
    try:
        return OmegaConf.to_object(validate(OmegaConf.create(section), PresetDemo))
    except ConfigError as exc:
        raise ConfigError(f"preset '{preset}', section 'demo': {exc}") from exc


def demo_config(
    profile: str = "default", overrides: list[str] | tuple[str, ...] = ()
) -> DemoConfig:
    """The settings of a budget, with `key=value` overrides (values parsed as YAML).

    Raises:
        ConfigError: an unknown profile or key, a bad value (with the closest name).
    """
    if profile not in PROFILES:
        raise ConfigError(
            f"demo budget '{profile}' is unknown.{did_you_mean(profile, list(PROFILES))} "
            f"Budgets: {', '.join(PROFILES)}"
        )
    node = validate(OmegaConf.create(PROFILES[profile]), DemoConfig)
    node = validate(apply_overrides(node, list(overrides)), DemoConfig)
    cfg = OmegaConf.to_object(node)
    check(cfg)
    return cfg


def check(cfg: DemoConfig) -> None:
    """Values the pipeline cannot run with, named with the fix."""
    problems = []
    if cfg.crop % 32 or cfg.crop < 32:
        problems.append(f"crop={cfg.crop}: give a multiple of 32 (the Swin's total stride)")
    if cfg.segment_roi % 32 or cfg.segment_roi < 64:
        problems.append(f"segment_roi={cfg.segment_roi}: SwinUNETR needs a multiple of 32, >= 64")
    if cfg.phantoms < 4:
        problems.append(f"phantoms={cfg.phantoms}: at least 4 (pretraining and held-out phantoms)")
    if not 0 < cfg.holdout < 1:
        problems.append(f"holdout={cfg.holdout}: a fraction in (0, 1), e.g. 0.5")
    if cfg.phantom_size not in ("small", "default"):
        problems.append(f"phantom_size={cfg.phantom_size}: 'small' or 'default'")
    if cfg.feature not in ("auto", "cls", "pooled", "patch_mean"):
        problems.append(f"feature={cfg.feature}: one of auto, cls, pooled, patch_mean")
    if len(cfg.nodules) != 2 or not 1 <= cfg.nodules[0] <= cfg.nodules[1]:
        problems.append(f"nodules={cfg.nodules}: give [min, max] with 1 <= min <= max")
    for name in (
        "pretrain_steps",
        "batch_size",
        "linear_folds",
        "finetune_folds",
        "finetune_epochs",
        "segment_train_cases",
        "segment_steps",
    ):
        if getattr(cfg, name) < 1:
            problems.append(f"{name}={getattr(cfg, name)}: must be at least 1")
    unknown = [t for t in cfg.tasks if t not in TASKS]
    if unknown or not cfg.methods:
        problems.append(
            f"tasks={cfg.tasks}: choose from {', '.join(TASKS)}{did_you_mean(unknown[0], TASKS)}"
            if unknown
            else "methods=[]: give at least one method, e.g. methods=[<name>] "
            "with a <name>_demo preset"
        )
    train = cfg.phantoms - min(max(1, round(cfg.holdout * cfg.phantoms)), cfg.phantoms - 1)
    if cfg.batch_size > train:
        problems.append(
            f"batch_size={cfg.batch_size}: at most the {train} pretraining phantoms "
            f"(phantoms={cfg.phantoms}, holdout={cfg.holdout}); lower it or add phantoms"
        )
    if problems:
        raise ConfigError("medmim demo: " + "; ".join(problems))


def as_dict(cfg: DemoConfig) -> dict[str, Any]:
    """A JSON-able copy (what `OUT/demo.json` holds)."""
    return dataclasses.asdict(cfg)
