"""``kit run module:service``: run a service against the cluster until SIGTERM or SIGINT."""

from __future__ import annotations

import click

from kit.cli.errors import guarded

__all__ = ["run"]


@click.command("run", short_help="Run a service: kit run module:service.")
@click.argument("target", metavar="MODULE:SERVICE")
@guarded("kit")
def run(target: str) -> int:
    """Run the kit.Service that MODULE:SERVICE names until SIGTERM or SIGINT.

    Exit 0 after a graceful stop, 1 after a fatal error or a stop past
    KIT_SHUTDOWN_TIMEOUT, 2 for a wrong setting or target.
    """
    import asyncio

    from kit.app import run as run_service
    from kit.config import load_settings, resolve_bootstrap, warn_unknown_variables
    from kit.loading import load_service

    settings = load_settings()
    warn_unknown_variables()
    service = load_service(target)
    bootstrap, source = resolve_bootstrap(settings)
    print(
        f"kit: running {service.name} {service.version} against {bootstrap} ({source})", flush=True
    )
    return asyncio.run(run_service(service, settings))
