"""results.json schema and the Markdown report that gathers runs side by side."""

from __future__ import annotations

import json
import math

import pytest

from medmim.errors import DataError
from medmim.eval.report import (
    collect_results,
    format_value,
    read_results,
    render_report,
    write_report,
    write_results,
)

ENC = {"spec": "runs/a/export", "method": "smart", "backbone": "swin"}


def fake_run(folder, command="classify", auc=0.8, method="smart"):
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    (folder / "figures" / "roc.png").write_bytes(b"\x89PNG fake")
    (folder / "folds.csv").write_text("fold,auc\n0,0.81234\n1,0.79\n", encoding="utf-8")
    (folder / "summary.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n", encoding="utf-8")
    return write_results(
        folder,
        command,
        {**ENC, "method": method},
        {"test/auc": {"mean": auc, "std": 0.02}, "n": 3, "val/auc": float("nan")},
        tables=[
            {"title": "Per fold", "path": "folds.csv"},
            {"title": "Summary", "path": "summary.md"},
        ],
        figures=[{"title": "ROC", "path": "figures/roc.png"}],
        data="d.csv",
        config={"folds": 2},
    )


def test_write_and_read_results_schema(tmp_path) -> None:
    path = fake_run(tmp_path / "a")
    record = json.loads(path.read_text(encoding="utf-8"))
    assert set(record) == {
        "schema",
        "command",
        "encoder",
        "data",
        "metrics",
        "tables",
        "figures",
        "config",
        "medmim_version",
        "created",
    }
    assert record["schema"] == 1 and record["metrics"]["val/auc"] is None  # NaN -> null
    assert read_results(path)["metrics"]["test/auc"] == {"mean": 0.8, "std": 0.02}
    with pytest.raises(FileNotFoundError, match="lists 'figures/none.png'"):
        write_results(
            tmp_path / "a", "x", ENC, {}, figures=[{"title": "t", "path": "figures/none.png"}]
        )
    (tmp_path / "bad.json").write_text(json.dumps({"command": "x"}), encoding="utf-8")
    with pytest.raises(DataError, match=r"lacks \['encoder', 'metrics', 'tables', 'figures'\]"):
        read_results(tmp_path / "bad.json")


def test_format_value() -> None:
    assert format_value({"mean": 0.81234, "std": 0.031}) == "0.812 ± 0.031"
    assert format_value({"mean": 8.2754e-06, "std": 2.3e-07}) == "8.28e-06 ± 2.3e-07"
    assert format_value(0.5) == "0.500" and format_value(3) == "3"
    assert format_value(None) == "–" and format_value(math.nan) == "–"
    assert format_value({"mean": None, "std": None}) == "–"


def test_report_puts_runs_side_by_side(tmp_path) -> None:
    fake_run(tmp_path / "smart" / "classify", auc=0.9)
    fake_run(tmp_path / "scratch" / "classify", auc=0.7, method="scratch")
    fake_run(tmp_path / "smart" / "cluster", command="cluster")
    # A pretraining run folder: last value of each scalar in metrics.jsonl, and its figures.
    (tmp_path / "smart" / "metrics.jsonl").write_text(
        '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5, "lr": 0.001}\n{"step": 3, "lo',
        encoding="utf-8",
    )
    (tmp_path / "smart" / "config.yaml").write_text(
        "method:\n  name: smart\nmodel:\n  name: swin_demo\n", encoding="utf-8"
    )
    out = write_report([tmp_path / "smart", tmp_path / "scratch"], tmp_path / "docs" / "report.md")
    text = out.read_text(encoding="utf-8")
    results = collect_results([tmp_path / "smart", tmp_path / "scratch"])
    assert [(r.label, r.command) for r in results] == [
        ("smart", "pretrain"),
        ("smart/classify", "classify"),
        ("smart/cluster", "cluster"),
        ("scratch/classify", "classify"),
    ]
    assert results[0].metrics == {"step": 2, "loss": 1.5, "lr": 0.001}
    assert results[0].encoder["method"] == "smart" and results[0].encoder["backbone"] == "swin_demo"
    assert "## Comparison: classify" in text and "## Comparison: cluster" in text
    assert "|  | smart/classify | scratch/classify |" in text
    assert "| `test/auc` | 0.900 ± 0.020 | 0.700 ± 0.020 |" in text
    assert "| `val/auc` | – | – |" in text
    assert "| 0 | 0.812 |" in text  # the CSV table, 3 digits
    assert "![ROC](../smart/classify/figures/roc.png)" in text  # relative to the report
    assert text.count("| a | b |") == 3  # each run's Markdown table is included as is


def test_report_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="no such run folder"):
        collect_results([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no results.json and no metrics.jsonl"):
        collect_results([tmp_path / "empty"])


def test_report_of_a_single_results_file(tmp_path) -> None:
    path = fake_run(tmp_path / "run")
    (tmp_path / "run" / "folds.csv").unlink()
    text = render_report(collect_results([path]), tmp_path / "r.md")
    assert "*(missing:" in text and "| `test/auc` | 0.800 ± 0.020 |" in text


def test_report_shows_the_distillation_health_of_a_pretraining_run(tmp_path) -> None:
    ln_k = math.log(256)
    rows = [
        {
            "step": s,
            "loss": 5.0,
            "distill/ln_k": ln_k,
            "teacher/entropy/cls": 1.0 - 0.07 * s,
            "distill/ce/cls": ln_k - 0.2 * s,
            "teacher/cos_batch/cls": 0.3,
            "teacher/cos_views/cls": 0.9,
            "teacher/entropy/patch": 0.999,
            "distill/ce/patch": ln_k,
        }
        for s in range(1, 11)
    ]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
    )
    text = render_report(collect_results([tmp_path / "run"]), tmp_path / "r.md")
    assert "### Distillation health" in text
    assert "| cls | 0.930 → 0.300 | 5.345 → 3.545 | 5.545 | 0.300 | 0.900 | learning |" in text
    assert "| patch | 0.999 → 0.999 | 5.545 → 5.545 | 5.545 | – | – | uniform |" in text
    # an old run without distillation keys gets no health table
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n', encoding="utf-8")
    assert "Distillation health" not in render_report(
        collect_results([tmp_path / "old"]), tmp_path / "r.md"
    )
