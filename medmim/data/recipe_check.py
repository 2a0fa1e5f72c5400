"""Does a recipe fit the data? A CT window on MR data, or an MR z-score on CT, stops a run.

A recipe is made for a modality (`recipe_modality`):

- "CT": intensity "ct" with a window that starts below 0, i.e. a window in Hounsfield units
  (every CT preset). A window that starts at 0 or above is a plain linear window on any scale
  (the "medmnist" recipe maps uint8 0..255 to [0, 1]) and is made for no modality in particular.
- "MR": intensity "mr_zscore" (the foreground z-score of nnU-Net's non-CT scheme).
- none: "mr_percentile" (PUMIT's per-scan percentiles, used on CT and MR alike) and "none".

A scan's modality (`scan_modality`) is its DICOM Modality tag when the reader put one in
`meta["modality"]` (CT or MR), else the fingerprint's per-scan rule
`medmim.data.fingerprint.guess_modality` (CT when >= 1% of the voxels lie below -500 HU).

`check_recipe_modality` reads a few scans spread over the source (3 by default) and raises a
`ConfigError` when most of them do not match the recipe's modality; the message names the fix
in the words of the caller (`PRETRAIN_FIXES` for `medmim pretrain`, `EVAL_FIXES` for the
downstream commands).

The evidence is not symmetric: air below -500 proves Hounsfield units, but its absence only
suggests MR. A whole CT scan always holds air (around the body, lungs, bowel), a crop around a
soft-tissue lesion need not; so for crops (`crops=True`: the CSVs of classify / cluster) a CT
recipe on air-free volumes only logs a warning, while an MR recipe on volumes with air is
still an error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from medmim.data.fingerprint import guess_modality
from medmim.data.preprocess import check_recipe
from medmim.data.sources import Record
from medmim.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: How `medmim pretrain` spells the fixes.
PRETRAIN_FIXES = {
    "plan": "data.plan=plan.yaml",
    "recipe": "data.recipe=",
    "force": "data.recipe_check=false",
}
#: How the downstream commands (classify, cluster, segment, attention, localize) spell them.
EVAL_FIXES = {"plan": "--plan plan.yaml", "recipe": "--recipe ", "force": "--force-recipe"}
#: Voxels sampled per scan for the intensity rule.
SAMPLES = 100_000


def recipe_modality(recipe: Any) -> str | None:
    """The modality a recipe is made for: "CT", "MR" or None (see the module docstring)."""
    recipe = check_recipe(recipe)
    if recipe.intensity == "ct" and float(recipe.window[0]) < 0:
        return "CT"
    if recipe.intensity == "mr_zscore":
        return "MR"
    return None


def scan_modality(volume: Any, seed: int = 0) -> tuple[str, str]:
    """(modality, how): the DICOM tag ("dicom") when it says CT or MR, else the intensity
    rule on a uniform sample of the raw voxels ("intensity").
    """
    tag = str(getattr(volume, "meta", {}).get("modality", "") or "").upper()
    if tag in ("CT", "MR"):
        return tag, "dicom"
    values = (volume.numpy() if hasattr(volume, "numpy") else np.asarray(volume)).reshape(-1)
    rng = np.random.default_rng(seed)
    sample = values[rng.integers(0, values.size, size=min(SAMPLES, values.size))]
    return guess_modality(sample), "intensity"


def check_recipe_modality(
    records: Sequence[Record],
    recipe: Any,
    *,
    fixes: dict[str, str] = PRETRAIN_FIXES,
    what: str = "data.recipe",
    source: str = "",
    max_scans: int = 3,
    crops: bool = False,
) -> dict[str, Any]:
    """Read up to `max_scans` scans spread over `records` and compare their modality with the
    recipe's.

    Args:
        records: the source's records.
        recipe: the recipe about to be applied (dataclass, dict or OmegaConf node).
        fixes: how the caller spells the fixes (`PRETRAIN_FIXES`, `EVAL_FIXES`).
        what: what the message calls the recipe ("data.recipe", "the encoder's recipe").
        source: the source, for the message and the `medmim data plan` command it suggests.
        max_scans: how many scans to read.
        crops: the volumes are crops around an object: a CT recipe on air-free crops warns
            instead of raising (see the module docstring).

    Returns:
        {"recipe": "CT" | "MR" | None, "scans": {name: modality}} (no scans read when the
        recipe is made for no modality; unreadable scans are left to the caller's checks).

    Raises:
        ConfigError: most scans read do not match the recipe's modality.
    """
    expected = recipe_modality(recipe)
    found: dict[str, tuple[str, str]] = {}
    if expected is None or not records:
        return {"recipe": expected, "scans": {}}
    picks = sorted({int(i) for i in np.linspace(0, len(records) - 1, min(max_scans, len(records)))})
    for i in picks:
        try:
            found[records[i].name] = scan_modality(records[i].load())
        except DataError:
            continue
    wrong = {name: m for name, m in found.items() if m[0] != expected}
    if found and len(wrong) * 2 > len(found):
        message = _mismatch(recipe, expected, found, wrong, records, fixes, what, source)
        if not (crops and expected == "CT"):
            raise ConfigError(message)
        log.warning("%s (crops without air may still be CT: going on)", message)
    log.debug("recipe for %s; scans checked: %s", expected, found)
    return {"recipe": expected, "scans": {name: m[0] for name, m in found.items()}}


def _mismatch(recipe, expected, found, wrong, records, fixes, what, source) -> str:
    recipe = check_recipe(recipe)
    actual = "MR" if expected == "CT" else "CT"
    if expected == "CT":
        made = f"a CT window ({recipe.window[0]:g}..{recipe.window[1]:g} HU)"
    else:
        made = f"an MR normalisation (intensity={recipe.intensity})"
    how = sorted({m[1] for m in wrong.values()})
    why = (
        "their DICOM Modality tag"
        if how == ["dicom"]
        else (
            "under 1% of the voxels below -500 HU: no air in Hounsfield units"
            if actual == "MR"
            else "1% or more of the voxels below -500 HU: air in Hounsfield units"
        )
    )
    example = next(iter(wrong))
    archive = all(r.array_key is not None for r in records[:1]) and actual == "MR"
    preset = "medmnist" if archive else actual.lower()
    where = source or str(records[0].image)
    return (
        f"{what} applies {made}, but {len(wrong)} of the {len(found)} scans read look like "
        f"{actual} ({why}; e.g. {example}). Write a plan with `medmim data plan {where} --out "
        f"plan.yaml` and use {fixes['plan']}, or use {fixes['recipe']}{preset}; "
        f"{fixes['force']} keeps this recipe"
    )
