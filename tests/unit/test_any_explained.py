"""Every `Any` in an annotation in kit/ says why it is not a precise type (issue 10).

The reason is a comment containing "Any" on the annotation's line or the line above
(`# Any: confluent-kafka has no type stubs for this`), or, when one reason holds for every
use in a module, a line starting with "# Any:" in that module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _annotations(tree: ast.AST) -> Iterator[ast.expr]:
    """The annotations of arguments, returns and annotated assignments in `tree`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            yield node.annotation
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
            yield node.returns
        elif isinstance(node, ast.AnnAssign):
            yield node.annotation


def _any_lines(tree: ast.AST) -> set[int]:
    """Lines where `Any` (or `typing.Any`) appears in an annotation, subscripts included."""
    lines = set()
    for annotation in _annotations(tree):
        for node in ast.walk(annotation):
            if (isinstance(node, ast.Name) and node.id == "Any") or (
                isinstance(node, ast.Attribute) and node.attr == "Any"
            ):
                lines.add(node.lineno)
    return lines


def _explains_any(line: str) -> bool:
    """True when `line` has a comment that mentions Any."""
    return "#" in line and "Any" in line.split("#", 1)[1]


def _unexplained() -> list[str]:
    found = []
    for path in sorted((ROOT / "kit").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        if any(line.startswith("# Any:") for line in lines):
            continue  # one reason for the whole module
        for number in sorted(_any_lines(ast.parse(source, filename=str(path)))):
            here, above = lines[number - 1], lines[number - 2] if number > 1 else ""
            if not (_explains_any(here) or _explains_any(above)):
                found.append(f"{path.relative_to(ROOT).as_posix()}:{number}: {here.strip()}")
    return found


def test_the_check_finds_an_unexplained_any() -> None:
    source = "def f(x: dict[str, Any]) -> None: ...\n"
    assert _any_lines(ast.parse(source)) == {1}
    assert not _explains_any(source) and _explains_any("x: Any  # Any: JSON values")


def test_every_any_in_kit_says_why() -> None:
    unexplained = _unexplained()
    assert not unexplained, "Any without a reason (a '# Any: ...' comment):\n" + "\n".join(
        unexplained
    )
