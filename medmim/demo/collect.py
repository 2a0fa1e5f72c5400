"""Read the demo's results back: headline metrics, per-case values, estimates and differences.

Every number comes from the commands' own outputs under OUT/eval/<task>/<encoder>/
(results.json, predictions.csv, per_case.csv, localize.csv, tumor_attention.csv), and the
pretraining runs' OUT/pretrain/<method>/metrics.jsonl.

Attention drift: scratch under seed S holds exactly the weights a pretraining run with train.seed=S
started from, when both have the same architecture (tests/eval/test_scratch_is_initial.py). Then
the Pearson correlation of an encoder's localization attention maps with scratch's measures how
far pretraining moved its attention from the initial one (1 = unchanged).
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

ATTN_SUFFIX = "_attn.nii.gz"
#: the per-case value that scores each case-based task (localization: the tumor attention ratio,
#: which moves before the Dice of a thresholded map does).
CASE_KEY = {"segment": "dice", "localize": "attention_ratio"}


def results_of(out: Path, task: str, label: str) -> dict[str, Any] | None:
    """The results.json of `task` for encoder `label` under `out`, or None before it is written."""
    path = out / "eval" / task / label / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_config(out: Path, method: str) -> dict[str, Any]:
    """The resolved config.yaml of `method`'s pretraining run (empty when it has none)."""
    path = out / "pretrain" / method / "config.yaml"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}


def loss_kinds(out: Path, method: str) -> dict[str, str]:
    """What each loss term of `method`'s run is ("reconstruction", "distillation", ...): the
    `loss_terms` of the method its config.yaml names (`method.name`; the label if none).
    """
    from medmim.registry import METHODS

    name = str((run_config(out, method).get("method") or {}).get("name") or method)
    return dict(getattr(METHODS.get(name), "loss_terms", {})) if name in METHODS.names() else {}


def pretrain_rows(out: Path, method: str) -> tuple[list[dict[str, Any]], float | None]:
    """The metrics.jsonl rows of `method`'s pretraining run (empty when it has none) and ln K
    from its config's `method.out_dim`, for runs that did not log `distill/ln_k`.
    """
    run = out / "pretrain" / method
    if not (run / "metrics.jsonl").is_file():
        return [], None
    k = (run_config(out, method).get("method") or {}).get("out_dim")
    return read_metrics(run / "metrics.jsonl"), float(np.log(k)) if isinstance(
        k, int
    ) and k > 1 else None


def _localize_cases(folder: Path, percentile: float) -> dict[str, dict[str, float]]:
    cases = stats.localize_cases(folder, percentile)
    ratio_csv = folder / "tumor_attention.csv"
    if ratio_csv.is_file():
        for line in ratio_csv.read_text(encoding="utf-8").splitlines()[1:]:
            name, value = line.split(",")
            if name in cases:
                cases[name]["attention_ratio"] = float(value)
    return cases


def attention_dir(out: Path, label: str) -> Path:
    """Where the localize stage wrote `label`'s attention maps (`<case>_attn.nii.gz`)."""
    return out / "eval" / "localize" / label / "attention" / "attention"


def attention_correlation(maps: Path, initial: Path) -> dict[str, float]:
    """{case: Pearson r} between the `<case>_attn.nii.gz` maps of two folders, voxelwise.

    r is taken over the voxels either map scores (> 0): outside the recipe's foreground crop
    both maps are 0, and those shared zeros would pull r towards 1. Cases missing from either
    folder, of another shape, or with a constant map are skipped.
    """
    import nibabel as nib

    def load(path: Path) -> np.ndarray:
        return np.asarray(nib.load(str(path)).dataobj, np.float64)

    out = {}
    for path in sorted(maps.glob(f"*{ATTN_SUFFIX}")):
        if not (initial / path.name).is_file():
            continue
        a, b = load(path), load(initial / path.name)
        if a.shape != b.shape:
            continue
        seen = (a > 0) | (b > 0)
        x, y = a[seen], b[seen]
        if x.size > 1 and x.std() > 0 and y.std() > 0:
            out[path.name[: -len(ATTN_SUFFIX)]] = float(np.corrcoef(x, y)[0, 1])
    return out


