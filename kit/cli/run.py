"""``kit run module:service``: run a service against the cluster until SIGTERM or SIGINT."""

from __future__ import annotations

import click

from kit.cli.errors import guarded
from kit.errors import ConfigError

__all__ = ["run"]


@click.command("run", short_help="Run a service: kit run module:service.")
@click.argument("targets", metavar="MODULE:SERVICE...", nargs=-1, required=True)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="Run N processes of the service(s), one consumer group: each takes a share of "
    "the partitions (at most one process per partition does work).",
)
@click.pass_context
@guarded("kit")
def run(ctx: click.Context, targets: tuple[str, ...], workers: int) -> int:
    """Run the kit.Service that MODULE:SERVICE names until SIGTERM or SIGINT.

    Several targets run in one process, one runtime each (for development). Prints one
    line when each instance is ready (assigned and announced) and one when it stops, with
    the records in flight. Exit 0 after a graceful stop, 1 after a fatal error or a stop
    past KIT_SHUTDOWN_TIMEOUT, 2 for a wrong setting or target.

    --workers N (N > 1) starts N child processes, each a `kit run` of the same targets
    with its own instance id, in the same consumer group, and prefixes each line they
    print with [worker I pid P]. SIGTERM and SIGINT are forwarded to all; a worker still
    running KIT_SHUTDOWN_TIMEOUT + 5 s later is killed (exit 1). When one worker exits,
    the others are stopped; the exit code is 0 only if every worker exited 0, else the
    code of the one that ended first. A consumer group gives each partition to one
    consumer: workers beyond the topic's partition count stay idle. Use N up to the
    cores for handlers that compute; handlers that wait gain from partitions, not
    processes.
    """
    import asyncio

    from kit.app import run_services
    from kit.config import load_settings, resolve_bootstrap, warn_unknown_variables
    from kit.loading import load_service
    from kit.workers import STOP_MARGIN, check_workers, supervise

    check_workers(workers)
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
    if workers > 1:
        _say(f"running {workers} workers of {running} against {bootstrap} ({source})")
        argv = [*_global_options(ctx), "run", *targets]
        return supervise(argv, workers, settings.shutdown_timeout + STOP_MARGIN, _say)
    _say(f"running {running} against {bootstrap} ({source})")
    return asyncio.run(run_services(services, settings, say=_say))


def _global_options(ctx: click.Context) -> list[str]:
    """The `kit` options given before `run` (--log-level, --log-format), for the workers."""
    params = ctx.parent.params if ctx.parent is not None else {}
    out: list[str] = []
    for name in ("log_level", "log_format"):
        if params.get(name):
            out += [f"--{name.replace('_', '-')}", str(params[name])]
    return out


def _say(line: str) -> None:
    print(f"kit: {line}", flush=True)
