"""The kit pytest plugin: a real broker, unique names, and deadline-bounded waits."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kit.config import Settings, load_settings
from kit.service import Service
from kit.testing.harness import Harness

__all__ = ["kafka_bootstrap", "kit_harness", "kit_settings", "unique_name"]


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
    """Make an in-process Harness of services: kit_harness(billing.service, inventory.service)."""

    def make(*services: Service, **options: Any) -> Harness:  # Any: Harness's keywords
        return Harness(*services, **options)

    return make
