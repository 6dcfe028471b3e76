"""``kit run module:service``: run a service against the cluster until SIGTERM or SIGINT."""

from __future__ import annotations

import click

from kit.cli.errors import guarded
from kit.errors import ConfigError

__all__ = ["run"]


@click.command("run", short_help="Run a service: kit run module:service.")
@click.argument("targets", metavar="MODULE:SERVICE...", nargs=-1, required=True)
@guarded("kit")
def run(targets: tuple[str, ...]) -> int:
    """Run the kit.Service that MODULE:SERVICE names until SIGTERM or SIGINT.

    Several targets run in one process, one runtime each (for development). Prints one
    line when each instance is ready (assigned and announced) and one when it stops, with
    the records in flight. Exit 0 after a graceful stop, 1 after a fatal error or a stop
    past KIT_SHUTDOWN_TIMEOUT, 2 for a wrong setting or target.
    """
    import asyncio

    from kit.app import run_services
    from kit.config import load_settings, resolve_bootstrap, warn_unknown_variables
    from kit.loading import load_service

    settings = load_settings()
    warn_unknown_variables()
    services = [load_service(target) for target in targets]
    names = {s.name for s in services}
    if len(names) != len(services):
        raise ConfigError("SERVICE", f"a service is named twice in {' '.join(targets)}")
    if len(services) > 1 and settings.group_id:
        raise ConfigError(
            "KIT_GROUP_ID", "names one consumer group: unset it to run several services"
        )
    bootstrap, source = resolve_bootstrap(settings)
    running = ", ".join(f"{s.name} {s.version}" for s in services)
    _say(f"running {running} against {bootstrap} ({source})")
    return asyncio.run(run_services(services, settings, say=_say))


def _say(line: str) -> None:
    print(f"kit: {line}", flush=True)
