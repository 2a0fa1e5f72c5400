"""Plan: the recipe and crop size a source should be trained with, from its fingerprint (the
fingerprint -> plan step of nnU-Net, with medmim's own rules).

`make_plan(fingerprint(records))` decides, and `write_plan` keeps it as a commented YAML file
that a person can read and edit; `medmim pretrain ... data.plan=plan.yaml` and the downstream
commands' `--plan plan.yaml` apply it (`apply_plan`, `plan_recipe`).

Rules:

- Modality: the fingerprint's, i.e. the majority of the scans (each scan: its DICOM Modality tag
  where the reader gives one, else the intensity rule `guess_modality`).
- Recipe: CT gets the default CT recipe ("smart": the HU window -750..1750 -> [0, 1], foreground
  = the body above the window floor); MR gets the "mr" recipe: the foreground z-score after
  clipping to the 0.5 / 99.5 percentiles of the foreground (`medmim.data.preprocess`). Both
  reorient to RAS and resample to the target spacing.
- Target spacing, per RAS axis: the median of the scans' spacings, which keeps a typical scan
  at about its own resolution. When the median spacing is strongly anisotropic (its largest
  axis more than `ANISOTROPY` = 3 times its smallest: thick slices), the coarse axis gets the
  10th percentile of its spacings instead. The median would then drag the scans with thinner
  slices down to the thick slices of the others and lose most of their through-plane detail;
  the 10th percentile keeps that detail and only interpolates the thick-slice scans more
  finely than they were acquired.
- Crop size: the median scan size after resampling (size x spacing / target, per scan), cut to
  a multiple of 32 and capped at `max_crop` (96 by default), at least 32. 32 is what a Swin
  input needs (patch 2, then four 2x patch mergings: `medmim.models.swin`) and a multiple of
  the ViT's patch 16, so one crop fits both; `crop_size_vit` is the finer multiple of 16 for
  ViT-only use. The foreground crop makes scans smaller than this size estimate, and crops
  larger than a scan are padded with the background (`medmim.data.views`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medmim import __version__
from medmim.data.preprocess import check_recipe, preset_fields, recipe_dict
from medmim.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ANISOTROPY = 3.0
#: The recipe fields a plan sets; the others (pad_to, cache_dtype) stay the preset's.
PLAN_FIELDS = {
    "CT": ("orientation", "spacing", "intensity", "window", "foreground_crop"),
    "MR": ("orientation", "spacing", "intensity", "percentiles", "foreground_crop"),
}
_RAS = {"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}


def make_plan(fp: dict[str, Any], source: str = "", max_crop: int = 96) -> dict[str, Any]:
    """A plan (JSON-able dict) from a `medmim.data.fingerprint.fingerprint` result.

    Raises:
        DataError: the fingerprint found no readable scan.
    """
    if not fp.get("num_readable"):
        raise DataError(source or "source", "no readable scan to plan from (see the fingerprint)")
    cases = fp["cases"]
    spacings = np.array([to_ras(c["spacing"], c.get("orientation", "RAS")) for c in cases])
    shapes = np.array([to_ras(c["shape"], c.get("orientation", "RAS")) for c in cases])
    target, anisotropic = target_spacing(spacings)
    resampled = np.median(shapes * spacings / np.asarray(target), axis=0)
    modality = "CT" if fp["modality"] == "CT" else "MR"
    preset = "smart" if modality == "CT" else "mr"
    fields = preset_fields(preset)
    recipe = {k: fields[k] for k in PLAN_FIELDS[modality]}
    recipe["spacing"] = [round(float(s), 3) for s in target]
    return {
        "source": str(source),
        "modality": modality,
        "modality_votes": dict(fp.get("modality_votes", {})),
        "modality_from": dict(Counter(c.get("modality_source", "intensity") for c in cases)),
        "num_scans": int(fp["num_readable"]),
        "num_unreadable": int(fp.get("num_unreadable", 0)),
        "spacing": {
            "median": [round(float(s), 4) for s in np.median(spacings, axis=0)],
            "target": list(recipe["spacing"]),
            "anisotropic": anisotropic,
        },
        "shape": {
            "median": [int(s) for s in np.median(shapes, axis=0)],
            "median_resampled": [int(round(float(s))) for s in resampled],
        },
        "preset": preset,
        "recipe": recipe,
        "crop_size": crop_size(resampled, 32, max_crop),
        "crop_size_vit": crop_size(resampled, 16, max_crop),
        "medmim_version": __version__,
    }


def to_ras(values: Sequence[float], orientation: str) -> list[float]:
    """Per-array-axis values (spacing, shape) in RAS axis order (x, y, z), from the file's
    axcodes ("PSR": array axis 0 runs along y, axis 1 along z, axis 2 along x).
    """
    codes = str(orientation).upper()
    if len(codes) != 3 or sorted(_RAS.get(c, -1) for c in codes) != [0, 1, 2]:
        return [float(v) for v in values]
    out = [0.0, 0.0, 0.0]
    for value, code in zip(values, codes):
        out[_RAS[code]] = float(value)
    return out


def target_spacing(spacings: np.ndarray) -> tuple[list[float], bool]:
    """(target spacing per RAS axis, anisotropic?) from (N, 3) scan spacings (module docstring)."""
    median = np.median(spacings, axis=0)
    anisotropic = bool(median.max() > ANISOTROPY * median.min())
    target = median.copy()
    if anisotropic:
        axis = int(np.argmax(median))
        target[axis] = np.percentile(spacings[:, axis], 10)
    return [float(t) for t in target], anisotropic


def crop_size(size: Sequence[float], multiple: int, cap: int) -> list[int]:
    """Per axis the largest multiple of `multiple` <= min(size, cap), at least `multiple`."""
    top = max(multiple, int(cap) // multiple * multiple)
    return [int(min(top, max(multiple, int(s) // multiple * multiple))) for s in size]


def write_plan(plan: dict[str, Any], path: str | Path) -> Path:
    """Write the plan as YAML with a commented header that says how to use it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# medmim plan of {plan['source']} "
        "(medmim data plan; see medmim/data/plan.py for the rules)\n"
        f"# {plan['modality']}: recipe '{plan['preset']}' at {plan['spacing']['target']} mm.\n"
        "# Edit freely. Use it with:\n"
        "#   medmim pretrain --config smart data.source=... data.plan=THIS_FILE\n"
        "#   medmim segment|classify|cluster|attention|localize ... --plan THIS_FILE\n"
    )
    path.write_text(
        header + yaml.safe_dump(plan, sort_keys=False, default_flow_style=None), encoding="utf-8"
    )
    return path


