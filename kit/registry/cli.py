"""`kit services`: print the live service instances from the registry topic."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from kit.command import configure_logging, run_command
from kit.registry.model import Registration
from kit.registry.reader import Registry
from kit.registry.watch import Watch

__all__ = ["cli_services", "format_table", "to_json"]

_CLEAR = "\x1b[H\x1b[2J"


def cli_services(argv: list[str]) -> int:
    """Run `kit services [--json] [--watch]`; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="kit services", description="List the live service instances in the registry."
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--watch",
        action="store_true",
        help="redraw the table every second until Ctrl-C (with --json: one event per line)",
    )
    parser.add_argument("--service", help="only instances of this service")
    parser.add_argument("--topic", help="registry topic (default KIT_REGISTRY_TOPIC)")
    parser.add_argument("--ttl", type=float, help="heartbeat TTL in s (default KIT_REGISTRY_TTL)")
    parser.add_argument("--interval", type=float, default=1.0, help="--watch redraw period (s)")
    parser.add_argument("--log-level", default=os.environ.get("KIT_LOG_LEVEL", "WARNING"))
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    return run_command("kit services", lambda: asyncio.run(_services(args, sys.stdout)))


async def _services(args: argparse.Namespace, out: TextIO) -> int:
    from kit.config import load_settings

    registry = Registry(load_settings(), ttl=args.ttl, topic=args.topic, clean=False)
    await registry.start()
    try:
        if not args.watch:
            regs = _select(registry, args.service)
            if args.json:
                print(json.dumps(to_json(regs, time.time(), registry), indent=2), file=out)
            else:
                print(format_table(regs, time.time(), registry.topic, registry.ttl), file=out)
            return 0
        if args.json:
            with registry.watch() as events:
                _on_stop_signals(events.close)
                await _stream_events(events, args.service, out)
        else:
            stop = asyncio.Event()
            _on_stop_signals(stop.set)
            await _redraw(registry, args.service, args.interval, stop, out)
        return 0
    finally:
        await registry.close()


def _on_stop_signals(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, callback)


async def _redraw(
    registry: Registry, service: str | None, interval: float, stop: asyncio.Event, out: TextIO
) -> None:
    while not stop.is_set():
        table = format_table(_select(registry, service), time.time(), registry.topic, registry.ttl)
        out.write(f"{_CLEAR}{time.strftime('%H:%M:%S')}  kit services --watch (Ctrl-C to stop)\n\n")
        out.write(table + "\n")
        out.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def _stream_events(events: Watch, service: str | None, out: TextIO) -> None:
    async for event in events:  # until the registry closes or a signal closes the watch
        if service is None or event.service == service:
            now = time.time()
            line = {"event": event.kind, "reason": event.reason, "at": now}
            line["instance"] = _instance_json(event.registration, now)
            out.write(json.dumps(line) + "\n")
            out.flush()


def _select(registry: Registry, service: str | None) -> list[Registration]:
    chosen = registry.lookup(service) if service else registry.instances()
    return sorted(chosen, key=lambda r: (r.service, r.started_at, r.instance_id))


def _instance_json(reg: Registration, now: float) -> dict[str, Any]:
    data: dict[str, Any] = reg.model_dump(mode="json")
    data["age_s"] = round(now - reg.started_at.timestamp(), 3)
    data["heartbeat_age_s"] = round(reg.heartbeat_age(now), 3)
    return data


def to_json(regs: Sequence[Registration], now: float, registry: Registry) -> dict[str, Any]:
    """The `--json` document: the topic, the TTL and every live instance."""
    return {
        "topic": registry.topic,
        "ttl_s": registry.ttl,
        "instances": [_instance_json(r, now) for r in regs],
    }


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def _endpoint_lines(reg: Registration) -> list[str]:
    lines = []
    for ep in reg.endpoints:
        types = f"{ep.event_schema} -> {ep.reply_schema}" if ep.reply_schema else ep.event_schema
        lines.append(f"{ep.kind} {ep.name} @ {ep.topic} ({types})")
    if reg.reply_address:
        lines.append(f"replies @ {reg.reply_address}")
    return lines or ["-"]


def format_table(regs: Sequence[Registration], now: float, topic: str, ttl: float) -> str:
    """The human-readable table; one line per endpoint, the instance on the first."""
    if not regs:
        return f"no live service instances on {topic} (TTL {ttl:g}s)"
    header = ("SERVICE", "VERSION", "INSTANCE", "HOST", "AGE", "LAST HEARTBEAT", "ENDPOINTS")
    rows: list[tuple[str, ...]] = []
    for reg in regs:
        beat = reg.last_heartbeat.astimezone().strftime("%H:%M:%S")
        eps = _endpoint_lines(reg)
        rows.append(
            (
                reg.service,
                reg.version,
                reg.instance_id,
                f"{reg.host}:{reg.pid}",
                _duration(now - reg.started_at.timestamp()),
                f"{beat} ({_duration(reg.heartbeat_age(now))} ago)",
                eps[0],
            )
        )
        rows += [("", "", "", "", "", "", ep) for ep in eps[1:]]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]]).rstrip()
        for r in [header, *rows]
    ]
    services = len({r.service for r in regs})
    lines.append("")
    lines.append(f"{len(regs)} live instance(s) of {services} service(s) on {topic} (TTL {ttl:g}s)")
    return "\n".join(lines)
