"""The demo's data stage: phantoms -> fingerprint -> preprocess + cache -> preview, and the
datalists of the study. The phantoms are split by index into pretraining phantoms (the first
`1 - holdout`) and held-out phantoms; nothing is scored on a phantom seen in pretraining.

Layout under OUT:

```
phantoms/                      medmim data phantoms (images, labels, nodules.csv, ...)
phantoms/demo_pretrain.json    the pretraining phantoms' images (the pretraining source)
phantoms/demo_nodules.csv      nodules.csv with split = train (pretraining phantoms) / test
                               (held out)
phantoms/demo_organs.json      segmentation: a few labelled pretraining phantoms + held-out cases
phantoms/demo_tumors.json      localization: held-out cases ("test")
fingerprint.json               medmim data fingerprint of the images
figures/views.png              two training views of the first scan
.cache/                        preprocessed volumes (shared by the pretraining runs)
```
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from medmim.data.config import RecipeConfig
from medmim.demo.config import DemoConfig

WINDOW = [-750.0, 1750.0]  #: SMART's HU window, used by every encoder of the demo


def recipe_of(cfg: DemoConfig) -> RecipeConfig:
    """The preprocessing recipe of every encoder in the demo (SMART's, at `cfg.spacing`)."""
    return RecipeConfig(spacing=[float(cfg.spacing)] * 3, window=list(WINDOW))


def phantom_dir(out: Path) -> Path:
    """The demo's phantom folder, `out/phantoms`."""
    return out / "phantoms"


def split_phantoms(n: int, holdout: float) -> tuple[int, int]:
    """(pretraining phantoms, held-out phantoms): the last `round(holdout * n)` (at least one
    each) are held out.
    """
    n_hold = min(max(1, round(holdout * n)), n - 1)
    return n - n_hold, n_hold


def _phantom_index(image: str) -> int:
    """'images/phantom_0012.nii.gz' -> 12."""
    return int(Path(image).name.split(".")[0].split("_")[-1])


def _entries(datalist: dict[str, Any]) -> list[dict[str, Any]]:
    """Every case of a generator datalist (all its sections), in phantom order."""
    cases = [e for v in datalist.values() if isinstance(v, list) for e in v]
    return sorted(cases, key=lambda e: _phantom_index(e["image"]))


def write_datalists(cfg: DemoConfig, folder: Path) -> dict[str, int]:
    """Write the demo's datalists next to the generator's; returns their case counts.

    The first phantoms are for pretraining (and hold the classifiers' training nodules and the
    few labelled segmentation scans); the rest are held out: the test nodules and the
    segmentation and localization cases come only from them.
    """
    organs = json.loads((folder / "organs.json").read_text(encoding="utf-8"))
    tumors = json.loads((folder / "tumors.json").read_text(encoding="utf-8"))
    n_train, _ = split_phantoms(len(_entries(organs)), cfg.holdout)
    header = {k: v for k, v in organs.items() if not isinstance(v, list)}
    train = [e for e in _entries(organs) if _phantom_index(e["image"]) < n_train]
    held = [e for e in _entries(organs) if _phantom_index(e["image"]) >= n_train]
    held_tumors = [e for e in _entries(tumors) if _phantom_index(e["image"]) >= n_train]

    def first(cases: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
        return cases[:n] if n > 0 else cases

    datalists = {
        "demo_pretrain": {**header, "training": [{"image": e["image"]} for e in train]},
        "demo_organs": {
            **header,
            "training": train[: cfg.segment_train_cases],
            "validation": first(held, cfg.segment_eval_cases),
        },
        "demo_tumors": {
            **{k: v for k, v in tumors.items() if not isinstance(v, list)},
            "test": first(held_tumors, cfg.localize_eval_cases),
        },
    }
    for name, value in datalists.items():
        (folder / f"{name}.json").write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    with (folder / "nodules.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["split"] = "train" if _phantom_index(r["phantom"]) < n_train else "test"
    with (folder / "demo_nodules.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(
            f, fieldnames=list(rows[0]) if rows else ["image", "label", "split"]
        )
        writer.writeheader()
        writer.writerows(rows)
    return {
        "pretrain_scans": len(train),
        "held_out_scans": len(held),
        "nodules_train": sum(r["split"] == "train" for r in rows),
        "nodules_test": sum(r["split"] == "test" for r in rows),
        "segment_train": len(datalists["demo_organs"]["training"]),
        "segment_eval": len(datalists["demo_organs"]["validation"]),
        "localize_eval": len(datalists["demo_tumors"]["test"]),
    }


def data_stage(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    """Generate the phantoms, fingerprint them, cache the pretraining scans, draw two views."""
    from medmim.data.cache import VolumeCache, cache_records
    from medmim.data.fingerprint import fingerprint, format_summary
    from medmim.data.phantoms import generate_phantoms
    from medmim.data.preview import preview_views
    from medmim.data.sources import resolve_source

    folder = phantom_dir(out)
    print(f"    {cfg.phantoms} synthetic CT phantoms ({cfg.phantom_size}) -> {folder}", flush=True)
    generate_phantoms(
        folder,
        cfg.phantoms,
        seed=cfg.seed,
        size=cfg.phantom_size,
        nodules=tuple(cfg.nodules),
        crop_spacing=cfg.nodule_crop_mm,
        workers=2,
    )
    counts = write_datalists(cfg, folder)
    records = resolve_source(folder / "demo_pretrain.json")
    fp = fingerprint(resolve_source(folder / "images"), seed=cfg.seed)
    (out / "fingerprint.json").write_text(json.dumps(fp, indent=1) + "\n", encoding="utf-8")
    print("    " + format_summary(fp).replace("\n", "\n    "), flush=True)
    cache = VolumeCache(out / ".cache", recipe_of(cfg))
    volumes, errors = cache_records(records, cache, desc="preprocess + cache")
    print(
        f"    {len(volumes)} training scans cached at {cfg.spacing:g} mm, {len(errors)} skipped",
        flush=True,
    )
    png = preview_views(
        records[0],
        recipe_of(cfg),
        out / "figures" / "views.png",
        crop=[cfg.crop] * 3,
        cache_dir=out / ".cache",
        seed=cfg.seed,
    )
    return {
        **counts,
        "cached": len(volumes),
        "skipped": len(errors),
        "preview": str(png.relative_to(out)),
    }
