"""The testing guide runs as written in a project laid out like the README's.

A temporary project holds `app/` (a service) beside `tests/` (the guide's `async def` tests
with the `kit_harness` fixture); plain `pytest` runs it in a subprocess, with kit's plugin
loaded from its entry point as in any project that installs kit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from kit.testing.harness import Harness
from services import billing
from tests.integration.helpers import order

SERVICE = """
from kit import Context, Event, Service

class Ping(Event, schema="app.Ping"):
    n: int

class Pong(Event, schema="app.Pong"):
    n: int

service = Service("app")

@service.handler()
async def on_ping(ping: Ping, ctx: Context) -> None:
    if ping.n < 0:
        raise ValueError("negative")
    ctx.publish(Pong(n=ping.n + 1))
"""

TESTS = """
from app import Ping, Pong, service

async def test_pong(kit_harness):
    h = kit_harness(service)
    h.send(Ping(n=1))
    await h.run()
    assert [p.n for p in h.emitted(Pong)] == [2]

async def test_dead_letters_by_either_name(kit_harness):
    h = kit_harness(service)
    h.send(Ping(n=-1))
    await h.run()
    assert len(h.dead_letters("app.Ping")) == 1
    assert len(h.dead_letters("app.Ping.dlt")) == 1
"""

SCHEMAS = {
    "Ping.avsc": '{"type": "record", "name": "Ping", "namespace": "app", '
    '"fields": [{"name": "n", "type": "long"}]}',
    "Pong.avsc": '{"type": "record", "name": "Pong", "namespace": "app", '
    '"fields": [{"name": "n", "type": "long"}]}',
}


def _project(root: Path, pyproject: str) -> Path:
    (root / "app").mkdir()
    (root / "app" / "__init__.py").write_text(textwrap.dedent(SERVICE), encoding="utf-8")
    (root / "tests").mkdir()
    (root / "tests" / "test_app.py").write_text(textwrap.dedent(TESTS), encoding="utf-8")
    (root / "schemas" / "app").mkdir(parents=True)
    for name, text in SCHEMAS.items():
        (root / "schemas" / "app" / name).write_text(text, encoding="utf-8")
    (root / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    return root


def _pytest(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # the `pytest` command, as a user runs it (`python -m pytest` would put the project
        # folder on sys.path and hide the problem the guide's note is about)
        [str(Path(sys.executable).parent / "pytest"), "-q", "-p", "no:cacheprovider"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(root)},
    )


def test_async_tests_of_the_guide_run_with_the_one_line_pythonpath_fix(tmp_path: Path) -> None:
    root = _project(tmp_path, '[tool.pytest.ini_options]\npythonpath = ["."]\n')
    done = _pytest(root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_without_the_fix_pytest_says_which_module_it_cannot_import(tmp_path: Path) -> None:
    """What the guide's note explains: `app/` is not importable from `tests/` by default."""
    done = _pytest(_project(tmp_path, ""))
    assert done.returncode != 0
    assert "No module named 'app'" in done.stdout + done.stderr


def test_dead_letters_accept_the_source_or_the_dead_letter_topic() -> None:
    import asyncio

    h = Harness(billing.service)
    h.send(order(1, quantity=0), key="zero")
    asyncio.run(h.run())
    by_source = h.dead_letters("shop.OrderPlaced")
    assert [d.key for d in by_source] == [b"zero"]
    assert h.dead_letters("shop.OrderPlaced.dlt") == by_source
    assert h.dead_letters("billing.InvoiceIssued") == []
