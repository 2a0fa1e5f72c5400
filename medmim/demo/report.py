"""`OUT/report.md`: the demo's comparison table, its uncertainty, figures and caveats.

Intervals are bootstrap intervals over the test cases (`medmim.demo.stats`); differences to
scratch are paired. With `noise_floor`, a second scratch run (the next seed: another random
init, other folds and crops) gives the gap that chance alone produces, and a method's gap is
called a difference only when its interval excludes zero AND it is larger than that gap.
The Pretraining section lists each method's `loss/*` terms (kind, from the method's
`loss_terms`; first value and last-10% mean) and
the distillation health of every token family (`medmim.train.health.summarize`: entropy, CE
against ln K, teacher cosines, verdict), read from the logged keys alone; families that stayed
uniform or collapsed are named in the caveats; then each encoder's attention drift, the mean
correlation of its localization attention maps with scratch's, which are its initial maps when
scratch has its architecture and pretraining seed (`Collected.drift`). The full per-command
tables and figures go to OUT/details.md (`medmim report`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medmim.demo import stats
from medmim.demo.collect import Collected, loss_kinds, pretrain_rows
from medmim.demo.config import DemoConfig
from medmim.demo.study import SCRATCH, SCRATCH2, TASK_TITLES
from medmim.eval.report import HEALTH_HEADER, format_value, health_rows, markdown_table
from medmim.train.health import ONE_HOT, SAME_OUTPUT, UNIFORM, summarize

DELTA_ROWS = (
    ("linear", "test AUC"),
    ("finetune", "test AUC"),
    ("localize", "tumor attention ratio"),
    ("segment", "Dice"),
)


def display(label: str) -> str:
    """The name of encoder `label` in the report's tables (e.g. SMART, scratch)."""
    return {SCRATCH: "scratch", SCRATCH2: "scratch (seed+1)"}.get(label, label.upper())


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _ci(e: stats.Estimate | None) -> str:
    if e is None or not np.isfinite(e.value):
        return "–"
    if not np.isfinite(e.low):
        return f"{e.value:.3f}"
    return f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}]"


def _delta(e: stats.Estimate | None, mark: bool = False) -> str:
    if e is None or not np.isfinite(e.low):
        return "–"
    return f"{e.value:+.3f} [{e.low:+.3f}, {e.high:+.3f}]" + (" *" if mark else "")


def _cell(c: Collected, task: str, label: str, name: str) -> str:
    if not c.has(task, label):
        return "–"
    return format_value(c.metrics[(task, label)].get(name))


def _intra_inter(c: Collected, label: str, space: str) -> str:
    m = c.metrics.get(("cluster", label), {})
    intra, inter = m.get(f"{space}/intra"), m.get(f"{space}/inter")
    if not isinstance(intra, dict) or not isinstance(inter, dict) or not inter.get("mean"):
        return "–"
    return f"{intra['mean']:.3g} / {inter['mean']:.3g} = {intra['mean'] / inter['mean']:.3f}"


def results_table(c: Collected) -> str:
    """Rows: task and metric (only the tasks the demo ran); columns: encoders."""
    labs, rows, tasks = c.labels, [], set(c.cfg.tasks)
    folds = {"linear": c.cfg.linear_folds, "finetune": c.cfg.finetune_folds}
    for task in [t for t in ("linear", "finetune") if t in tasks]:
        rows.append(
            [
                f"{TASK_TITLES[task]} ({_plural(c.n_cases(task), 'test nodule')})",
                "test AUC ↑, fold ensemble [95% CI]",
                *[_ci(c.estimate(task, lab)) for lab in labs],
            ]
        )
        rows.append(
            [
                "",
                f"test AUC, mean ± std over {folds[task]} fold(s)",
                *[_cell(c, task, lab, "test/auc") for lab in labs],
            ]
        )
    if "cluster" in tasks:
        rows += _cluster_rows(c)
    if "localize" in tasks:
        rows += _localize_rows(c)
    if "segment" in tasks:
        rows.append(
            [
                f"{TASK_TITLES['segment']} ({c.cfg.segment_train_cases} labelled scans, "
                f"{_plural(c.n_cases('segment'), 'case')})",
                "Dice ↑ (12 classes) [95% CI]",
                *[_ci(c.estimate("segment", lab)) for lab in labs],
            ]
        )
        rows.append(["", "HD95 mm ↓", *[_cell(c, "segment", lab, "val/hd95") for lab in labs]])
    return markdown_table(["task", "metric", *[display(lab) for lab in labs]], rows)


