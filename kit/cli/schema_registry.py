"""``kit schema-registry start|stop|status``: the local Apicurio Registry of
kit.broker.schema_registry (not ``kit registry``: kit's service discovery is a registry too)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kit.cli.errors import Exit, guarded

if TYPE_CHECKING:
    from kit.broker.schema_registry import RegistryInfo

__all__ = ["schema_registry"]

# As `kit broker`: exit 1 of `status` means "not running", so any failure exits 2, and
# errors print their message alone.
_guarded = guarded("kit schema-registry", answers=True, bare=True)


@click.group(
    "schema-registry",
    short_help="Start, stop, check a local schema registry: kit schema-registry status.",
)
def schema_registry() -> None:
    """Run a local schema registry (Apicurio Registry, Confluent-compatible API; Java 21+).

    The JDK is KIT_SCHEMA_REGISTRY_JAVA_HOME, else JAVA_HOME or java on PATH if Java 21+.
    Schemas are kept in memory: a restart starts empty. The global compatibility rule is
    BACKWARD, as in Confluent Schema Registry.
    """


@schema_registry.command("start")
@click.option("--port", type=int, default=None, help="HTTP port (default 8081)")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="seconds to wait")
@_guarded
def start(port: int | None, timeout: float) -> int:
    """Start the registry (or report the running one)."""
    from kit.broker import schema_registry as local

    info = local.start(port, timeout=timeout)
    took = f", started in {info.startup_seconds:.1f}s" if info.startup_seconds else ""
    print(
        f"apicurio registry {info.version} ready at {info.url} "
        f"(pid {info.pid}{took}; schemas in memory: a restart starts empty)"
    )
    _print_details(info)
    return Exit.OK


@schema_registry.command("stop")
@_guarded
def stop() -> int:
    """Stop the registry (its schemas are gone)."""
    from kit.broker import schema_registry as local

    print("stopped" if local.stop() else "not running")
    return Exit.OK


@schema_registry.command("status")
@_guarded
def status() -> int:
    """Exit 0 if the registry runs and answers, else 1."""
    from kit.broker import schema_registry as local

    found = local.status()
    if found is None:
        print("not running")
        return Exit.FAILED
    print(f"running at {found.url} (pid {found.pid}, apicurio registry {found.version})")
    _print_details(found)
    return Exit.OK


def _print_details(info: RegistryInfo) -> None:
    print(f"  java: {info.java.describe()}")
    print(f"  log: {info.data_dir / 'registry.log'}")
    print("Use it from kit with:")
    print(f"  export KIT_SCHEMA_REGISTRY_URL={info.url}")
