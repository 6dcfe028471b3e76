"""The kit pytest plugin: a real broker, unique names, and deadline-bounded waits."""

from __future__ import annotations

import asyncio
import inspect
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kit.config import Settings, load_settings
from kit.service import Service
from kit.testing.harness import Harness

__all__ = [
    "kafka_bootstrap",
    "kit_harness",
    "kit_settings",
    "pytest_pyfunc_call",
    "unique_name",
]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run `async def` tests in a fresh event loop (`asyncio.run`), as the testing guide
    writes them: `async def test_payments(kit_harness): ... await h.run()`.

    A test marked for pytest-asyncio or anyio (their auto modes mark every async test) is
    left to that plugin. kit does this itself rather than depend on pytest-asyncio: the
    harness needs no loop fixtures or scopes, and pytest-asyncio's default strict mode would
    still reject the unmarked tests the guide shows.
    """
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    if pyfuncitem.get_closest_marker("asyncio") or pyfuncitem.get_closest_marker("anyio"):
        return None
    funcargs = pyfuncitem.funcargs
    # as pytest's own pytest_pyfunc_call: the test function's own arguments
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(func(**{name: funcargs[name] for name in names}))
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real broker: KIT_BOOTSTRAP_SERVERS, else testcontainers, else the local broker."""
    from kit.testing.broker import resolve_broker

    resolved = resolve_broker()
    previous = os.environ.get("KIT_BOOTSTRAP_SERVERS")
    os.environ["KIT_BOOTSTRAP_SERVERS"] = resolved.bootstrap_servers
    try:
        yield resolved.bootstrap_servers
    finally:
        if previous is None:
            os.environ.pop("KIT_BOOTSTRAP_SERVERS", None)
        else:
            os.environ["KIT_BOOTSTRAP_SERVERS"] = previous
        resolved.close()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Make topic and group names no other test uses: unique_name("orders")."""
    token = uuid.uuid4().hex[:8]
    test = request.node.name.replace("[", "-").replace("]", "").replace("/", "-")[:40]

    def make(base: str) -> str:
        return f"t-{test}-{base}-{token}"

    return make


@pytest.fixture
def kit_settings(kafka_bootstrap: str) -> Settings:
    """Settings pointing at the test broker with fast retries."""
    return load_settings(
        bootstrap_servers=kafka_bootstrap,
        retry_backoff=0.01,
        retry_backoff_max=0.05,
        shutdown_timeout=20,
    )


@pytest.fixture
def kit_harness() -> Callable[..., Harness]:
    """Make an in-process Harness of services: kit_harness(orders.service, inventory.service)."""

    def make(*services: Service, **options: Any) -> Harness:  # Any: Harness's keywords
        return Harness(*services, **options)

    return make
