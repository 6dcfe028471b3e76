"""confluent-kafka plumbing: client configs, topic admin, the producer sink, the schema topic."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from kit.config import Settings, client_config, resolve_bootstrap
from kit.context import TopicNotReady
from kit.errors import BrokerError, ConfigError, DeliveryError
from kit.transport.diagnose import authorization_message, wait_until_reachable

__all__ = [
    "KafkaSink",
    "TopicSpec",
    "admin_client",
    "consumer_config",
    "ensure_topics",
    "make_consumer",
    "make_producer",
    "poll_batch",
    "producer_config",
]

log = logging.getLogger("kit.kafka")


def base_config(settings: Settings) -> dict[str, Any]:
    """bootstrap.servers plus every pass-through client setting."""
    bootstrap, _source = resolve_bootstrap(settings)
    return {"bootstrap.servers": bootstrap, **client_config(settings)}


BATCH_SIZE = 262_144
"""The producer's default `batch.size` (librdkafka's is 1,000,000). Kafka applies a
topic's `max.message.bytes` to whole record batches, so a batch larger than a topic's
limit is refused with every good record in it; 256 KiB stays under the limits topics are
usually given. Override it with KIT_KAFKA_BATCH_SIZE."""

PRODUCER_MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's default `message.max.bytes`: the largest record a producer sends."""


def producer_config(
    settings: Settings,
    *,
    low_latency: bool = False,
    message_max_bytes: int | None = None,
    transactional_id: str | None = None,
) -> dict[str, Any]:
    """Producer settings: idempotent, acks=all; linger 0 on reply paths.

    `message_max_bytes` raises librdkafka's record size limit, e.g. so that dead-letter
    topics take records as large as their sources do. `transactional_id` makes it a
    transactional producer (see kit.exactly_once).
    """
    config: dict[str, Any] = {
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": settings.linger_ms
        if settings.linger_ms is not None
        else (0 if low_latency else 5),
        "socket.nagle.disable": True,
        "message.timeout.ms": int(settings.delivery_timeout * 1000),
        "queue.buffering.max.messages": 200_000,
        "batch.size": BATCH_SIZE,
    }
    if message_max_bytes is not None and message_max_bytes > PRODUCER_MESSAGE_MAX_BYTES:
        config["message.max.bytes"] = message_max_bytes
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
        config["transaction.timeout.ms"] = max(60_000, config["message.timeout.ms"] + 10_000)
    return {**config, **base_config(settings)}


def consumer_config(settings: Settings, group: str) -> dict[str, Any]:
    """At-least-once consumer settings: offsets stored by the kit after handling."""
    return {
        "group.id": group,
        "enable.auto.offset.store": False,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "fetch.wait.max.ms": 10,
        "socket.nagle.disable": True,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        **base_config(settings),
    }


def _client(
    factory: Callable[[dict[str, Any]], Any], config: dict[str, Any], settings: Settings
) -> Any:
    try:
        return factory(config)
    except (KafkaException, ValueError, TypeError) as exc:
        raise _config_error(exc, settings) from None


def _config_error(exc: Exception, settings: Settings) -> ConfigError:
    text = str(exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else exc)
    for key in client_config(settings):
        if f'"{key}"' in text or key in text:
            env = "KIT_KAFKA_" + key.upper().replace(".", "_")
            return ConfigError(env, f"invalid client setting {key}: {text}")
    return ConfigError("KIT_KAFKA_CONFIG", f"invalid client settings: {text}")


def make_producer(
    settings: Settings,
    *,
    low_latency: bool = False,
    message_max_bytes: int | None = None,
    transactional_id: str | None = None,
) -> Producer:
    """A Producer; a bad setting raises ConfigError naming its environment variable."""
    config = producer_config(
        settings,
        low_latency=low_latency,
        message_max_bytes=message_max_bytes,
        transactional_id=transactional_id,
    )
    return _client(Producer, config, settings)


def make_consumer(settings: Settings, group: str, **overrides: Any) -> Consumer:
    """A Consumer in `group`; a bad setting raises ConfigError naming it.

    `enable.auto.offset.store` stays false whatever KIT_KAFKA_* says: kit stores each
    offset itself once its record is handled and delivered (the commit rule)."""
    config = {**consumer_config(settings, group), **overrides, "enable.auto.offset.store": False}
    return _client(Consumer, config, settings)


