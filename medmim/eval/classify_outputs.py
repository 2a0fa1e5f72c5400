"""The tables and figures of `medmim classify` (listed in its results.json).

- `folds.csv`: one row per (fraction, fold, part) with n_train, n and every metric;
- `summary.csv` / `summary.md`: mean +- std over folds per (fraction, part);
- `predictions.csv`: the class probabilities of every evaluated volume;
- `figures/roc.png`: test ROC (else val) at the largest fraction, one curve per fold (binary: the
  positive class; multi-class: the micro-average);
- `figures/fractions.png` (with several fractions): AUC against training fraction.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medmim.eval.labelled import LabelledSet
from medmim.eval.markdown import format_value, markdown_table
from medmim.eval.metrics import CLASSIFICATION_METRICS, classification_metrics, mean_std, roc_curves
from medmim.eval.plots import plot_fractions, plot_roc
from medmim.eval.splits import Split


@dataclass
class Run:
    """One trained (fraction, fold): its split, class probabilities (M, K) and training facts."""

    split: Split
    val: np.ndarray
    test: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def _rows(runs: list[Run], data: LabelledSet) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per (fraction, fold, part) metric rows, and per volume prediction rows."""
    rows, preds = [], []
    for run in runs:
        s = run.split
        for part, index, probs in (("val", s.val, run.val), ("test", s.test, run.test)):
            if len(index) == 0:
                continue
            m = classification_metrics(data.labels[index], probs)
            rows.append(
                {
                    "fraction": s.fraction,
                    "fold": s.fold,
                    "part": part,
                    "n_train": len(s.train),
                    "n": len(index),
                    **m,
                    **run.info,
                }
            )
            for i, p in zip(index, probs):
                preds.append(
                    {
                        "fraction": s.fraction,
                        "fold": s.fold,
                        "part": part,
                        "id": data.ids[i],
                        "label": data.class_names[data.labels[i]],
                        **{f"prob_{n}": float(v) for n, v in zip(data.class_names, p)},
                    }
                )
    return rows, preds


def summarize(rows: list[dict[str, Any]]) -> dict[tuple[float, str], dict[str, dict[str, float]]]:
    """`{(fraction, part): {metric: {"mean", "std"}}}` over folds."""
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["fraction"], r["part"]), []).append(r)
    return {
        key: {m: mean_std([r[m] for r in rs]) for m in CLASSIFICATION_METRICS}
        for key, rs in sorted(groups.items())
    }


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)


def _headline(summary, fractions: list[float]) -> dict[str, dict[str, float]]:
    """`test/auc` (largest fraction) first, then `test/auc@0.5`, ..., then the same for val."""
    top = max(fractions)
    out = {}
    for part in ("test", "val"):
        for fraction in sorted(fractions, reverse=True):
            suffix = "" if fraction == top else f"@{fraction:g}"
            ms = summary.get((fraction, part), {})
            out.update({f"{part}/{m}{suffix}": v for m, v in ms.items()})
    return out


def _figures(
    out: Path, runs: list[Run], data: LabelledSet, summary: dict, fractions: list[float]
) -> list[dict[str, str]]:
    """ROC curves (test, else val; largest fraction; one per fold) and the fraction curve."""
    figures = []
    top = max(fractions)
    part = "test" if any(len(r.split.test) for r in runs) else "val"
    curves = {}
    for run in runs:
        s = run.split
        index, probs = (s.test, run.test) if part == "test" else (s.val, run.val)
        if s.fraction != top or len(np.unique(data.labels[index])) < 2:
            continue
        key = "positive" if data.num_classes == 2 else "micro"
        fpr, tpr = roc_curves(data.labels[index], probs)[key]
        auc = classification_metrics(data.labels[index], probs)["auc"]
        curves[f"fold {s.fold}" + ("" if key == "positive" else " (micro-average)")] = (
            fpr,
            tpr,
            auc,
        )
    if curves:
        plot_roc(curves, out / "figures" / "roc.png", f"ROC ({part}, {top:.0%} of training data)")
        figures.append({"title": f"ROC curves ({part})", "path": "figures/roc.png"})
    if len(fractions) > 1:
        series = {
            p: (
                [summary[(f, p)]["auc"]["mean"] for f in fractions],
                [summary[(f, p)]["auc"]["std"] for f in fractions],
            )
            for p in ("val", "test")
            if (fractions[0], p) in summary
        }
        plot_fractions(fractions, series, out / "figures" / "fractions.png")
        figures.append({"title": "AUC against training fraction", "path": "figures/fractions.png"})
    return figures


def write_outputs(
    out: Path, runs: list[Run], data: LabelledSet
) -> tuple[dict, list[dict], list[dict]]:
    """Tables and figures; returns (headline metrics, tables, figures) for results.json."""
    out.mkdir(parents=True, exist_ok=True)
    rows, preds = _rows(runs, data)
    fractions = sorted({r.split.fraction for r in runs})
    summary = summarize(rows)
    _write_csv(out / "folds.csv", rows)
    _write_csv(out / "predictions.csv", preds)
    flat = [
        {
            "fraction": f,
            "part": p,
            **{f"{m}_{k}": v[k] for m, v in ms.items() for k in ("mean", "std")},
        }
        for (f, p), ms in summary.items()
    ]
    _write_csv(out / "summary.csv", flat)
    md = markdown_table(
        ["fraction", "part", *CLASSIFICATION_METRICS],
        [
            [f"{f:g}", p, *[format_value(ms[m]) for m in CLASSIFICATION_METRICS]]
            for (f, p), ms in summary.items()
        ],
    )
    (out / "summary.md").write_text(md + "\n", encoding="utf-8")
    tables = [
        {"title": "Mean ± std over folds", "path": "summary.md"},
        {"title": "Per fold", "path": "folds.csv"},
    ]
    return _headline(summary, fractions), tables, _figures(out, runs, data, summary, fractions)
