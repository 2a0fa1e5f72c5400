"""Read the demo's results back: headline metrics, per-case values, estimates and differences.

Every number comes from the commands' own outputs under OUT/eval/<task>/<encoder>/
(results.json, predictions.csv, per_case.csv, localize.csv, tumor_attention.csv), and the
pretraining runs' OUT/pretrain/<method>/metrics.jsonl.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medmim.demo import stats
from medmim.demo.config import TASKS, DemoConfig
from medmim.demo.study import SCRATCH, encoder_specs
from medmim.train.health import read_metrics

#: the per-case value that scores each case-based task (localization: the tumor attention ratio,
#: which moves before the Dice of a thresholded map does).
CASE_KEY = {"segment": "dice", "localize": "attention_ratio"}


def results_of(out: Path, task: str, label: str) -> dict[str, Any] | None:
    path = out / "eval" / task / label / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def pretrain_rows(out: Path, method: str) -> tuple[list[dict[str, Any]], float | None]:
    """The metrics.jsonl rows of `method`'s pretraining run (empty when it has none) and ln K
    from its config's `method.out_dim`, for runs that did not log `distill/ln_k`."""
    run = out / "pretrain" / method
    if not (run / "metrics.jsonl").is_file():
        return [], None
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) if (run / "config.yaml").is_file() else {}
    k = ((cfg or {}).get("method") or {}).get("out_dim")
    return read_metrics(run / "metrics.jsonl"), float(np.log(k)) if isinstance(k, int) and k > 1 else None


def _localize_cases(folder: Path, percentile: float) -> dict[str, dict[str, float]]:
    cases = stats.localize_cases(folder, percentile)
    ratio_csv = folder / "tumor_attention.csv"
    if ratio_csv.is_file():
        for line in ratio_csv.read_text(encoding="utf-8").splitlines()[1:]:
            name, value = line.split(",")
            if name in cases:
                cases[name]["attention_ratio"] = float(value)
    return cases


def _nodule_phantoms(out: Path) -> dict[str, str]:
    """{nodule crop file name: phantom} from the demo's nodule table (empty when missing)."""
    table = out / "phantoms" / "demo_nodules.csv"
    if not table.is_file():
        return {}
    with table.open(newline="", encoding="utf-8") as f:
        return {Path(r["image"]).name: r["phantom"] for r in csv.DictReader(f) if r.get("phantom")}


class Collected:
    """Per-case values and headline metrics of every (task, encoder) that finished."""

    def __init__(self, cfg: DemoConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.labels = list(encoder_specs(cfg, out))
        self.metrics: dict[tuple[str, str], dict[str, Any]] = {}
        self.cases: dict[tuple[str, str], dict[str, Any]] = {}
        for task in TASKS:
            for label in self.labels:
                res = results_of(out, task, label)
                if res is None:
                    continue
                self.metrics[(task, label)] = res["metrics"]
                folder = out / "eval" / task / label
                if task in ("linear", "finetune"):
                    self.cases[(task, label)] = stats.test_predictions(folder)
                elif task == "segment":
                    self.cases[(task, label)] = stats.segment_case_dice(folder)
                elif task == "localize":
                    self.cases[(task, label)] = _localize_cases(folder, cfg.localize_percentile)

        self.nodule_phantom = _nodule_phantoms(out)

    def groups(self, keys: list[str]) -> np.ndarray | None:
        """The phantom of each nodule case id (None when one is unknown): the classification
        intervals resample phantoms, not nodules."""
        names = [self.nodule_phantom.get(Path(k).name) for k in keys]
        return None if any(n is None for n in names) else np.asarray(names)

    def has(self, task: str, label: str) -> bool:
        return (task, label) in self.metrics

    def values(self, task: str, label: str, key: str | None = None) -> dict[str, float]:
        """{case: value} of a case-based task (`key` of a localization case, default CASE_KEY)."""
        key = key or CASE_KEY.get(task, "dice")
        cases = self.cases.get((task, label)) or {}
        out = {k: (v.get(key, np.nan) if isinstance(v, dict) else v) for k, v in cases.items()}
        return {k: float(v) for k, v in out.items() if np.isfinite(v)}

    def n_cases(self, task: str) -> int:
        return max((len(self.cases.get((task, lab)) or {}) for lab in self.labels), default=0)

    def estimate(self, task: str, label: str, key: str | None = None) -> stats.Estimate | None:
        """The task's score with its bootstrap interval (AUC of the fold ensemble, or a mean)."""
        cases = self.cases.get((task, label))
        if not cases:
            return None
        if task in ("linear", "finetune"):
            y = np.array([v[0] for v in cases.values()])
            return stats.auc_ci(y, np.array([v[1] for v in cases.values()]), self.cfg.seed,
                                self.groups(list(cases)))
        values = list(self.values(task, label, key).values())
        return stats.mean_ci(np.array(values), self.cfg.seed) if values else None

    def delta(self, task: str, label: str, base: str = SCRATCH) -> stats.Estimate | None:
        """score(label) - score(base) over the cases both have (paired bootstrap)."""
        a, b = self.cases.get((task, label)), self.cases.get((task, base))
        if not a or not b or label == base:
            return None
        if task in ("linear", "finetune"):
            keys = sorted(set(a) & set(b))
            y = np.array([a[k][0] for k in keys])
            return stats.auc_delta(y, np.array([a[k][1] for k in keys]),
                                   np.array([b[k][1] for k in keys]), self.cfg.seed, self.groups(keys))
        xa, xb = stats.paired(self.values(task, label), self.values(task, base))
        return stats.mean_delta(xa, xb, self.cfg.seed) if len(xa) else None
