"""Find a schema registry for tests: KIT_SCHEMA_REGISTRY_URL, or kit's local Apicurio Registry."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from kit.broker import schema_registry as local
from kit.config import load_tool_settings
from kit.errors import ConfigError

__all__ = ["ResolvedRegistry", "resolve_schema_registry"]


@dataclass
class ResolvedRegistry:
    """A schema registry tests can use (its Confluent-compatible URL), where it came from, and
    how to release it."""

    url: str
    source: Literal["env", "local"]
    close: Callable[[], None]


def _nothing() -> None:
    return None


def resolve_schema_registry() -> ResolvedRegistry:
    """Return a real schema registry for tests, trying in order:

    1. ``KIT_SCHEMA_REGISTRY_URL`` (closing it does nothing); a ``mock://`` URL is refused,
       since these tests need a registry that enforces compatibility;
    2. the local registry already running (:func:`kit.broker.schema_registry.status`);
    3. a local registry started now (:func:`kit.broker.schema_registry.start`); closing stops
       it unless ``KIT_KEEP_SCHEMA_REGISTRY`` is set, or another process launched it first.

    Raises BrokerError when it cannot be started (no JDK 21+, no Maven, port taken, ...).
    """
    env = os.environ.get("KIT_SCHEMA_REGISTRY_URL", "").strip()
    if env.startswith("mock://"):
        raise ConfigError(
            "KIT_SCHEMA_REGISTRY_URL",
            f"{env} is confluent-kafka's mock client; tests marked schema_registry need a "
            "real registry (unset it to run kit's local one)",
        )
    if env:
        return ResolvedRegistry(env, "env", _nothing)
    running = local.status()
    if running is not None:
        return ResolvedRegistry(running.url, "local", _nothing)
    info = local.start()
    if not info.launched:  # another process launched it while this one waited: theirs
        return ResolvedRegistry(info.url, "local", _nothing)

    def close() -> None:
        if not load_tool_settings().keep_schema_registry:
            local.stop()

    return ResolvedRegistry(info.url, "local", close)
