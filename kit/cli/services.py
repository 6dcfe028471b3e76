"""``kit services``: print the live service instances from the registry topic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

import click

from kit.cli.errors import Exit, guarded
from kit.cli.options import LOG_LEVEL, configure_logging

if TYPE_CHECKING:
    from kit.registry.model import Registration
    from kit.registry.reader import Registry
    from kit.registry.watch import Watch

__all__ = ["services"]


@click.command("services", short_help="List live service instances (--json, --watch).")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option(
    "--watch",
    is_flag=True,
    help="redraw the table every second until Ctrl-C (with --json: one event per line)",
)
@click.option("--service", default=None, help="only instances of this service")
@click.option(
    "--stats", "show_stats", is_flag=True, help="add each instance's counters from its heartbeat"
)
@click.option("--topic", default=None, help="registry topic (default KIT_REGISTRY_TOPIC)")
@click.option(
    "--ttl", type=float, default=None, help="heartbeat TTL in s (default KIT_REGISTRY_TTL)"
)
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="--watch redraw period (s)"
)
@click.option(
    "--log-level", type=LOG_LEVEL, default=None, help="as kit --log-level (default WARNING)"
)
@guarded("kit services")
def services(
    as_json: bool,
    watch: bool,
    service: str | None,
    show_stats: bool,
    topic: str | None,
    ttl: float | None,
    interval: float,
    log_level: str | None,
) -> int:
    """List the live service instances in the registry.

    With --stats, each instance's counters as its last heartbeat carried them (per handler:
    handled, failed, retried, dead-lettered, average latency; per call target: sent,
    timeouts, errors, in flight), in the style of NATS micro's $SRV.STATS. --json always
    has them (the "stats" of each instance).
    """
    if log_level:
        configure_logging(log_level)
    view = _View(service, topic, ttl, interval, show_stats)
    return asyncio.run(_services(view, as_json=as_json, watch=watch, out=sys.stdout))


@dataclass(frozen=True)
class _View:
    """Which instances to show, from which registry topic."""

    service: str | None
    topic: str | None
    ttl: float | None
    interval: float
    stats: bool = False


async def _services(view: _View, *, as_json: bool, watch: bool, out: TextIO) -> int:
    from kit.config import load_settings
    from kit.registry.reader import Registry
    from kit.registry.table import format_table, to_json

    service = view.service
    registry = Registry(load_settings(), ttl=view.ttl, topic=view.topic, clean=False)
    await registry.start()
    try:
        if not watch:
            regs = _select(registry, service)
            if as_json:
                print(json.dumps(to_json(regs, time.time(), registry), indent=2), file=out)
            else:
                table = format_table(
                    regs, time.time(), registry.topic, registry.ttl, stats=view.stats
                )
                print(table, file=out)
            return Exit.OK
        if as_json:
            with registry.watch() as events:
                _on_stop_signals(events.close)
                await _stream_events(events, service, out)
        else:
            stop = asyncio.Event()
            _on_stop_signals(stop.set)
            await _redraw(registry, service, view.interval, stop, out, stats=view.stats)
        return Exit.OK
    finally:
        await registry.close()


def _on_stop_signals(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, callback)


async def _redraw(
    registry: Registry,
    service: str | None,
    interval: float,
    stop: asyncio.Event,
    out: TextIO,
    *,
    stats: bool = False,
) -> None:
    """Redraw the table every `interval` until `stop`: a live table (rich) on a terminal;
    into a pipe or file, the table again each time as plain lines, with no screen codes."""
    from kit.registry.table import format_table

    def draw() -> str:
        regs = _select(registry, service)
        table = format_table(regs, time.time(), registry.topic, registry.ttl, stats=stats)
        return f"{time.strftime('%H:%M:%S')}  kit services --watch (Ctrl-C to stop)\n\n{table}"

    if out.isatty():
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        with Live(Text(draw()), console=Console(file=out), auto_refresh=False) as live:
            while not await _stopped(stop, interval):
                live.update(Text(draw()), refresh=True)
        return
    while True:
        out.write(draw() + "\n\n")
        out.flush()
        if await _stopped(stop, interval):
            return


async def _stopped(stop: asyncio.Event, interval: float) -> bool:
    """Wait up to `interval` for `stop`; True once it is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), interval)
    return stop.is_set()


async def _stream_events(events: Watch, service: str | None, out: TextIO) -> None:
    from kit.registry.table import instance_json

    async for event in events:  # until the registry closes or a signal closes the watch
        if service is None or event.service == service:
            now = time.time()
            line = {"event": event.kind, "reason": event.reason, "at": now}
            line["instance"] = instance_json(event.registration, now)
            out.write(json.dumps(line) + "\n")
            out.flush()


def _select(registry: Registry, service: str | None) -> list[Registration]:
    chosen = registry.lookup(service) if service else registry.instances()
    return sorted(chosen, key=lambda r: (r.service, r.started_at, r.instance_id))
