"""The producer side of the Kafka transport: KafkaSink, and what it reports for a refused record."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from kit.config import Settings, client_config
from kit.context import TopicNotReady
from kit.errors import DeliveryError
from kit.transport.admin import TopicSpec, ensure_topics, topic_limits

if TYPE_CHECKING:
    from kit.transport.registry_format import TopicRegistrar

__all__ = [
    "PRODUCER_MESSAGE_MAX_BYTES",
    "REFUSED",
    "TOO_LARGE",
    "KafkaSink",
    "Unsent",
    "record_size",
    "refused_for_good",
]

PRODUCER_MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's default `message.max.bytes`: the largest record a producer sends."""

TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE})
"""Produce errors of a record (or of its batch) larger than its topic or producer takes."""

REFUSED = frozenset(
    {KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG, KafkaError.RECORD_LIST_TOO_LARGE}
)
"""Other produce errors after which sending the same record again cannot succeed."""

_FOR_GOOD = TOO_LARGE | REFUSED


# Any: the error of a delivery report (a KafkaError), or an exception a sink raised
def refused_for_good(err: Any) -> bool:
    """Whether a delivery error says the record will never be taken (too large, invalid)."""
    return isinstance(err, KafkaError) and err.code() in _FOR_GOOD


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
        self.registrar: TopicRegistrar | None = None
        """With the schema registry format and TopicNameStrategy: registers a schema under
        a topic's subject before its first record there (see TopicRegistrar)."""

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

    def topic_exists(self, topic: str) -> bool:
        """Whether the cluster has `topic` (blocking: not on the loop). Lists every topic
        rather than asking for this one, so that no broker auto-creates it."""
        if topic in self.known_topics:
            return True
        meta = self.admin.list_topics(timeout=10).topics.get(topic)
        return meta is not None and meta.error is None

    async def prepare(self, topic: str) -> None:
        """`ensure_topic` in a worker thread, so the event loop never waits on metadata;
        and the schemas waiting for the topic's subject, registered there the same way."""
        if topic not in self.known_topics:
            await asyncio.to_thread(self.ensure_topic, topic)
        registrar = self.registrar
        if registrar is not None and registrar.pending(topic):
            await asyncio.to_thread(registrar.register, topic)

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
        on_delivery: Callable[[Any, Any], None],  # Any: as kit.protocol.Sink.produce's
        partition: int | None = None,
        timestamp: int = 0,
    ) -> None:
        """Queue one record; when librdkafka's queue is full, serve callbacks and retry.

        `partition` None lets the partitioner choose (as does a partition the topic does
        not have); `timestamp` 0 means now. Raises TopicNotReady for an unprepared topic
        (or a schema not yet registered under its subject, with a `registrar`).
        """
        if topic not in self.known_topics:
            raise TopicNotReady(topic)
        if self.registrar is not None and self.registrar.needs(topic, value):
            raise TopicNotReady(topic)
        if partition is not None and partition >= self.partitions.get(topic, partition + 1):
            partition = None
        deadline = 0.0
        hdrs: Any = headers  # Any: the stubs' headers type is wider, and list is invariant
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


# Any: a MessageLike or a confluent_kafka.Message, whose stubbed headers() type is wider
def record_size(msg: Any) -> int:
    """Bytes of a record's key, value and headers (what counts against size limits)."""
    header_bytes = sum(len(k) + len(v or b"") for k, v in msg.headers() or [])
    return len(msg.key() or b"") + len(msg.value() or b"") + header_bytes