def load_plan(path: str | Path) -> dict[str, Any]:
    """Read a plan file; its recipe must be a valid (partial) recipe.

    Raises:
        ConfigError: a missing or unreadable file, or a plan without a valid `recipe`.
    """
    from medmim.config import load_yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"plan file '{path}' not found; write one with `medmim data plan SOURCE --out {path}`"
        )
    plan = load_yaml(path)
    if not isinstance(plan.get("recipe"), dict):
        raise ConfigError(f"{path}: a plan needs a 'recipe' mapping (see `medmim data plan`)")
    try:
        check_recipe(plan["recipe"])
    except ConfigError as exc:
        raise ConfigError(f"{path}: recipe: {exc}") from exc
    crop = plan.get("crop_size")
    if crop is not None and (len(crop) != 3 or min(int(c) for c in crop) < 1):
        raise ConfigError(f"{path}: crop_size={crop}: give 3 positive sizes")
    return plan


def plan_recipe(path: str | Path, base: Any = None) -> dict[str, Any]:
    """The recipe of a plan file over `base` (default: the default recipe), as `recipe_dict`."""
    merged = {**recipe_dict(base if base is not None else {}), **load_plan(path)["recipe"]}
    return recipe_dict(merged)


def apply_plan(cfg: Any, path: str | Path) -> Any:
    """Fill a run config's `data.recipe` and `data.crop_size` from a plan, in place.

    The plan's recipe fields replace the config's (`pad_to`, `cache_dtype` and any field the
    plan leaves out stay); in `data.mode=native` (PUMIT) the spacing stays null and the crop
    size the preset's, since those scans keep their native spacing. `data.plan` is emptied:
    the config now holds everything the plan said.
    """
    from omegaconf import OmegaConf

    plan = load_plan(path)
    recipe = dict(plan["recipe"])
    native = str(OmegaConf.select(cfg, "data.mode", default="views")) == "native"
    if native:
        recipe.pop("spacing", None)
    OmegaConf.update(cfg, "data.recipe", recipe, merge=True)
    if plan.get("crop_size") and not native:
        OmegaConf.update(cfg, "data.crop_size", [int(c) for c in plan["crop_size"]], merge=False)
    OmegaConf.update(cfg, "data.plan", "", merge=False)
    log.info(
        "data.plan %s: %s, recipe %s%s",
        path,
        plan.get("modality", "?"),
        recipe,
        "" if native else f", crop_size {plan.get('crop_size')}",
    )
    return cfg


def format_plan(plan: dict[str, Any]) -> str:
    """A few readable lines of a plan."""
    r, s = plan["recipe"], plan["spacing"]
    how = ", ".join(f"{k} x{v}" for k, v in plan["modality_from"].items())
    norm = (
        f"HU window {r['window'][0]:g}..{r['window'][1]:g} -> [0, 1]"
        if r["intensity"] == "ct"
        else f"foreground z-score, clipped to percentiles {r['percentiles']}"
    )
    return "\n".join(
        [
            f"modality: {plan['modality']} {plan['modality_votes']} (from: {how})",
            f"recipe: '{plan['preset']}' ({norm})",
            f"spacing: median {s['median']} mm -> target {s['target']} mm"
            + (" (anisotropic: 10th percentile on the coarse axis)" if s["anisotropic"] else ""),
            f"shape: median {plan['shape']['median']} -> "
            f"{plan['shape']['median_resampled']} resampled",
            f"crop_size: {plan['crop_size']} (Swin and ViT), ViT only: {plan['crop_size_vit']}",
        ]
    )


def prepare_run_config(cfg: Any) -> Any:
    """Before a run config is validated: `data.recipe: mr` (a preset name where the recipe's
    fields belong) becomes that preset's fields, then `data.plan` is applied (`apply_plan`).
    """
    from omegaconf import OmegaConf

    recipe = OmegaConf.select(cfg, "data.recipe", default=None)
    if isinstance(recipe, str):
        OmegaConf.update(cfg, "data.recipe", preset_fields(recipe), merge=False)
    plan = OmegaConf.select(cfg, "data.plan", default=None)
    if isinstance(plan, str) and plan:
        apply_plan(cfg, plan)
    return cfg


def recipe_shortcut(key: str, value: Any) -> Any:
    """An override's value with `data.recipe=NAME` expanded to the preset's fields."""
    if key == "data.recipe" and isinstance(value, str):
        return preset_fields(value)
    return value
