"""How ``kit services`` shows registrations: the table, and the ``--json`` document."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kit.registry.model import Registration

if TYPE_CHECKING:
    from kit.registry.reader import Registry

__all__ = ["format_table", "instance_json", "stats_lines", "to_json"]

# Any: every Any here is a JSON value.


def instance_json(reg: Registration, now: float) -> dict[str, Any]:
    """One instance as JSON, with its age and the age of its last heartbeat in seconds."""
    data: dict[str, Any] = reg.model_dump(mode="json")
    data["age_s"] = round(now - reg.started_at.timestamp(), 3)
    data["heartbeat_age_s"] = round(reg.heartbeat_age(now), 3)
    return data


def to_json(regs: Sequence[Registration], now: float, registry: Registry) -> dict[str, Any]:
    """The `--json` document: the topic, the TTL and every live instance."""
    return {
        "topic": registry.topic,
        "ttl_s": registry.ttl,
        "instances": [instance_json(r, now) for r in regs],
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


def stats_lines(reg: Registration) -> list[str]:
    """An instance's counters from its last heartbeat (`kit services --stats`)."""
    stats = reg.stats
    if stats is None:
        return ["stats: none in its heartbeats"]
    since = stats.started.astimezone().strftime("%H:%M:%S")
    lines = [f"stats since {since}: {stats.delivery_errors} delivery error(s)"]
    for name, h in sorted(stats.handlers.items()):
        lines.append(
            f"  {name}: {h.handled} handled, {h.failed} failed, {h.retried} retried, "
            f"{h.dead_lettered} dead-lettered, avg {h.average_ms:g} ms"
        )
    for target, c in sorted(stats.calls.items()):
        lines.append(
            f"  call {target}: {c.sent} sent, {c.timeouts} timeouts, {c.errors} errors, "
            f"{c.in_flight} in flight"
        )
    return lines


def format_table(
    regs: Sequence[Registration], now: float, topic: str, ttl: float, *, stats: bool = False
) -> str:
    """The human-readable table; one line per endpoint, the instance on the first. With
    `stats`, each instance's counters follow its endpoints."""
    if not regs:
        return f"no live service instances on {topic} (TTL {ttl:g}s)"
    header = ("SERVICE", "VERSION", "INSTANCE", "HOST", "AGE", "LAST HEARTBEAT", "ENDPOINTS")
    rows: list[tuple[str, ...]] = []
    for reg in regs:
        beat = reg.last_heartbeat.astimezone().strftime("%H:%M:%S")
        eps = _endpoint_lines(reg) + (stats_lines(reg) if stats else [])
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
