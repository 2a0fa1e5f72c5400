"""The house plan of DESIGN.md, checked on the source: imports flow down the layers, and the
method-agnostic packages (demo/, train/, eval/) spell no method's name."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

import medmim
from medmim.registry import METHODS

PACKAGE = Path(medmim.__file__).parent

#: DESIGN.md's layers, bottom to top: a module imports its own layer and the ones below it.
#: `medmim` (the package's __init__) and the base modules are layer 0.
LAYERS = {
    "medmim": 0,
    "config": 0,
    "registry": 0,
    "errors": 0,
    "types": 0,
    "schedules": 0,
    "layers": 1,
    "models": 2,
    "heads": 2,
    "masking": 2,
    "losses": 2,
    "data": 2,
    "methods": 3,
    "train": 4,
    "eval": 4,
    "bench": 5,
    "demo": 5,
    "cli": 6,
    "api": 6,
    "__main__": 6,
}
#: Above methods/, only the method contract may be imported; concrete methods come from the
#: registry.
METHOD_CONTRACT = "medmim.methods.base"
#: (importing module, imported module): the one-line reason each is allowed. Empty: none today.
IMPORT_EXCEPTIONS: dict[tuple[str, str], str] = {}

#: Packages that must not know any method by name.
AGNOSTIC = ("demo", "train", "eval")
#: (file, source line): the one-line reason a method name may appear there.
NAME_EXCEPTIONS = {
    (
        "demo/config.py",
        'methods: list[str] = field(default_factory=lambda: ["smart", "smit"])',
    ): "the study's default choice of methods to compare, a setting like any other default",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "medmim"


def imports_of(module: str, text: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every medmim import in `text`, the source of `module`, at module level
    and inside functions; relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = package[: len(package) - node.level + 1]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            else:
                found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "medmim"]


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "configs" not in p.parts)


def test_every_package_has_a_layer() -> None:
    missing = {layer_of(module_name(p)) for p in sources()} - set(LAYERS)
    assert not missing, f"place {sorted(missing)} in LAYERS (and in DESIGN.md)"


def test_imports_flow_down_the_layers() -> None:
    wrong = []
    for path in sources():
        src = module_name(path)
        for line, dst in imports_of(
            src, path.read_text(encoding="utf-8"), path.name == "__init__.py"
        ):
            lo, hi = layer_of(src), layer_of(dst)
            if lo == hi or (src, ".".join(dst.split(".")[:2])) in IMPORT_EXCEPTIONS:
                continue
            if LAYERS.get(hi, 0) > LAYERS[lo]:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} ({lo}) imports {dst} ({hi})")
            elif (
                hi == "methods"
                and LAYERS[lo] > LAYERS["methods"]
                and not dst.startswith(METHOD_CONTRACT)
            ):
                wrong.append(
                    f"{path.relative_to(PACKAGE)}:{line} imports the concrete method {dst}: "
                    "use METHODS.get(name)"
                )
    assert not wrong, "imports against DESIGN.md's layers:\n" + "\n".join(wrong)


def test_the_import_parser_sees_function_level_and_relative_imports() -> None:
    code = "import os\nfrom .config import X\ndef f():\n    from medmim.cli.main import main\n"
    assert imports_of("medmim.demo.study", code) == [
        (2, "medmim.demo.config"),
        (4, "medmim.cli.main.main"),
    ]


def method_names() -> list[str]:
    return sorted(
        n for n in METHODS.names() if METHODS.get(n).__module__.startswith("medmim.methods.")
    )


def docstring_lines(tree: ast.Module) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
        ):
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def method_name_uses(rel: str, text: str, names: list[str]) -> list[str]:
    """Identifiers equal to a method name (any case) and string literals holding one as a word,
    in `text`, the source of PACKAGE/`rel`; docstrings (prose about the papers) and comments are
    not code and are skipped."""
    lines, docs, hits = text.splitlines(), docstring_lines(ast.parse(text)), []
    word = re.compile(
        r"(?<![\w.])(" + "|".join(sorted(names, key=len, reverse=True)) + r")(?!\w)", re.I
    )
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        row = tok.start[0]
        name_hit = tok.type == tokenize.NAME and tok.string.lower() in names
        string_hit = tok.type == tokenize.STRING and row not in docs and word.search(tok.string)
        if (name_hit or string_hit) and (rel, lines[row - 1].strip()) not in NAME_EXCEPTIONS:
            hits.append(f"{rel}:{row}: {tok.string[:60]}")
    return hits


@pytest.mark.parametrize("package", AGNOSTIC)
def test_method_agnostic_packages_name_no_method(package: str) -> None:
    names = method_names()
    assert {"smart", "smit", "ibot"} <= set(names)
    hits = [
        h
        for path in sorted((PACKAGE / package).glob("*.py"))
        for h in method_name_uses(
            path.relative_to(PACKAGE).as_posix(), path.read_text(encoding="utf-8"), names
        )
    ]
    assert not hits, (
        "a method's knowledge belongs in medmim/methods/ or its preset (read it through "
        "METHODS.get(name) or the preset's demo: section):\n" + "\n".join(hits)
    )


def test_the_name_scan_finds_names() -> None:
    code = (
        '"""SMART in a docstring is prose."""\nif method == "smart_vit":\n    x = "pretrain/smit"\n'
        "ibot = 1  # smart in a comment\nsmarter = 'smartest'\n"
    )
    assert [h.split(":")[1] for h in method_name_uses("demo/x.py", code, method_names())] == [
        "2",
        "3",
        "4",
    ]