def poll_batch(consumer: Consumer, timeout: float, limit: int = 500) -> list[Message]:
    """Wait up to `timeout` for one record, then take what else is already fetched (up to
    `limit` in all). `consume(n, timeout)` alone waits for n records or the whole timeout,
    which adds its timeout to the latency of every quiet moment."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(limit - 1, 0)] if limit > 1 else [first]


def admin_client(settings: Settings) -> AdminClient:
    """An AdminClient; a bad setting raises ConfigError naming it."""
    return _client(AdminClient, base_config(settings), settings)


@dataclass(frozen=True)
class TopicSpec:
    """A topic the kit should make sure exists."""

    name: str
    partitions: int
    replication: int
    """Replicas; -1 takes the cluster's default.replication.factor (KIP-464)."""
    config: tuple[tuple[str, str], ...] = ()


def check_reachable(admin: AdminClient, settings: Settings, timeout: float = 15.0) -> None:
    """Fail with ConfigError naming the setting to fix if no broker answers in time.

    Connects with a short-lived probe client of the same settings (kit.transport.diagnose)
    whose librdkafka log lines stay out of the terminal: a wrong password, SASL mechanism or
    security protocol fails at once naming its KIT_KAFKA_* setting; no answer within
    `timeout` names KIT_BOOTSTRAP_SERVERS. (`admin` is not the probe: a client's error and
    log callbacks are fixed when it is made.)
    """
    bootstrap, source = resolve_bootstrap(settings)
    wait_until_reachable(
        base_config(settings), timeout, settings=settings, bootstrap=bootstrap, source=source
    )


def ensure_topics(
    admin: AdminClient, specs: Iterable[TopicSpec], timeout: float = 30.0
) -> list[str]:
    """Create missing topics; warn where an existing one differs. Returns those created."""
    wanted = {s.name: s for s in specs}
    if not wanted:
        return []
    existing = admin.list_topics(timeout=timeout).topics
    missing = [s for n, s in wanted.items() if n not in existing]
    for name, spec in wanted.items():
        meta = existing.get(name)
        if meta is not None and meta.error is None and len(meta.partitions) != spec.partitions:
            log.info(
                "topic %s exists with %d partitions (declared %d); using it as it is",
                name,
                len(meta.partitions),
                spec.partitions,
            )
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replication, config=dict(s.config)) for s in missing],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            denied = authorization_message(err, topic=name, action="create")
            raise BrokerError(denied or f"cannot create topic {name!r}: {err}") from None
    _wait_for_metadata(admin, created, timeout)
    return created


def _wait_for_metadata(admin: AdminClient, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        topics = admin.list_topics(timeout=timeout).topics
        pending = {
            n
            for n in pending
            if n not in topics
            or topics[n].error is not None
            or any(p.leader < 0 for p in topics[n].partitions.values())
        }
        if pending:
            time.sleep(0.05)
    if pending:
        raise BrokerError(f"topics not ready after {timeout:.0f}s: {sorted(pending)}")


class KafkaSink:
    """The runtime's producer side: topics prepared off the loop, back-pressure absorbed.

    `produce` never blocks on the network: a topic it has not met raises TopicNotReady
    (`await prepare(topic)`, or `ensure_topic` from a worker thread, first), and a record
    librdkafka refuses at once (too large, unknown partition) is reported through the
    delivery callback like a refusal by the broker.
    """

    def __init__(
        self,
        producer: Producer,
        admin: AdminClient,
        settings: Settings,
        *,
        producer_limit: int | None = None,
    ) -> None:
        self.producer = producer
        self.admin = admin
        self.settings = settings
        self.known_topics: set[str] = set()
        self.partitions: dict[str, int] = {}
        """Partition counts of prepared topics, where known."""
        self.limits: dict[str, int] = {}
        """`max.message.bytes` of topics, where known (see `learn_limits`)."""
        configured = client_config(settings).get("message.max.bytes")
        self.producer_limit = int(configured or producer_limit or PRODUCER_MESSAGE_MAX_BYTES)
        """The largest record the producer sends (librdkafka `message.max.bytes`)."""

    def ensure_topic(self, topic: str, partitions: int | None = None) -> None:
        """Create `topic` if the broker does not have it (blocking: not on the loop)."""
        if topic in self.known_topics:
            return
        ensure_topics(
            self.admin,
            [
                TopicSpec(
                    topic,
                    partitions or self.settings.topic_partitions,
                    self.settings.topic_replication,
                )
            ],
        )
        meta = self.admin.list_topics(topic, timeout=10).topics.get(topic)
        if meta is not None and meta.error is None:
            self.partitions[topic] = len(meta.partitions)
        self.known_topics.add(topic)

    async def prepare(self, topic: str) -> None:
        """`ensure_topic` in a worker thread, so the event loop never waits on metadata."""
        if topic not in self.known_topics:
            await asyncio.to_thread(self.ensure_topic, topic)

    def record_limit(self, topic: str) -> int | None:
        """The largest record this sink can put on `topic`: the smaller of the topic's
        `max.message.bytes` (when learned) and the producer's `message.max.bytes`."""
        limit = self.limits.get(topic)
        return self.producer_limit if limit is None else min(limit, self.producer_limit)

    def learn_limits(self, topics: Iterable[str], timeout: float = 15.0) -> dict[str, int]:
        """Read `max.message.bytes` of existing topics (blocking); returns what it learned."""
        learned = topic_limits(self.admin, topics, timeout)
        self.limits.update(learned)
        return learned

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]] | None,
        on_delivery: Callable[[Any, Any], None],
        partition: int | None = None,
        timestamp: int = 0,
    ) -> None:
        """Queue one record; when librdkafka's queue is full, serve callbacks and retry.

        `partition` None lets the partitioner choose (as does a partition the topic does
        not have); `timestamp` 0 means now. Raises TopicNotReady for an unprepared topic.
        """
        if topic not in self.known_topics:
            raise TopicNotReady(topic)
        if partition is not None and partition >= self.partitions.get(topic, partition + 1):
            partition = None
        deadline = 0.0
        hdrs: Any = headers
        while True:
            try:
                if partition is not None or timestamp:
                    self.producer.produce(
                        topic,
                        value,
                        key,
                        -1 if partition is None else partition,
                        on_delivery=on_delivery,
                        timestamp=timestamp,
                        headers=hdrs,
                    )
                elif headers:
                    self.producer.produce(topic, value, key, on_delivery=on_delivery, headers=hdrs)
                else:
                    self.producer.produce(topic, value, key, on_delivery=on_delivery)
                return
            except BufferError:
                now = time.monotonic()
                if not deadline:
                    deadline = now + self.settings.delivery_timeout
                elif now > deadline:
                    raise DeliveryError(
                        f"producer queue stayed full for {self.settings.delivery_timeout}s"
                    ) from None
                self.producer.poll(0.01)
            except KafkaException as exc:  # refused before it was queued: report it as such
                on_delivery(exc.args[0], Unsent(topic, key, value, headers, partition))
                return


