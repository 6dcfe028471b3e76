"""Files say what they hold: no module in kit/ over 420 lines, no function over 65 (issue 10).

A module or function past these limits holds more than one job: split it by meaning, into
modules and helpers whose names say what they do. A function's length runs from its `def`
line to its last line, docstring included and decorators not.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 65

ALLOWED: set[str] = set()
"""Modules exempt from both limits (none: add one only with a reason next to it)."""


def _modules() -> list[tuple[str, str]]:
    """(path relative to the repository, source) of every module under kit/ not allowed."""
    found = []
    for path in sorted((ROOT / "kit").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name not in ALLOWED:
            found.append((name, path.read_text(encoding="utf-8")))
    return found


def test_kit_has_modules_to_check() -> None:
    assert len(_modules()) > 20


def test_no_module_is_over_the_limit() -> None:
    too_long = [
        f"{name}: {len(source.splitlines())} lines"
        for name, source in _modules()
        if len(source.splitlines()) > MAX_MODULE_LINES
    ]
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def test_no_function_is_over_the_limit() -> None:
    too_long = []
    for name, source in _modules():
        for node in ast.walk(ast.parse(source, filename=name)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"
