"""What a registration says an instance does beyond its endpoints: publishes, calls, stats."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from kit.registry.model import (
    CallCounters,
    HandlerCounters,
    InstanceStats,
    Publication,
    from_ms,
)
from kit.service import Service

if TYPE_CHECKING:
    from kit.telemetry import Stats

__all__ = ["calls_of", "declared_publications", "publications_of", "stats_of"]


def declared_publications(service: Service) -> dict[str, dict[str, set[str]]]:
    """topic -> {"schemas": full names, "handlers": names} from the handlers' `publishes=`."""
    out: dict[str, dict[str, set[str]]] = {}
    for handler in service.handlers:
        for topic, event_type in handler.publishes:
            entry = out.setdefault(topic, {"schemas": set(), "handlers": set()})
            entry["schemas"].add(event_type.kit_schema().full_name)
            entry["handlers"].add(handler.name)
    return out


def publications_of(
    service: Service, learned: Mapping[str, Iterable[str]] | None = None
) -> list[Publication]:
    """What `service` declares it publishes, union what it was seen publishing (`learned`:
    topic -> schema full names, as kit.telemetry.Stats.published holds them), by topic."""
    merged = declared_publications(service)
    for topic, schemas in list((learned or {}).items()):
        entry = merged.setdefault(topic, {"schemas": set(), "handlers": set()})
        entry["schemas"].update(list(schemas))
    return [
        Publication(
            topic=topic,
            schemas=sorted(entry["schemas"]),
            handlers=sorted(entry["handlers"]),
        )
        for topic, entry in sorted(merged.items())
    ]


def calls_of(stats: Stats | None) -> list[str]:
    """The `service.method` targets the counters have seen, sorted."""
    if stats is None:
        return []
    return sorted({f"{service}.{method}" for service, method in list(stats.calls)})


def stats_of(stats: Stats | None) -> InstanceStats | None:
    """The counters as the heartbeat carries them (None without counters)."""
    if stats is None:
        return None
    data = stats.as_dict()
    return InstanceStats(
        started=from_ms(int(float(getattr(stats, "started", 0.0)) * 1000)),
        handlers={
            name: HandlerCounters(**_known(values, HandlerCounters.model_fields))
            for name, values in data.get("handlers", {}).items()
        },
        calls={
            target: CallCounters(**_known(values, CallCounters.model_fields))
            for target, values in data.get("calls", {}).items()
        },
        delivery_errors=int(data.get("delivery_errors", 0)),
    )


# Any: JSON values of Stats.as_dict()
def _known(values: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """The entries of `values` the record has fields for (newer counters are left out)."""
    names = set(fields)
    return {k: v for k, v in values.items() if k in names}