@dataclass(frozen=True)
class Unsent:
    """A record librdkafka refused in produce(), shaped like the Message of a delivery report."""

    _topic: str
    _key: bytes | None
    _value: bytes | None
    _headers: list[tuple[str, bytes]] | None
    _partition: int | None

    def topic(self) -> str:
        """The topic it was for."""
        return self._topic

    def key(self) -> bytes | None:
        """Its key."""
        return self._key

    def value(self) -> bytes | None:
        """Its value."""
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        """Its headers."""
        return self._headers

    def partition(self) -> int:
        """The partition asked for, or -1."""
        return -1 if self._partition is None else self._partition


def record_size(msg: Any) -> int:
    """Bytes of a record's key, value and headers (what counts against size limits)."""
    header_bytes = sum(len(k) + len(v or b"") for k, v in msg.headers() or [])
    return len(msg.key() or b"") + len(msg.value() or b"") + header_bytes


def topic_limits(
    admin: AdminClient, topics: Iterable[str], timeout: float = 15.0
) -> dict[str, int]:
    """`max.message.bytes` of each existing topic among `topics` (blocking)."""
    names = sorted(set(topics))
    if not names:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    out: dict[str, int] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        try:
            entries = future.result(timeout=timeout)
        except KafkaException as exc:
            log.debug("cannot read the configuration of %s: %s", resource.name, exc)
            continue
        entry = entries.get("max.message.bytes")
        if entry is not None and entry.value is not None:
            out[resource.name] = int(entry.value)
    return out


def raise_topic_limits(
    admin: AdminClient, limits: dict[str, int], timeout: float = 15.0
) -> dict[str, str]:
    """Raise `max.message.bytes` of topics to the given values; returns {topic: error} for
    each one the broker refused (for example for lack of ALTER_CONFIGS permission)."""
    failed: dict[str, str] = {}
    for name, limit in sorted(limits.items()):
        resource = ConfigResource(
            ResourceType.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(
                    "max.message.bytes",
                    str(limit),
                    incremental_operation=AlterConfigOpType.SET,
                )
            ],
        )
        future = admin.incremental_alter_configs([resource], request_timeout=timeout)[resource]
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            failed[name] = str(exc.args[0])
    return failed


def describe_record(msg: Any) -> str:
    """topic[partition]@offset, for logs."""
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"


def json_headers(headers: list[tuple[str, bytes]] | None) -> str:
    """Headers as JSON text, for logs and the CLI."""
    return json.dumps({k: v.decode(errors="replace") for k, v in headers or []})
