"""`results.json`: what every downstream command leaves behind, and the report that gathers them.

Every downstream command (`classify`, `cluster`, `segment`, `attention`, `localize`,
`reconstruct`, ...) writes `OUT/results.json` with `write_results`, so that `medmim report`
can put any of them side by side. The schema (version 1) is fixed:

```json
{
  "schema": 1,
  "command": "classify",                      // the medmim command that wrote it
  "encoder": {"spec": "runs/smart/export",    // what --encoder said
              "method": "smart",              // encoder.json "method", or "scratch"
              "backbone": "swin",             // backbone build-spec name
              "pretrained": true},            // false for scratch:...
  "data": "nodules.csv",                      // the input it ran on
  "metrics": {                                // headline numbers, flat names
    "test/auc": {"mean": 0.81, "std": 0.03},  // a mean +- std over folds / cases / classes
    "test/auc@0.25": {"mean": 0.70, "std": 0.05},
    "kmeans/nmi": 0.64                        // or a plain number
  },
  "tables": [{"title": "Per fold", "path": "folds.csv"}],          // CSV or Markdown, relative
  "figures": [{"title": "ROC (test)", "path": "figures/roc.png"}], // PNG, relative to OUT
  "config": {...},                            // the command's options, JSON-able
  "medmim_version": "0.1.0",
  "created": "2025-01-01T12:00:00"
}
```

Metric names are `<split or group>/<metric>` with an optional `@<setting>` suffix; values are
floats or `{"mean": float, "std": float}` (NaN is written as null). Paths are relative to the
results file's folder.
A command that writes no table or figure gives an empty list, never omits the key.

`medmim report RUN_DIR... --out report.md` finds every `results.json` under each RUN_DIR (and
the `metrics.jsonl` + `figures/*.png` of a pretraining run), then writes one comparison table
per command with one column per result, followed by each result's tables and figures. A
self-distillation pretraining run also gets a "Distillation health" table: per token family,
the teacher's entropy / ln K at the start and over the last 10% of the logged steps, the
distillation CE first and last against ln K, the teacher cosines across scans and across views,
and a verdict, learning / uniform / collapsed (`medmim.train.health.summarize`).
Numbers and tables are formatted by `medmim.eval.markdown`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medmim import __version__
from medmim.errors import DataError
from medmim.eval.markdown import csv_as_markdown, format_value, markdown_table
from medmim.train.health import ONE_HOT, SAME_OUTPUT, UNIFORM, FamilyHealth, read_metrics, summarize

SCHEMA_VERSION = 1
REQUIRED_KEYS = ("command", "encoder", "metrics", "tables", "figures")


def _jsonable(value: Any) -> Any:
    """Floats that JSON can hold (NaN -> None), numpy scalars -> Python, recursively."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_results(
    out_dir: str | Path,
    command: str,
    encoder: dict[str, Any],
    metrics: dict[str, float | dict[str, float]],
    tables: list[dict[str, str]] | None = None,
    figures: list[dict[str, str]] | None = None,
    data: str = "",
    config: dict[str, Any] | None = None,
) -> Path:
    """Write `out_dir/results.json` in the schema above and return its path.

    Args:
        out_dir: the command's output folder; table/figure paths are relative to it.
        command: "classify", "cluster", "segment", ...
        encoder: {"spec", "method", "backbone", "pretrained"} (`medmim.eval.encoders.describe`).
        metrics: flat `name -> float | {"mean", "std"}`.
        tables: `[{"title", "path"}]`, CSV or Markdown files under out_dir.
        figures: `[{"title", "path"}]`, PNG files under out_dir.
        data: the input the command read.
        config: the command's options.
    """
    out_dir = Path(out_dir)
    for item in (tables or []) + (figures or []):
        if not (out_dir / item["path"]).is_file():
            raise FileNotFoundError(f"results.json lists '{item['path']}' but {out_dir} lacks it")
    record = {
        "schema": SCHEMA_VERSION,
        "command": command,
        "encoder": encoder,
        "data": str(data),
        "metrics": metrics,
        "tables": list(tables or []),
        "figures": list(figures or []),
        "config": config or {},
        "medmim_version": __version__,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    path = out_dir / "results.json"
    path.write_text(json.dumps(_jsonable(record), indent=2) + "\n", encoding="utf-8")
    return path


def read_results(path: str | Path) -> dict[str, Any]:
    """Read and check one `results.json`; DataError names the missing key."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not a readable results.json ({exc})") from exc
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise DataError(
            path, f"results.json lacks {missing}; write it with medmim.eval.report.write_results"
        )
    return record


@dataclass
class RunResult:
    """One column of the report: a results.json (or a pretraining run's last metrics and its
    distillation health per token family).
    """

    label: str
    folder: Path
    command: str
    encoder: dict[str, Any]
    metrics: dict[str, Any]
    tables: list[dict[str, str]] = field(default_factory=list)
    figures: list[dict[str, str]] = field(default_factory=list)
    health: dict[str, FamilyHealth] = field(default_factory=dict)


def _pretrain_result(run_dir: Path, label: str) -> RunResult | None:
    """The last logged value of each scalar in `metrics.jsonl`, its distillation health, and
    `figures/*.png`.
    """
    log = run_dir / "metrics.jsonl"
    if not log.is_file():
        return None
    rows = read_metrics(log)
    last: dict[str, Any] = {}
    for row in rows:
        last.update({k: v for k, v in row.items() if isinstance(v, (int, float))})
    figures = [
        {"title": p.stem, "path": str(p.relative_to(run_dir))}
        for p in sorted((run_dir / "figures").glob("*.png"))
    ]
    encoder = {"spec": str(run_dir), "method": "", "backbone": ""}
    cfg: dict[str, Any] = {}
    if (run_dir / "config.yaml").is_file():
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        encoder["method"] = str((cfg.get("method") or {}).get("name", ""))
        encoder["backbone"] = str((cfg.get("model") or {}).get("name", ""))
    out_dim = (cfg.get("method") or {}).get("out_dim")
    ln_k = math.log(out_dim) if isinstance(out_dim, int) and out_dim > 1 else None
    return RunResult(label, run_dir, "pretrain", encoder, last, [], figures, summarize(rows, ln_k))


HEALTH_HEADER = [
    "family",
    "teacher entropy / ln K: start → end",
    "distillation CE: first → end",
    "ln K",
    "teacher cos across scans",
    "teacher cos across views",
    "verdict",
]


def health_rows(health: dict[str, FamilyHealth]) -> list[list[str]]:
    """One Markdown row per family under HEALTH_HEADER; "end" is the mean over the last 10% of
    the logged steps.
    """
    rows = []
    for h in health.values():
        note = "; CE above ln K" if h.ce_above_ln_k else ""
        rows.append(
            [
                h.family,
                f"{format_value(h.entropy_start)} → {format_value(h.entropy_end)}",
                f"{format_value(h.ce_first)} → {format_value(h.ce_end)}",
                format_value(h.ln_k),
                format_value(h.cos_batch),
                format_value(h.cos_views),
                h.verdict + note,
            ]
        )
    return rows


def collect_results(run_dirs: list[str | Path]) -> list[RunResult]:
    """Every result under the given folders (or results.json files), in the order given."""
    results: list[RunResult] = []
    for given in map(Path, run_dirs):
        before = len(results)
        if not given.exists():
            raise DataError(given, "no such run folder or results.json")
        files = [given] if given.is_file() else sorted(given.rglob("results.json"))
        base = given.parent if given.is_file() else given
        if given.is_dir() and (pre := _pretrain_result(given, given.name)) is not None:
            results.append(pre)
        for path in files:
            rec = read_results(path)
            rel = path.parent.relative_to(base) if path.parent != base else Path()
            label = "/".join(p for p in (base.name, str(rel) if str(rel) != "." else "") if p)
            results.append(
                RunResult(
                    label,
                    path.parent,
                    rec["command"],
                    rec["encoder"],
                    rec["metrics"],
                    rec["tables"],
                    rec["figures"],
                )
            )
        if len(results) == before:
            raise DataError(
                given,
                "holds no results.json and no metrics.jsonl; run a medmim "
                "command with --out inside it first",
            )
    return results


def comparison_table(results: list[RunResult]) -> str:
    """One row per metric name, one column per result; encoder facts on top."""
    header = ["", *[r.label for r in results]]
    rows = [
        ["encoder", *[str(r.encoder.get("spec", "")) for r in results]],
        ["method", *[str(r.encoder.get("method", "")) for r in results]],
    ]
    names: list[str] = []
    for r in results:
        names += [n for n in r.metrics if n not in names]
    rows += [[f"`{n}`", *[format_value(r.metrics.get(n)) for r in results]] for n in names]
    return markdown_table(header, rows)


def render_report(
    results: list[RunResult], out_path: str | Path, title: str = "medmim report"
) -> str:
    """The Markdown text: one comparison table per command, then each result's tables and figures.

    Figure links are relative to `out_path`'s folder, so the report renders where it is written.
    """
    here = Path(out_path).resolve().parent
    parts = [f"# {title}", "", f"{len(results)} result(s), medmim {__version__}.", ""]
    commands = list(dict.fromkeys(r.command for r in results))
    for command in commands:
        group = [r for r in results if r.command == command]
        parts += [f"## Comparison: {command}", "", comparison_table(group), ""]
    for r in results:
        parts += [f"## {r.label} ({r.command})", ""]
        if r.health:
            parts += [
                "### Distillation health",
                "",
                markdown_table(HEALTH_HEADER, health_rows(r.health)),
                "",
                f"Uniform: entropy / ln K > {UNIFORM} (the CE sits at ln K, no signal); "
                f"collapsed: < {ONE_HOT}, or the same output for every scan (cos across scans "
                f"> {SAME_OUTPUT}).",
                "",
            ]
        for t in r.tables:
            path = r.folder / t["path"]
            if not path.is_file():
                text = f"*(missing: `{path}`)*"
            elif path.suffix == ".csv":
                text = csv_as_markdown(path)
            else:
                text = path.read_text(encoding="utf-8").strip()
            parts += [f"### {t.get('title', path.stem)}", "", text, ""]
        for fig in r.figures:
            rel = os.path.relpath((r.folder / fig["path"]).resolve(), here)
            parts += [f"![{fig.get('title', '')}]({Path(rel).as_posix()})", ""]
    return "\n".join(parts)


def write_report(
    run_dirs: list[str | Path], out_path: str | Path, title: str = "medmim report"
) -> Path:
    """Gather the results under `run_dirs` and write the Markdown report to `out_path`."""
    results = collect_results(run_dirs)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(render_report(results, out_path, title) + "\n", encoding="utf-8")
    return out_path