def _backbone(spec: str) -> dict[str, Any] | None:
    path = Path(spec.split(":", 1)[1] if spec.startswith(f"{SCRATCH}:") else spec) / "encoder.json"
    return json.loads(path.read_text(encoding="utf-8")).get("backbone") if path.is_file() else None


def not_initial(cfg: DemoConfig, out: Path, label: str) -> str:
    """Why scratch's weights are NOT `label`'s weights before pretraining ("" when they are):
    another architecture, another seed (scratch uses the demo's seed), or pretrained init.
    """
    specs = encoder_specs(cfg, out)
    if _backbone(specs[label]) is None or _backbone(specs[label]) != _backbone(specs[SCRATCH]):
        return "another architecture than scratch"
    train = run_config(out, label).get("train") or {}
    if train.get("seed") != cfg.seed:
        return f"pretrained with seed {train.get('seed')}, scratch built with seed {cfg.seed}"
    if train.get("init_from"):
        return "started from pretrained weights (train.init_from)"
    return ""


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
        self.drift: dict[str, dict[str, float]] = {}
        self.drift_skipped: dict[str, str] = {}
        self._attention_drift()

    def _attention_drift(self) -> None:
        """Fill `drift` ({encoder: {case: r}}, `attention_correlation` with scratch's maps) for
        every pretrained encoder whose initial weights scratch holds, and `drift_skipped`
        ({encoder: reason}) for those with maps whose initial weights scratch does not hold.
        """
        initial = attention_dir(self.out, SCRATCH)
        if not initial.is_dir():
            return
        for label in self.cfg.methods:
            if not attention_dir(self.out, label).is_dir():
                continue
            reason = not_initial(self.cfg, self.out, label)
            if reason:
                self.drift_skipped[label] = reason
                continue
            r = attention_correlation(attention_dir(self.out, label), initial)
            if r:
                self.drift[label] = r

    def groups(self, keys: list[str]) -> np.ndarray | None:
        """The phantom of each nodule case id (None when one is unknown): the classification
        intervals resample phantoms, not nodules.
        """
        names = [self.nodule_phantom.get(Path(k).name) for k in keys]
        return None if any(n is None for n in names) else np.asarray(names)

    def has(self, task: str, label: str) -> bool:
        """Whether `task` finished for encoder `label`."""
        return (task, label) in self.metrics

    def values(self, task: str, label: str, key: str | None = None) -> dict[str, float]:
        """{case: value} of a case-based task (`key` of a localization case, default CASE_KEY)."""
        key = key or CASE_KEY.get(task, "dice")
        cases = self.cases.get((task, label)) or {}
        out = {k: (v.get(key, np.nan) if isinstance(v, dict) else v) for k, v in cases.items()}
        return {k: float(v) for k, v in out.items() if np.isfinite(v)}

    def n_cases(self, task: str) -> int:
        """The largest number of per-case values of `task` over the encoders."""
        return max((len(self.cases.get((task, lab)) or {}) for lab in self.labels), default=0)

    def estimate(self, task: str, label: str, key: str | None = None) -> stats.Estimate | None:
        """The task's score with its bootstrap interval (AUC of the fold ensemble, or a mean)."""
        cases = self.cases.get((task, label))
        if not cases:
            return None
        if task in ("linear", "finetune"):
            y = np.array([v[0] for v in cases.values()])
            return stats.auc_ci(
                y, np.array([v[1] for v in cases.values()]), self.cfg.seed, self.groups(list(cases))
            )
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
            return stats.auc_delta(
                y,
                np.array([a[k][1] for k in keys]),
                np.array([b[k][1] for k in keys]),
                self.cfg.seed,
                self.groups(keys),
            )
        xa, xb = stats.paired(self.values(task, label), self.values(task, base))
        return stats.mean_delta(xa, xb, self.cfg.seed) if len(xa) else None