def differences(c: Collected) -> tuple[str, list[str]]:
    """The paired-difference table and one verdict line per (task, method)."""
    methods = [lab for lab in c.labels if lab not in (SCRATCH, SCRATCH2)]
    noise_col = SCRATCH2 in c.labels
    rows, verdicts = [], []
    for task, metric in DELTA_ROWS:
        noise = c.delta(task, SCRATCH2) if noise_col else None
        cells = []
        for lab in methods:
            e = c.delta(task, lab)
            beyond = (
                e is not None
                and e.excludes_zero()
                and (noise is None or abs(e.value) > abs(noise.value))
            )
            cells.append(_delta(e, beyond))
            if e is not None and np.isfinite(e.low):
                word = (
                    ("better" if e.value > 0 else "worse") if beyond else "no resolvable difference"
                )
                verdicts.append(f"{display(lab)}, {TASK_TITLES[task]}: {word} ({e.value:+.3f})")
        rows.append([TASK_TITLES[task], metric, *cells] + ([_delta(noise)] if noise_col else []))
    header = ["task", "metric", *[f"{display(lab)} − scratch" for lab in methods]]
    header += ["scratch (seed+1) − scratch: chance"] if noise_col else []
    return markdown_table(header, rows), verdicts


def _loss_rows(method: str, rows: list[dict[str, Any]], kinds: dict[str, str]) -> list[list[str]]:
    """Each `loss/*` term of a run: its kind (the method's `loss_terms`), first logged value and
    mean over the last 10% of the rows.
    """
    rows = [r for r in rows if any(k.startswith("loss/") for k in r)]
    tail = rows[-max(1, len(rows) // 10) :]
    out = []
    for key in dict.fromkeys(k for r in rows for k in r if k.startswith("loss/")):
        first = next(r[key] for r in rows if key in r)
        last = [r[key] for r in tail if isinstance(r.get(key), (int, float))]
        term = key.split("/", 1)[1]
        out.append(
            [
                display(method),
                term.upper(),
                kinds.get(term, "–"),
                format_value(first),
                format_value(float(np.mean(last)) if last else None),
            ]
        )
    return out


def _cluster_rows(c: Collected) -> list[list[str]]:
    labs = c.labels
    rows = [
        [
            "organ clustering (9 organs)",
            "k-means NMI ↑",
            *[_cell(c, "cluster", lab, "kmeans/nmi") for lab in labs],
        ],
        [
            "",
            "k-means accuracy ↑",
            *[_cell(c, "cluster", lab, "kmeans/hungarian_accuracy") for lab in labs],
        ],
    ]
    for space in ("embedding", "umap", "pca"):
        if any(f"{space}/intra" in c.metrics.get(("cluster", lab), {}) for lab in labs):
            rows.append(
                [
                    "",
                    f"intra / inter distance = ratio ↓ ({space})",
                    *[_intra_inter(c, lab, space) for lab in labs],
                ]
            )
    return rows


def _localize_rows(c: Collected) -> list[list[str]]:
    labs, na = c.labels, "n/a (no attention map)"
    chance = [
        np.mean(list(c.values("localize", lab, "chance_dice").values()) or [np.nan]) for lab in labs
    ]
    return [
        [
            f"{TASK_TITLES['localize']} ({_plural(c.n_cases('localize'), 'case')})",
            "tumor attention ratio ↑ (1 = chance) [95% CI]",
            *[_ci(c.estimate("localize", lab)) if c.has("localize", lab) else na for lab in labs],
        ],
        [
            "",
            f"Dice ↑ (top {100 - c.cfg.localize_percentile:g}% of attention) [95% CI]",
            *[
                _ci(c.estimate("localize", lab, "dice")) if c.has("localize", lab) else "n/a"
                for lab in labs
            ],
        ],
        [
            "",
            "Dice of a random mask of that size",
            *[f"{x:.3f}" if np.isfinite(x) else "–" for x in chance],
        ],
        [
            "",
            "pointing game hit rate ↑",
            *[_cell(c, "localize", lab, "localize/pointing") for lab in labs],
        ],
    ]


def pretraining_section(c: Collected) -> tuple[str, dict[str, list[str]]]:
    """The loss terms of every method (first value, last-10% mean), then each distillation
    family's health (`medmim.train.health.summarize`: entropy, CE against ln K, teacher cosines,
    verdict), and the families that did not learn by verdict ("uniform", "collapsed") for the
    caveats.
    """
    losses, health, stuck = [], [], {"uniform": [], "collapsed": []}
    for m in c.cfg.methods:
        rows, ln_k = pretrain_rows(c.out, m)
        losses += _loss_rows(m, rows, loss_kinds(c.out, m))
        summary = summarize(rows, ln_k)
        health += [[display(m), *row] for row in health_rows(summary)]
        for h in summary.values():
            if h.verdict in stuck:
                stuck[h.verdict].append(f"{display(m)} {h.family}")
    parts = (
        [markdown_table(["method", "loss term", "kind", "first step", "last 10% of steps"], losses)]
        if losses
        else []
    )
    if health:
        parts.append(markdown_table(["method", *HEALTH_HEADER], health))
    return "\n\n".join(parts), stuck


def drift_lines(c: Collected) -> list[str]:
    """The attention-drift paragraph of the Pretraining section (empty without maps to compare)."""
    if not c.drift and not c.drift_skipped:
        return []
    lines = [
        "Attention drift: the Pearson correlation, voxel by voxel over the voxels either map "
        "scores, of each encoder's localization attention map with scratch's on the same "
        "held-out case, averaged over the cases. Valid only where scratch is built with the "
        f"pretraining seed (seed {c.cfg.seed}) and the encoder's architecture: its weights are "
        "then exactly the encoder's weights before its first step, so its maps are the initial "
        "ones; with another seed or architecture the number would mean nothing.",
        "",
    ]
    for lab, r in c.drift.items():
        lines.append(
            f"- {display(lab)}: correlation of the final attention maps with the initial "
            f"ones (scratch, same seed): {np.mean(list(r.values())):.2f} over "
            f"{_plural(len(r), 'case')} (1 = unchanged)"
        )
    lines += [f"- {display(lab)}: not measured ({why})" for lab, why in c.drift_skipped.items()]
    return lines


def _stuck_note(stuck: dict[str, list[str]]) -> str:
    """A sentence on the distillation families that did not learn (empty when all did)."""
    notes = []
    if stuck.get("uniform"):
        notes.append(
            f"{', '.join(stuck['uniform'])} kept near-uniform teacher targets (their CE "
            "at ln K), as at the start of any DINO-style run, so those terms gave no signal yet"
        )
    if stuck.get("collapsed"):
        notes.append(
            f"{', '.join(stuck['collapsed'])} collapsed (the same target for every scan), "
            "so those terms taught nothing that tells scans apart"
        )
    if not notes:
        return ""
    return (
        f" At this budget {'; '.join(notes)} (see Pretraining): the encoders were shaped by "
        "their other loss terms."
    )


def caveats(c: Collected, verdicts: list[str], stuck: dict[str, list[str]] | None = None) -> str:
    """What the numbers can and cannot show, partly computed from them."""
    n_better = sum(": better" in v for v in verdicts)
    n_worse = sum(": worse" in v for v in verdicts)
    resolved = (
        (
            f"Of {len(verdicts)} comparisons with scratch, {n_better} favour the pretrained "
            f"encoder and {n_worse} favour scratch beyond chance; the rest cannot be told apart: "
            + "; ".join(verdicts)
            + "."
        )
        if verdicts
        else "No comparison finished (see the run log)."
    )
    samples = c.cfg.pretrain_steps * c.cfg.batch_size
    seeds = (
        "the last column shows what a second random seed alone changes (init, folds, crops)"
        if SCRATCH2 in c.labels
        else "`noise_floor=true` adds a second scratch seed to show "
        "what chance alone changes (init, folds, crops)"
    )
    return "\n".join(
        [
            f"- **Resolution.** {resolved} Intervals resample test cases only; {seeds}, which the "
            "intervals do not contain.",
            f"- **Budget.** Each method saw {samples} two-view samples ({c.cfg.pretrain_steps} "
            "steps) of a 2.2 M-parameter Swin: minutes of CPU, where the papers train 5-40x larger "
            "models for hundreds of epochs on thousands of scans on GPUs. A pretrained encoder "
            "losing to scratch here says nothing about the method at scale; one winning says the "
            "code learns something transferable, not how much." + _stuck_note(stuck or {}),
            "- **Data.** The phantoms are synthetic (docs/phantoms.md): the malignancy labels "
            "follow the generator's rules, organs are ellipsoids and tubes. Rankings on phantoms "
            "need not hold on patients.",
            "- **Tasks.** Malignancy is learnable but not easy from these crops: on held-out "
            "phantoms the nodule's true volume gives an AUC of about 0.78 and a count of dense "
            "voxels at the crop's centre about 0.7, so no encoder can saturate it. A tumor fills "
            "0.1-1% of the body and the localization mask the top "
            f"{100 - c.cfg.localize_percentile:g}%, so the Dice is near zero for every map (see "
            "the random-mask row); the attention ratio shows whether the tumor is attended more "
            "than the average voxel; an encoder without an attention map ([CLS] or SA block) reads "
            "n/a. Segmentation: few steps, 12 classes (thin airway and ribs included), held-out "
            "phantoms.",
            f"- **Features.** Linear probe and clustering use `{c.cfg.feature}` for every encoder "
            "(the global token each method distils).",
        ]
    )


def _figures(c: Collected, here: Path) -> list[str]:
    """Markdown image lines: loss curves, ROC, 2-D maps, attention, segmentation, views."""

    def img(path: Path, title: str) -> str | None:
        return (
            f"![{title}]({Path(os.path.relpath(path, here)).as_posix()})"
            if path.is_file()
            else None
        )

    def listed(task: str, label: str, limit: int, sub: str = "") -> list[str | None]:
        folder = c.out / "eval" / task / label / sub
        res = (
            json.loads((folder / "results.json").read_text(encoding="utf-8"))
            if (folder / "results.json").is_file()
            else {}
        )
        return [
            img(folder / f["path"], f"{display(label)}: {f.get('title', '')}")
            for f in res.get("figures", [])[:limit]
        ]

    lines: list[str | None] = ["\n### Pretraining loss curves\n"]
    lines += [
        img(c.out / "pretrain" / m / "figures" / "loss_curves.png", f"{m} loss")
        for m in c.cfg.methods
    ]
    lines += ["\n### ROC curves (test nodules, fold ensemble)\n"]
    lines += [img(here / "figures" / f"roc_{t}.png", f"ROC {t}") for t in ("linear", "finetune")]
    lines += ["\n### Organ embeddings in 2-D (UMAP or PCA)\n"]
    lines += [x for lab in c.labels for x in listed("cluster", lab, 1)]
    lines += ["\n### Attention maps (held-out cases) and localization masks\n"]
    lines += [
        x
        for lab in c.labels
        for x in listed("localize", lab, 1, "attention") + listed("localize", lab, 1)
    ]
    lines += ["\n### Segmentation of held-out cases\n"]
    lines += [x for lab in c.labels for x in listed("segment", lab, 1)]
    lines += ["\n### Two training views\n", img(c.out / "figures" / "views.png", "views")]
    return [x for x in lines if x]


def roc_figures(c: Collected, folder: Path) -> None:
    """One ROC figure per classification mode with every encoder's fold-ensemble curve."""
    from sklearn.metrics import roc_curve

    from medmim.eval.plots import plot_roc

    for task in ("linear", "finetune"):
        curves = {}
        for lab in c.labels:
            cases = c.cases.get((task, lab))
            if cases and len({v[0] for v in cases.values()}) == 2:
                y, p = (
                    np.array([v[0] for v in cases.values()]),
                    np.array([v[1] for v in cases.values()]),
                )
                fpr, tpr, _ = roc_curve(y, p)
                curves[display(lab)] = (fpr, tpr, stats.fast_auc(y, p))
        if curves:
            plot_roc(curves, folder / f"roc_{task}.png", f"{TASK_TITLES[task]} (test)")


def write_demo_report(cfg: DemoConfig, out: Path, run_log: str, machine: str) -> Path:
    """Write OUT/report.md (and OUT/figures/roc_*.png); returns its path."""
    c = Collected(cfg, out)
    roc_figures(c, out / "figures")
    table, verdicts = differences(c)
    pre_table, stuck = pretraining_section(c)
    drift = drift_lines(c)
    marker = out / "stages" / "data.json"
    n = json.loads(marker.read_text(encoding="utf-8"))["result"] if marker.is_file() else {}
    title = " vs ".join(display(m) for m in cfg.methods) + " vs no pretraining"
    parts = [
        f"# medmim demo: {title} on synthetic CT phantoms",
        "",
        f"{cfg.phantoms} synthetic CT phantoms: {n.get('pretrain_scans', '?')} for pretraining "
        f"(they also hold the classifiers' {n.get('nodules_train', '?')} training nodules), "
        f"{n.get('held_out_scans', '?')} held out (the {n.get('nodules_test', '?')} test nodules "
        "and the segmentation and localization cases). Each method pretrained for "
        f"{cfg.pretrain_steps} steps x {cfg.batch_size} scans ({cfg.crop}^3 crops at "
        f"{cfg.spacing:g} mm); scratch = the same Swin with random weights. {machine}",
        "",
        "## Results",
        "",
        results_table(c),
        "",
        "Value [2.5, 97.5 percentile bootstrap interval over the test cases; for the nodules, "
        "over their phantoms, since the nodules of one phantom are not independent]; ± is the "
        "standard deviation over folds or classes. ↑ higher is better, ↓ lower is better.",
        "",
        "## Differences to scratch (paired bootstrap over the same test cases or phantoms)",
        "",
        table,
        "",
        (
            "\\* the interval excludes zero and the gap is larger than the two scratch seeds' gap."
            if SCRATCH2 in c.labels
            else "\\* the interval excludes zero. This run has no second scratch seed "
            "(`noise_floor=false`), so a star does not rule out seed noise, which at demo budgets "
            "is as large as most gaps (the default budget's last column measures it). Treat this "
            "run as a smoke test of the pipeline, not as a comparison."
        ),
        "",
        "## What these numbers can and cannot show",
        "",
        caveats(c, verdicts, stuck),
        "",
        *(["## Pretraining", ""] if pre_table or drift else []),
        *(
            [
                "Each loss term, its kind (reconstruction: scored against the voxels; "
                "distillation: a cross-entropy against the EMA teacher over K prototypes), at the "
                "first step and averaged over the last 10% of the logged steps, then each "
                "distillation family (the token family a teacher-student cross-entropy over K "
                "prototypes is taken on): its teacher's target entropy / ln K (1 = uniform), its "
                "CE against ln K (the CE of uniform teacher and student, where DINO-style training "
                "starts; it falls below ln K once the targets carry information), the teacher's "
                "cosine across scans and across the two views of a scan, and a verdict: learning, "
                f"uniform (entropy > {UNIFORM}) or collapsed (< {ONE_HOT}, or cosine across scans "
                f"> {SAME_OUTPUT}: the same output for every scan).",
                "",
                pre_table,
                "",
            ]
            if pre_table
            else []
        ),
        *([*drift, ""] if drift else []),
        "## Figures",
        "",
        *_figures(c, out),
        "",
        "## Run",
        "",
        run_log,
        "",
        "Every command's own tables and figures: [details.md](details.md). Settings: "
        "[demo.json](demo.json).",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
