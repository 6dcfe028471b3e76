"""``kit catalog``: the running system (or declared services) as text, JSON, Mermaid or AsyncAPI."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kit.cli.errors import Exit, guarded
from kit.cli.options import LOG_LEVEL, VariadicOptions, configure_logging
from kit.errors import ConfigError, KitError

if TYPE_CHECKING:
    from kit.catalog import Catalog
    from kit.config import Settings
    from kit.schema import Schema

__all__ = ["catalog"]

log = logging.getLogger("kit.catalog")


@click.command(
    "catalog",
    cls=VariadicOptions,
    variadic=("--from",),
    short_help="The running system: services, topics, calls (--mermaid, --asyncapi).",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--mermaid", is_flag=True, help="print a Mermaid flowchart of the graph")
@click.option(
    "--asyncapi",
    "asyncapi",
    is_flag=False,
    flag_value="-",
    default=None,
    metavar="[FILE]",
    help="write an AsyncAPI 3.0.0 document to FILE (no FILE or '-': standard output)",
)
@click.option(
    "--from",
    "sources",
    multiple=True,
    metavar="MODULE:SERVICE...",
    help="build it from these service declarations instead of the registry (no broker)",
)
@click.option("--title", default="kit services", show_default=True, help="AsyncAPI info.title")
@click.option("--topic", default=None, help="registry topic (default KIT_REGISTRY_TOPIC)")
@click.option(
    "--ttl", type=float, default=None, help="heartbeat TTL in s (default KIT_REGISTRY_TTL)"
)
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="deadline (s) for reading the registry",
)
@click.option(
    "--log-level", type=LOG_LEVEL, default=None, help="as kit --log-level (default WARNING)"
)
@guarded("kit catalog")
def catalog(
    as_json: bool,
    mermaid: bool,
    asyncapi: str | None,
    sources: tuple[str, ...],
    title: str,
    topic: str | None,
    ttl: float | None,
    timeout: float,
    log_level: str | None,
) -> int:
    """Print the system as it runs, from the registry: services, versions, instance
    counts, and the graph: per topic its publishers and consumers (with schemas), and
    each call edge caller -> service.method.

    Every running instance announces what it consumes, publishes, answers and calls, so
    the catalog is only as complete as the traffic since the instances started (declared
    `publishes=` are known at once). --from MODULE:SERVICE... builds the same from
    service modules, offline (calls are then unknown).
    """
    if log_level:
        configure_logging(log_level)
    to_stdout = [as_json, mermaid, asyncapi == "-"]
    if sum(to_stdout) > 1:
        raise ConfigError("kit catalog", "--json, --mermaid and --asyncapi - all print: pick one")
    if any(s == "" for s in sources):
        raise ConfigError("--from", "give one or more MODULE:SERVICE targets")
    from kit.catalog import format_text, from_services, to_json, to_mermaid
    from kit.config import load_settings

    settings = load_settings()
    if sources:
        from kit.loading import load_service

        built = from_services([load_service(target) for target in sources])
        where = ", ".join(sources)
    else:
        built = asyncio.run(_live(settings, topic, ttl, timeout))
        where = topic or _registry_topic()
    if asyncapi is not None:
        _write_asyncapi(built, settings, asyncapi, title)
    if as_json:
        print(json.dumps(to_json(built), indent=2))
    elif mermaid:
        print(to_mermaid(built))
    elif asyncapi is None or asyncapi != "-":
        print(format_text(built, where))
    return Exit.OK


def _registry_topic() -> str:
    from kit.registry.model import load_registry_config

    return load_registry_config().topic


async def _live(
    settings: Settings, topic: str | None, ttl: float | None, timeout: float
) -> Catalog:
    """The catalog of the live instances on the registry topic (read within `timeout`)."""
    from kit.catalog import from_registrations
    from kit.registry.reader import Registry

    registry = Registry(settings, ttl=ttl, topic=topic, clean=False, start_timeout=timeout)
    await registry.start()
    try:
        return from_registrations(registry.instances())
    finally:
        await registry.close()


def _write_asyncapi(built: Catalog, settings: Settings, target: str, title: str) -> None:
    from kit.catalog import to_asyncapi

    lookup = _SchemaLookup(settings) if built.live else None
    try:
        doc = to_asyncapi(
            built,
            title=title,
            version=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) if built.live else "1.0.0",
            bootstrap_servers=settings.bootstrap_servers if built.live else None,
            schema_of=lookup,
        )
    finally:
        if lookup is not None:
            lookup.close()
    text = json.dumps(doc, indent=2) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        Path(target).write_text(text, encoding="utf-8")
        print(f"wrote {target}", file=sys.stderr)


class _SchemaLookup:
    """Avro schemas by full name: the local schemas folder, else the schema topic."""

    def __init__(self, settings: Settings) -> None:
        from kit.schema import repository_for

        self.settings = settings
        self.local = repository_for(settings=settings)
        self._topic: Any = None  # Any: a kit.transport.schema_topic.SchemaTopic, made on use
        self._broken = False

    def __call__(self, full_name: str) -> Schema | None:
        if full_name in self.local:
            return self.local.get(full_name)
        if self._broken:
            return None
        try:
            if self._topic is None:
                from kit.transport.kafka import admin_client
                from kit.transport.schema_topic import SchemaTopic

                admin = admin_client(self.settings)
                self._topic = SchemaTopic(self.settings, admin, create=False)
            found: Schema | None = self._topic.by_name(full_name)
            return found
        except KitError as exc:
            log.warning("cannot read schemas from the schema topic: %s", exc)
            self._broken = True
            return None

    def close(self) -> None:
        if self._topic is not None:
            self._topic.close()
