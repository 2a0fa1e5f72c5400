"""docs/reliability.md cites a test for every row: each cited `tests/...::test_name` must exist,
so that the table cannot drift from the tests that back it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
CITE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[([^\]`]+)\])?`")
UNCOVERED = "## Not covered by a test yet"


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        n.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test_")
    }


def test_every_cited_test_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    cited = CITE.findall(text)
    assert len(cited) > 50, "docs/reliability.md cites almost no tests"
    problems = []
    for rel, name, param in cited:
        path = ROOT / rel
        if not path.is_file():
            problems.append(f"{rel}: no such file")
        elif name not in _test_functions(path):
            problems.append(f"{rel}::{name}: no such test function")
        elif param and not all(
            part in path.read_text(encoding="utf-8") for part in param.split("-")
        ):
            problems.append(f"{rel}::{name}[{param}]: no such parameter")
    assert not problems, "docs/reliability.md cites missing tests:\n" + "\n".join(problems)


def test_every_table_row_above_the_uncovered_list_cites_a_test() -> None:
    covered = DOC.read_text(encoding="utf-8").split(UNCOVERED)[0]
    rows = [
        line
        for line in covered.splitlines()
        if line.startswith("|")
        and not set(line) <= set("|- ")
        and not line.startswith("| what goes wrong")
    ]
    assert rows
    bare = [row for row in rows if not CITE.search(row.rsplit("|", 2)[-2])]
    assert not bare, "rows whose test column cites no test:\n" + "\n".join(bare)
