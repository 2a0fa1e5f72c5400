"""Numbers and tables as Markdown, for `summary.md` files and the `medmim report` page."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any


def _num(x: float, digits: int, tiny: bool) -> str:
    return f"{x:.{digits}g}" if tiny else f"{x:.{digits}f}"


def _is_tiny(x: float, digits: int) -> bool:
    return x != 0 and abs(x) < 10 ** -(digits - 1)


def format_value(value: Any, digits: int = 3) -> str:
    """`0.812`, `0.812 ± 0.031`, `8.28e-06 ± 2.3e-07` (tiny means keep 3 significant digits),
    or `–` for a missing or non-finite value.
    """
    if isinstance(value, dict) and "mean" in value:
        mean, std = value.get("mean"), value.get("std")
        if mean is None or not math.isfinite(mean):
            return "–"
        tiny = _is_tiny(mean, digits)
        if std is None or not math.isfinite(std):
            return _num(mean, digits, tiny)
        return f"{_num(mean, digits, tiny)} ± {_num(std, digits, tiny)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    return _num(value, digits, _is_tiny(value, digits)) if math.isfinite(value) else "–"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""

    def cells(row: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"

    lines = [cells(header), "|" + "---|" * len(header)]
    return "\n".join(lines + [cells(r) for r in rows])


def csv_as_markdown(path: Path, max_rows: int = 60) -> str:
    """A CSV file as a Markdown table (floats to 3 digits), cut after `max_rows` rows."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return "*(empty table)*"

    def fmt(cell: str) -> str:
        try:
            return format_value(float(cell)) if "." in cell or "e" in cell.lower() else cell
        except ValueError:
            return cell

    body = [[fmt(c) for c in r] for r in rows[1 : max_rows + 1]]
    extra = len(rows) - 1 - max_rows
    note = f"\n\n*({extra} more rows in `{path.name}`)*" if extra > 0 else ""
    return markdown_table(rows[0], body) + note
