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
    "kit_registry_settings",
    "kit_schema_registry",
    "kit_settings",
    "mock_schema_registry",
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


@pytest.fixture(scope="session")
def kit_schema_registry() -> Iterator[str]:
    """A real schema registry's Confluent-compatible URL (``.../apis/ccompat/v7``):
    KIT_SCHEMA_REGISTRY_URL, else kit's running local registry, else one started for the
    session (stopped at its end unless KIT_KEEP_SCHEMA_REGISTRY is set).

    The fixture never sets KIT_SCHEMA_REGISTRY_URL, and ``kit_settings`` ignores it: give
    services ``kit_registry_settings`` to write the registry format. A test suite needs no
    export (the running local registry is found), and one exported reaches anything that
    reads the environment itself (``Client()``, a spawned ``kit run``): kit's own suite
    runs without it. Mark such tests ``integration`` and ``schema_registry``. When no registry
    can be started (no JDK 21+, no Maven, ...) they fail, naming why: never a silent skip.
    """
    from kit.errors import KitError
    from kit.testing.schema_registry import resolve_schema_registry

    try:
        resolved = resolve_schema_registry()
    except KitError as exc:
        pytest.fail(f"{exc}; deselect with -m 'not schema_registry'", pytrace=False)
    try:
        yield resolved.url
    finally:
        resolved.close()


@pytest.fixture
def mock_schema_registry() -> Iterator[str]:
    """A ``mock://kit-<uuid>`` URL of confluent-kafka's in-process mock registry, unique to
    the test; its shared client (and so its store) is dropped afterwards. The mock keeps no
    compatibility rules: it accepts every schema."""
    url = f"mock://kit-{uuid.uuid4().hex}"
    yield url
    from kit.transport.registry_format import forget_client

    forget_client(url)


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
    """Settings pointing at the test broker with fast retries, in kit's own wire format
    (a KIT_SCHEMA_REGISTRY_URL in the environment is not used: see kit_registry_settings)."""
    settings = load_settings(
        bootstrap_servers=kafka_bootstrap,
        retry_backoff=0.01,
        retry_backoff_max=0.05,
        shutdown_timeout=20,
    )
    return settings.model_copy(update={"schema_registry_url": None})


@pytest.fixture
def kit_registry_settings(kit_settings: Settings, kit_schema_registry: str) -> Settings:
    """kit_settings plus the real schema registry: services write the Confluent format."""
    return kit_settings.model_copy(update={"schema_registry_url": kit_schema_registry})


@pytest.fixture
def kit_harness() -> Callable[..., Harness]:
    """Make an in-process Harness of services: kit_harness(orders.service, inventory.service)."""

    def make(*services: Service, **options: Any) -> Harness:  # Any: Harness's keywords
        return Harness(*services, **options)

    return make
