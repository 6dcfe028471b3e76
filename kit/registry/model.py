"""Registry data: the kit.Registration event, registry settings, the topic, and endpoints."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kit.config import Settings, from_env
from kit.event import Event
from kit.schema import SchemaRepository
from kit.service import Responder, Service
from kit.transport.admin import TopicSpec

__all__ = [
    "HEADER_CLEANER",
    "HEADER_HEARTBEAT",
    "HEADER_REASON",
    "REPOSITORY",
    "CallCounters",
    "Endpoint",
    "HandlerCounters",
    "InstanceStats",
    "Publication",
    "Registration",
    "RegistryConfig",
    "endpoints_of",
    "from_ms",
    "load_registry_config",
    "registry_topic_spec",
    "to_ms",
]


REPOSITORY = SchemaRepository(Path(__file__).resolve().parents[1] / "schemas" / "kit")
"""The kit's own schemas (kit.*), independent of KIT_SCHEMAS_DIR."""

HEADER_REASON = "kit-registry-reason"
"""Tombstone header: why the key was removed ("stopped" or "expired")."""
HEADER_HEARTBEAT = "kit-registry-heartbeat"
"""Cleaner tombstone header: the last_heartbeat (epoch ms) the cleaner judged too old."""
HEADER_CLEANER = "kit-registry-cleaner"
"""Cleaner tombstone header: the id of the reader that wrote it."""

# Topic settings for the production topic. Every heartbeat is a full record, so the log
# grows fast; short segments and a low dirty ratio keep what a new reader must read small.
TOPIC_CONFIG: dict[str, str] = {
    "cleanup.policy": "compact",
    "segment.ms": str(10 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
    "delete.retention.ms": str(60 * 60 * 1000),
}


class Endpoint(Event):
    """One endpoint of an instance (the nested record kit.Endpoint)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    name: str
    topic: str
    event_schema: str
    reply_schema: str | None = None


class Publication(Event):
    """A topic an instance publishes to (the nested record kit.Publication)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str
    schemas: list[str] = Field(default_factory=list)
    handlers: list[str] = Field(default_factory=list)


class HandlerCounters(Event):
    """One handler's counters (the nested record kit.HandlerCounters)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    handled: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0
    average_ms: float = 0.0


class CallCounters(Event):
    """Counters of the calls to one `service.method` (the nested record kit.CallCounters)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sent: int = 0
    timeouts: int = 0
    errors: int = 0
    in_flight: int = 0


class InstanceStats(Event):
    """An instance's counters, as its heartbeats carry them (the record kit.InstanceStats)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    started: datetime
    handlers: dict[str, HandlerCounters] = Field(default_factory=dict)
    calls: dict[str, CallCounters] = Field(default_factory=dict)
    delivery_errors: int = 0


class Registration(Event, schema="kit.Registration", repository=REPOSITORY):
    """One running service instance, the value of its key on the registry topic (read-only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str
    version: str
    instance_id: str
    host: str
    pid: int
    started_at: datetime
    last_heartbeat: datetime
    endpoints: list[Endpoint] = Field(default_factory=list)
    reply_address: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    publishes: list[Publication] = Field(default_factory=list)
    calls: list[str] = Field(default_factory=list)
    stats: InstanceStats | None = None

    def heartbeat_age(self, now: float) -> float:
        """Seconds since the last heartbeat, at wall-clock time `now` (epoch seconds)."""
        return now - self.last_heartbeat.timestamp()

    def same_except_heartbeat(self, other: Registration) -> bool:
        """True when only last_heartbeat and the counters differ (a heartbeat, not a change)."""
        same = {"last_heartbeat": other.last_heartbeat, "stats": other.stats}
        return self.model_copy(update=same) == other


class RegistryConfig(BaseSettings):
    """Registry settings; each field is read from KIT_REGISTRY_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="KIT_REGISTRY_", extra="ignore", frozen=True)

    enabled: bool = Field(True, description="Announce running instances (runtime integration).")
    topic: str = Field("_kit_registry", min_length=1, description="The registry topic.")
    heartbeat: float = Field(2.0, gt=0, description="Seconds between heartbeats.")
    ttl: float = Field(
        20.0,
        gt=0,
        description="Heartbeat age (s) after which readers drop one. Above a cluster's "
        "failover (9 s, while no acks=all write lands) plus a heartbeat interval.",
    )
    clean: bool = Field(True, description="Readers tombstone entries of long-dead instances.")
    clean_after: float | None = Field(
        None, gt=0, description="Heartbeat age (s) before a cleaner tombstones (default 3 x ttl)."
    )
    fail_fast: bool = Field(
        True, description="Requests to a service with no live instance fail at once."
    )

    @property
    def clean_limit(self) -> float:
        """The heartbeat age after which a cleaner tombstones an entry."""
        return self.clean_after if self.clean_after is not None else 3 * self.ttl


def load_registry_config(
    env: Mapping[str, str] | None = None, **overrides: object
) -> RegistryConfig:
    """Read RegistryConfig from `env` (default os.environ); a bad value raises ConfigError."""
    return from_env(RegistryConfig, "KIT_REGISTRY_", env, overrides)


def registry_topic_spec(
    settings: Settings, topic: str, config: Iterable[tuple[str, str]] = ()
) -> TopicSpec:
    """The registry topic: compacted, one partition, replication from KIT_TOPIC_REPLICATION.

    One partition gives one ordered log: a reader knows it has everything written before
    it started once it reaches the high watermark it took at start (like Kafka Connect's
    config topic and Schema Registry's `_schemas`). `config` overrides topic settings.
    """
    merged = {**TOPIC_CONFIG, **dict(config)}
    return TopicSpec(topic, 1, settings.topic_replication, tuple(sorted(merged.items())))


def endpoints_of(service: Service) -> list[Endpoint]:
    """Every handler and responder of a service declaration, as registry endpoints."""
    out = []
    for handler in service.handlers:
        reply = None
        if isinstance(handler, Responder) and handler.reply_type is not None:
            reply = handler.reply_type.kit_schema().full_name
        out.append(
            Endpoint(
                kind="responder" if isinstance(handler, Responder) else "handler",
                name=handler.name,
                topic=handler.topic,
                event_schema=handler.schema_name,
                reply_schema=reply,
            )
        )
    return out


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """An aware UTC datetime at epoch milliseconds (the precision Avro keeps)."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def now_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return int(datetime.now(UTC).timestamp() * 1000)
