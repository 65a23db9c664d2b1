"""The size rule of the code base (issue 16): no module over 400 lines and no function over 60, in every package we ship.

Split by concept, not by line count: a module that outgrows the rule usually holds two ideas. The rule is measured on the
source as written (docstrings and comments count; a long string is still a long read).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("server", "clients", "benchmarks", "offline")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in (ROOT / pkg).rglob("*.py"))


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]


def test_the_rule_sees_the_packages() -> None:
    found = {p.relative_to(ROOT).parts[0] for p in _modules()}
    assert {"server", "clients", "benchmarks"} <= found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_function_sizes(path: Path) -> None:
    text = path.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines (> {MAX_MODULE_LINES})"
    long = [
        f"{fn.name} (line {fn.lineno}): {fn.end_lineno - fn.lineno + 1} lines"
        for fn in _functions(ast.parse(text))
        if fn.end_lineno is not None and fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.relative_to(ROOT)}: functions over {MAX_FUNCTION_LINES} lines: {long}"
