"""confluent-kafka plumbing: client configs, topic admin, the producer sink, the schema topic."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from kit.config import Settings, client_config, resolve_bootstrap
from kit.errors import BrokerError, ConfigError, DeliveryError
from kit.transport.schema_topic import SchemaTopic

__all__ = [
    "KafkaSink",
    "SchemaTopic",
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


def producer_config(settings: Settings, *, low_latency: bool = False) -> dict[str, Any]:
    """Producer settings: idempotent, acks=all; linger 0 on reply paths."""
    return {
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": settings.linger_ms
        if settings.linger_ms is not None
        else (0 if low_latency else 5),
        "socket.nagle.disable": True,
        "message.timeout.ms": int(settings.delivery_timeout * 1000),
        "queue.buffering.max.messages": 200_000,
        **base_config(settings),
    }


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


def make_producer(settings: Settings, *, low_latency: bool = False) -> Producer:
    """A Producer; a bad setting raises ConfigError naming its environment variable."""
    return _client(Producer, producer_config(settings, low_latency=low_latency), settings)


def make_consumer(settings: Settings, group: str, **overrides: Any) -> Consumer:
    """A Consumer in `group`; a bad setting raises ConfigError naming it."""
    return _client(Consumer, {**consumer_config(settings, group), **overrides}, settings)


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
    config: tuple[tuple[str, str], ...] = ()


def check_reachable(admin: AdminClient, settings: Settings, timeout: float = 15.0) -> None:
    """Fail with ConfigError naming KIT_BOOTSTRAP_SERVERS if no broker answers in time."""
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        bootstrap, source = resolve_bootstrap(settings)
        raise ConfigError(
            "KIT_BOOTSTRAP_SERVERS",
            f"no broker answered at {bootstrap} (from {source}) within {timeout:.0f}s: {exc}",
        ) from None


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
            raise BrokerError(f"cannot create topic {name!r}: {err}") from None
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
    """The runtime's producer side: creates unknown topics on first use, absorbs back-pressure."""

    def __init__(self, producer: Producer, admin: AdminClient, settings: Settings) -> None:
        self.producer = producer
        self.admin = admin
        self.settings = settings
        self.known_topics: set[str] = set()

    def ensure_topic(self, topic: str, partitions: int | None = None) -> None:
        """Create `topic` if the broker does not have it (once per topic per process)."""
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
        self.known_topics.add(topic)

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

        `partition` None lets the partitioner choose; `timestamp` 0 means now.
        """
        if topic not in self.known_topics:
            self.ensure_topic(topic)
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


def describe_record(msg: Any) -> str:
    """topic[partition]@offset, for logs."""
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"


def json_headers(headers: list[tuple[str, bytes]] | None) -> str:
    """Headers as JSON text, for logs and the CLI."""
    return json.dumps({k: v.decode(errors="replace") for k, v in headers or []})
