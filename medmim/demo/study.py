"""The demo study: pretrain each method, then score every encoder on the same four tasks.

Stages (each runs once; see `medmim.demo.stages`):

1. data: phantoms, fingerprint, cache, preview (`medmim.demo.data`);
2. pretrain/<method>: `medmim pretrain --config <method>_demo` at the demo's sizes, then
   `medmim export`; an interrupted run continues from its last checkpoint (`resume=true`);
3. <task>/<encoder> for every encoder (each method's export, and `scratch`: the first
   method's architecture with random weights) and task:
   - linear: nodule malignancy, logistic regression on frozen features (`medmim classify`);
   - finetune: nodule malignancy, the whole encoder fine-tuned (`medmim classify`);
   - cluster: organ crops, intra/inter-class distances, k-means NMI, UMAP (`medmim cluster`);
   - localize: zero-shot tumor localization from the attention map (`medmim localize`), for
     encoders that have one (`has_cls_attention`: a ViT's [CLS], a Swin's SA block);
   - segment: few-label organ segmentation with SwinUNETR (`medmim segment`);
4. report: `OUT/report.md` (`medmim.demo.report`).

Outputs: OUT/pretrain/<method>/ (run directories), OUT/eval/<task>/<encoder>/ (each command's
folder with its results.json), OUT/report.md, OUT/details.md.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medmim.demo.config import TASKS, DemoConfig, preset_demo
from medmim.demo.data import WINDOW, phantom_dir

TASK_TITLES = {
    "linear": "nodule malignancy, linear probe",
    "finetune": "nodule malignancy, fine-tuning",
    "cluster": "organ clustering",
    "localize": "zero-shot tumor localization",
    "segment": "few-label organ segmentation",
}
SCRATCH = "scratch"
SCRATCH2 = "scratch2"  #: scratch under seed + 1: how far two runs differ by chance alone

Stage = tuple[str, str, Callable[[], dict[str, Any] | None]]


def pretrain_overrides(cfg: DemoConfig, method: str, out: Path, resume: bool) -> list[str]:
    """`key=value` overrides of `<method>_demo` that give every method the same data and budget,
    then the preset's own `demo:` section at this crop (`PresetDemo`; its `tiny` sizes under
    the tiny budget), then the user's.
    """
    s, c = float(cfg.spacing), int(cfg.crop)
    warmup = max(1, cfg.pretrain_steps // 10)
    return (
        [
            f"name={method}",
            f"output_dir={out / 'pretrain'}",
            f"resume={str(resume).lower()}",
            f"data.source={phantom_dir(out) / 'demo_pretrain.json'}",
            f"data.cache_dir={out / '.cache'}",
            f"data.recipe.spacing=[{s},{s},{s}]",
            f"data.recipe.window=[{WINDOW[0]},{WINDOW[1]}]",
            f"data.crop_size=[{c},{c},{c}]",
            f"data.batch_size={cfg.batch_size}",
            "data.num_workers=0",
            f"train.seed={cfg.seed}",
            "train.epochs=100000",
            f"train.max_steps={cfg.pretrain_steps}",
            f"optim.warmup_steps={warmup}",
            f"train.ckpt_every={max(10, cfg.pretrain_steps // 5)}",
            f"train.vis_every={max(1, cfg.pretrain_steps // 2)}",
            f"train.log_every={max(1, min(10, cfg.pretrain_steps // 20))}",
            "train.progress=true",
        ]
        + preset_demo(f"{method}_demo").for_crop(c)
        + (preset_demo(f"{method}_demo").tiny if cfg.tiny_model else [])
        + list(cfg.pretrain_overrides)
    )


def pretrain_stage(cfg: DemoConfig, method: str, out: Path) -> dict[str, Any]:
    """Pretrain (or continue) `method` and export its encoder."""
    from medmim.config import load_config
    from medmim.eval.export import export
    from medmim.train.config import RunConfig
    from medmim.train.loop import pretrain

    run_dir = out / "pretrain" / method
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = last.is_file()
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)  # stopped before its first checkpoint: nothing to continue
    if resume:
        print(f"    continuing {run_dir} from {last} (resume=true)", flush=True)
    run_cfg = load_config(
        f"{method}_demo", pretrain_overrides(cfg, method, out, resume), schema=RunConfig
    )
    pretrain(run_cfg)
    export_dir = export(run_dir)
    rows = [
        json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    return {
        "run_dir": str(run_dir.relative_to(out)),
        "export": str(export_dir.relative_to(out)),
        "steps": rows[-1].get("step") if rows else None,
        "final_loss": rows[-1].get("loss") if rows else None,
        "resumed": resume,
    }


def encoder_specs(cfg: DemoConfig, out: Path) -> dict[str, str]:
    """Encoder label -> `--encoder` spec: each method's export, then scratch, the first method's
    architecture (and, with `noise_floor`, scratch again under the next seed: SCRATCH2).
    """
    specs = {m: str(out / "pretrain" / m / "export") for m in cfg.methods}
    specs[SCRATCH] = f"scratch:{specs[cfg.methods[0]]}"
    if cfg.noise_floor:
        specs[SCRATCH2] = specs[SCRATCH]
    return specs


def has_attention(spec: str) -> bool:
    """Whether the encoder has an `attn` map (`has_cls_attention` of its export)."""
    from medmim.eval.export import has_cls_attention, read_export

    folder = Path(spec.split(":", 1)[1] if spec.startswith(f"{SCRATCH}:") else spec)
    return has_cls_attention(read_export(folder)[0])


def _fresh(folder: Path) -> str:
    if folder.exists():
        shutil.rmtree(folder)  # leftovers of an interrupted attempt
    folder.mkdir(parents=True)
    return str(folder)


def task_stage(cfg: DemoConfig, out: Path, task: str, label: str, spec: str) -> dict[str, Any]:
    """Run one downstream command on one encoder; returns its headline metrics."""
    from medmim.eval.classify import ClassifyConfig, run_classify
    from medmim.eval.cluster import ClusterConfig, run_cluster
    from medmim.eval.probe import FinetuneConfig
    from medmim.eval.segment import SegmentConfig, run_segment

    folder, data = out / "eval" / task / label, phantom_dir(out)
    if task == "localize" and not has_attention(spec):
        return {
            "not_applicable": "this encoder has no attention map (a Swin without the "
            "semantic-attention block)"
        }
    dest, seed = _fresh(folder), cfg.seed + (1 if label == SCRATCH2 else 0)
    if task in ("linear", "finetune"):
        ft = FinetuneConfig(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, batch_size=8)
        folds = cfg.linear_folds if task == "linear" else cfg.finetune_folds
        ccfg = ClassifyConfig(
            mode=task,
            folds=folds,
            feature=cfg.feature,
            seed=seed,
            finetune=ft,
            group_key=nodule_groups(cfg, folds),
        )
        return run_classify(spec, data / "demo_nodules.csv", dest, ccfg)
    if task == "cluster":
        return run_cluster(
            spec,
            data / "organmnist3d.npz",
            dest,
            ClusterConfig(feature=cfg.feature, projection=cfg.cluster_projection, seed=seed),
        )
    if task == "localize":
        return localize_task(cfg, data / "demo_tumors.json", Path(dest), spec, seed)
    if task == "segment":
        return run_segment(
            SegmentConfig(
                encoder=spec,
                data=str(data / "demo_organs.json"),
                out=dest,
                roi=[cfg.segment_roi] * 3,
                max_steps=cfg.segment_steps,
                num_samples=1,
                lr=cfg.segment_lr,
                seed=seed,
                max_figures=cfg.max_figures,
            )
        )
    raise ValueError(f"unknown task '{task}'; tasks: {', '.join(TASKS)}")


def nodule_groups(cfg: DemoConfig, folds: int) -> str:
    """Folds keep each phantom's nodules together (`--group-key phantom`) when there are at least
    two training phantoms per fold; with fewer (the `tiny` budget) a grouped fold could train on
    one class only, so the nodules are split individually.
    """
    from medmim.demo.data import split_phantoms

    return (
        "phantom" if split_phantoms(cfg.phantoms, cfg.holdout)[0] >= 2 * max(folds, 2) else "none"
    )


def tumor_attention(attention_dir: Path, datalist: Path, split: str = "test") -> dict[str, float]:
    """Per case: mean attention inside the tumor / mean attention over the scored voxels
    (attention > 0). 1 = no preference, the chance level; > 1 = the tumor is attended more.
    """
    import nibabel as nib
    import numpy as np

    ratios = {}
    for entry in json.loads(datalist.read_text(encoding="utf-8"))[split]:
        name = Path(entry["image"]).name.split(".")[0]
        attn = np.asarray(nib.load(str(attention_dir / f"{name}_attn.nii.gz")).dataobj, np.float32)
        tumor = np.asarray(nib.load(str(datalist.parent / entry["label"])).dataobj) > 0
        seen = attn > 0
        if tumor.any() and seen.any() and attn.shape == tumor.shape:
            ratios[name] = float(attn[tumor].mean() / attn[seen].mean())
    return ratios


def localize_task(
    cfg: DemoConfig, datalist: Path, dest: Path, spec: str, seed: int
) -> dict[str, Any]:
    """`medmim attention` then `medmim localize --attention`, plus the tumor attention ratio."""
    from medmim.eval.attention import AttentionConfig, run_attention
    from medmim.eval.localize import LocalizeConfig, run_localize

    maps = dest / "attention"
    run_attention(
        AttentionConfig(
            encoder=spec,
            data=str(datalist),
            out=str(maps),
            split="test",
            seed=seed,
            max_figures=cfg.max_figures,
        )
    )
    metrics = run_localize(
        LocalizeConfig(
            data=str(datalist),
            out=str(dest),
            attention=str(maps),
            split="test",
            percentile=cfg.localize_percentile,
            seed=seed,
            max_figures=cfg.max_figures,
        )
    )
    ratios = tumor_attention(maps / "attention", datalist)
    with (dest / "tumor_attention.csv").open("w", newline="", encoding="utf-8") as f:
        f.write("case,ratio\n" + "".join(f"{k},{v}\n" for k, v in ratios.items()))
    values = list(ratios.values())
    return {**metrics, "tumor_attention_ratio": sum(values) / len(values) if values else None}


def plan(cfg: DemoConfig, out: Path) -> list[Stage]:
    """Every stage of the study, in order (report excluded)."""
    from medmim.demo.data import data_stage

    stages: list[Stage] = [
        ("data", "data: phantoms -> fingerprint -> cache -> preview", lambda: data_stage(cfg, out))
    ]
    for method in cfg.methods:
        stages.append(
            (
                f"pretrain/{method}",
                f"pretrain {method.upper()} ({cfg.pretrain_steps} steps x {cfg.batch_size} scans, "
                f"{cfg.crop}^3 at {cfg.spacing:g} mm) + export",
                lambda m=method: pretrain_stage(cfg, m, out),
            )
        )
    specs = encoder_specs(cfg, out)
    for task in [t for t in TASKS if t in cfg.tasks]:
        for label, spec in specs.items():
            stages.append(
                (
                    f"{task}/{label}",
                    f"{TASK_TITLES[task]}: {label}",
                    lambda t=task, lab=label, s=spec: task_stage(cfg, out, t, lab, s),
                )
            )
    return stages
