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
from tests.fixtures import billing
from tests.integration.helpers import order

SERVICE = """
from kit import Context, Event, Service

class Ping(Event, schema="app.Ping"):
    n: int

class Pong(Event, schema="app.Pong"):
    n: int

class Ask(Event, schema="app.Ask"):
    n: int

class Answer(Event, schema="app.Answer"):
    n: int

tracking = Service("tracking")

@tracking.responder()
async def double(ask: Ask) -> Answer:
    return Answer(n=ask.n * 2)

shipping = Service("shipping")

@shipping.handler()
async def on_ping(ping: Ping, ctx: Context) -> None:
    if ping.n < 0:
        raise ValueError("negative")
    answer = await ctx.request(double, Ask(n=ping.n))  # typed: Answer, no reply=
    ctx.publish(Pong(n=answer.n + 1))
"""

TESTS = """
from collections.abc import Callable

from kit.testing.harness import Harness
from app import Ping, Pong, shipping, tracking

async def test_pong(kit_harness: Callable[..., Harness]) -> None:
    h = kit_harness(shipping, tracking)
    h.send(Ping(n=1))
    await h.run()
    assert [p.n for p in h.emitted(Pong)] == [3]

async def test_dead_letters_by_either_name(kit_harness: Callable[..., Harness]) -> None:
    h = kit_harness(shipping, tracking)
    h.send(Ping(n=-1))
    await h.run()
    assert len(h.dead_letters("app.Ping")) == 1
    assert len(h.dead_letters("app.Ping.dlt")) == 1
"""

SCHEMAS = {
    f"{name}.avsc": f'{{"type": "record", "name": "{name}", "namespace": "app", '
    '"fields": [{"name": "n", "type": "long"}]}'
    for name in ("Ping", "Pong", "Ask", "Answer")
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


def test_a_two_service_project_passes_its_async_tests_and_mypy(tmp_path: Path) -> None:
    """A newcomer's project built from the README: two services (a handler calling a
    responder), async tests with the kit_harness fixture; plain pytest with the documented
    one-line pythonpath fix, and mypy --strict with no set-up at all."""
    root = _project(tmp_path, '[tool.pytest.ini_options]\npythonpath = ["."]\n')
    done = _pytest(root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "app", "tests"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


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
