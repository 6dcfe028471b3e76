"""In-memory topics with Kafka's shape (partitions, offsets, keys, headers) for tests and replay."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MemoryBroker", "MemoryMessage"]

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class MemoryMessage:
    """A stored record; its methods mirror confluent_kafka.Message."""

    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _headers: tuple[tuple[str, bytes], ...]
    _timestamp: int
    producer: str = field(default="", compare=False)
    """Who produced it: a service name, "input", or "" (unknown)."""

    def topic(self) -> str:
        """The record's topic."""
        return self._topic

    def partition(self) -> int:
        """The record's partition."""
        return self._partition

    def offset(self) -> int:
        """The record's offset in its partition."""
        return self._offset

    def key(self) -> bytes | None:
        """The record key."""
        return self._key

    def value(self) -> bytes | None:
        """The record value."""
        return self._value

    def headers(self) -> Headers | None:
        """The record headers, or None when there are none (as confluent-kafka does)."""
        return list(self._headers) or None

    def timestamp(self) -> tuple[int, int]:
        """(type, milliseconds): type 1 is CreateTime."""
        return (1, self._timestamp)

    def error(self) -> None:
        """Always None: stored records are never errors."""
        return None


def partition_for(key: bytes | None, partitions: int, counter: int) -> int:
    """Deterministic partitioning: CRC-32 of the key, else round robin."""
    if key is None:
        return counter % partitions
    return zlib.crc32(key) % partitions


class MemoryBroker:
    """Topics held in memory. Delivery is immediate and always succeeds.

    A logical clock gives each record a timestamp (start + 1 ms per record), so runs are
    deterministic. Topics are created on first use with `partitions` partitions.
    """

    def __init__(self, partitions: int = 1, start_ms: int = 1_767_225_600_000) -> None:
        self.default_partitions = partitions
        self.topics: dict[str, list[list[MemoryMessage]]] = {}
        self.log: list[MemoryMessage] = []
        self.clock_ms = start_ms
        self._round_robin = 0

    def create_topic(self, name: str, partitions: int | None = None) -> None:
        """Create a topic if it does not exist."""
        if name not in self.topics:
            self.topics[name] = [[] for _ in range(partitions or self.default_partitions)]

    def append(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers | tuple[tuple[str, bytes], ...] | None = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
        producer: str = "",
    ) -> MemoryMessage:
        """Store a record and return it."""
        self.create_topic(topic)
        parts = self.topics[topic]
        if partition is None or partition >= len(parts):
            partition = partition_for(key, len(parts), self._round_robin)
            self._round_robin += 1
        self.clock_ms += 1
        msg = MemoryMessage(
            topic,
            partition,
            len(parts[partition]),
            key,
            value,
            tuple((k, v) for k, v in headers or ()),
            timestamp or self.clock_ms,
            producer,
        )
        parts[partition].append(msg)
        self.log.append(msg)
        return msg

    def sink(self, producer: str) -> MemorySink:
        """A Sink (see kit.dispatch) that stores what `producer` emits."""
        return MemorySink(self, producer)


class MemorySink:
    """The dispatcher's Sink on a MemoryBroker: stores, then reports delivery at once."""

    def __init__(self, broker: MemoryBroker, producer: str) -> None:
        self.broker = broker
        self.producer = producer

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        on_delivery: Callable[[Any, Any], None],
        partition: int | None = None,
    ) -> None:
        """Store one record and call on_delivery(None, message)."""
        msg = self.broker.append(
            topic, value, key, headers, partition=partition, producer=self.producer
        )
        on_delivery(None, msg)

    async def prepare(self, topic: str) -> None:
        """Create `topic` if it does not exist (memory topics are also created on use)."""
        self.broker.create_topic(topic)

    def record_limit(self, topic: str) -> int | None:
        """None: memory topics take records of any size."""
        return None
