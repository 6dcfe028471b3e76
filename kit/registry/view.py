"""The in-memory registry view: instance id → latest registration, liveness by heartbeat age."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kit.registry.model import Registration, to_ms

__all__ = ["RegistryEvent", "RegistryView"]

EventKind = Literal["up", "down", "changed"]


@dataclass(frozen=True)
class RegistryEvent:
    """A change in the set of live instances, as yielded by `Registry.watch()`.

    `reason` says why: "announced" or "heartbeat" (up, the latter when a stale instance
    heartbeats again), "stopped" (down: graceful tombstone), "expired" (down: heartbeat older
    than the TTL, or a cleaner's tombstone); empty for "changed".
    """

    kind: EventKind
    registration: Registration
    reason: str = ""

    @property
    def service(self) -> str:
        """The service name of the instance."""
        return self.registration.service

    @property
    def instance_id(self) -> str:
        """The instance id."""
        return self.registration.instance_id


class _Entry:
    __slots__ = ("heartbeat", "heartbeat_ms", "live", "registration")

    def __init__(self, registration: Registration) -> None:
        self.registration = registration
        self.heartbeat_ms = to_ms(registration.last_heartbeat)
        self.heartbeat = self.heartbeat_ms / 1000
        self.live = False


class RegistryView:
    """Latest registration per instance; an instance is live while its heartbeat is fresh.

    Liveness comes from the heartbeat timestamp in the record, never from when the record
    arrived, so a reader that restarts does not resurrect a crashed instance. Not
    thread-safe: `Registry` guards it with a lock. `now` is wall-clock epoch seconds.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, _Entry] = {}
        self._by_service: dict[str, dict[str, _Entry]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, registration: Registration, now: float) -> RegistryEvent | None:
        """Apply a registration record; the event it causes, if any."""
        iid = registration.instance_id
        old = self._entries.get(iid)
        entry = _Entry(registration)
        fresh = now - entry.heartbeat <= self.ttl
        entry.live = fresh
        if old is not None and old.registration.service != registration.service:
            self._unindex(old)
        self._entries[iid] = entry
        self._by_service.setdefault(registration.service, {})[iid] = entry
        if old is None or not old.live:
            return (
                RegistryEvent("up", registration, "announced" if old is None else "heartbeat")
                if fresh
                else None
            )
        if not fresh:
            return RegistryEvent("down", registration, "expired")
        if not old.registration.same_except_heartbeat(registration):
            return RegistryEvent("changed", registration)
        return None

    def remove(
        self, instance_id: str, reason: str = "stopped", judged_heartbeat_ms: int | None = None
    ) -> RegistryEvent | None:
        """Apply a tombstone; the down event it causes, if the instance was live.

        A cleaner's tombstone carries the heartbeat it judged too old; when this view holds
        a newer heartbeat for the key (the instance came back before the tombstone landed),
        the tombstone is stale and ignored.
        """
        entry = self._entries.get(instance_id)
        if entry is None:
            return None
        if judged_heartbeat_ms is not None and entry.heartbeat_ms > judged_heartbeat_ms:
            return None
        del self._entries[instance_id]
        self._unindex(entry)
        return RegistryEvent("down", entry.registration, reason) if entry.live else None

    def sweep(self, now: float) -> list[RegistryEvent]:
        """Mark instances whose heartbeat got older than the TTL as down."""
        events = []
        limit = now - self.ttl
        for entry in self._entries.values():
            if entry.live and entry.heartbeat < limit:
                entry.live = False
                events.append(RegistryEvent("down", entry.registration, "expired"))
        return events

    def live(self, now: float, service: str | None = None) -> list[Registration]:
        """Registrations whose heartbeat is within the TTL (of one service, or all)."""
        limit = now - self.ttl
        if service is None:
            entries = self._entries.values()
        else:
            by_id = self._by_service.get(service)
            if not by_id:
                return []
            entries = by_id.values()
        return [e.registration for e in entries if e.heartbeat >= limit]

    def has_live(self, service: str, now: float) -> bool:
        """Whether any instance of `service` has a fresh heartbeat."""
        by_id = self._by_service.get(service)
        if not by_id:
            return False
        limit = now - self.ttl
        return any(e.heartbeat >= limit for e in by_id.values())

    def get(self, instance_id: str) -> Registration | None:
        """The latest registration of an instance, live or not."""
        entry = self._entries.get(instance_id)
        return entry.registration if entry else None

    def get_live(self, instance_id: str, now: float) -> Registration | None:
        """The registration of an instance whose heartbeat is within the TTL, or None."""
        entry = self._entries.get(instance_id)
        return entry.registration if entry and entry.heartbeat >= now - self.ttl else None

    def heartbeat_ms(self, instance_id: str) -> int | None:
        """The latest heartbeat (epoch ms) recorded for an instance, if any."""
        entry = self._entries.get(instance_id)
        return entry.heartbeat_ms if entry else None

    def older_than(self, now: float, age: float) -> list[tuple[str, int]]:
        """(instance id, heartbeat ms) of entries whose heartbeat is older than `age` s."""
        limit = now - age
        return [(iid, e.heartbeat_ms) for iid, e in self._entries.items() if e.heartbeat < limit]

    def _unindex(self, entry: _Entry) -> None:
        by_id = self._by_service.get(entry.registration.service)
        if by_id is not None:
            by_id.pop(entry.registration.instance_id, None)
            if not by_id:
                del self._by_service[entry.registration.service]
