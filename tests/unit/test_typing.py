"""The public API type-checks as the docs use it: mypy on two sample files.

`tests/typing/calls_ok.py` must pass (a responder's reply type flows through
`ctx.request`, `Client.request` and `Harness.request` with no `reply=`), and every line of
`tests/typing/calls_bad.py` marked `# error` must be reported, and nothing else.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "typing"


def _expected_errors(path: Path) -> set[int]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {n for n, line in enumerate(lines, 1) if "# error" in line}


def test_typed_calls_check_and_wrong_ones_are_reported(tmp_path: Path) -> None:
    ok, bad = SAMPLES / "calls_ok.py", SAMPLES / "calls_bad.py"
    stdout, stderr, _status = api.run(
        [
            "--strict",
            "--follow-imports=silent",
            "--ignore-missing-imports",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(ok),
            str(bad),
        ]
    )
    errors: dict[str, set[int]] = {"calls_ok.py": set(), "calls_bad.py": set()}
    for match in re.finditer(r"^(?:.*/)?(calls_\w+\.py):(\d+): error", stdout, re.M):
        errors[match.group(1)].add(int(match.group(2)))
    assert errors["calls_ok.py"] == set(), stdout + stderr
    assert errors["calls_bad.py"] == _expected_errors(bad), stdout + stderr


def test_mypy_finds_kit_from_a_project_outside_the_repository(tmp_path: Path) -> None:
    """kit is installed editable (`./dev setup`), as a user working on kit installs it; a
    setuptools editable install (an import hook) left mypy with "Cannot find
    implementation or library stub for module named 'kit'"."""
    app = tmp_path / "app.py"
    app.write_text(
        "from kit import Service\n"
        "from typing import assert_type\n"
        'assert_type(Service("x"), Service)\n',
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "c"), "app.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
