"""In-memory topics with Kafka's shape (partitions, offsets, keys, headers) for tests and replay."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kit.config import Settings
from kit.protocol import MessageLike
from kit.schema import Schema
from kit.service import Handler, Service
from kit.transport.base import Partition, Rebalance
from kit.transport.registry_format import RegistryFormat

__all__ = ["MemoryBroker", "MemoryConsumer", "MemoryMessage", "MemorySink", "MemoryTransport"]

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
        on_delivery: Callable[[Any, Any], None],  # Any: as kit.protocol.Sink.produce's
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


class MemoryConsumer:
    """`Consuming` on a MemoryBroker: one consumer group alone, owning every partition.

    `fetch` returns, in a fixed order (topics as subscribed, partitions in order), the
    records after the group's position, up to the batch size; `committed` holds what the
    commit rule let it store. No threads and no clock: the same input gives the same
    batches.
    """

    def __init__(self, broker: MemoryBroker, batch_size: int = 500) -> None:
        self.broker = broker
        self.batch_size = batch_size
        self.topics: list[str] = []
        self.positions: dict[Partition, int] = {}
        """The next offset to fetch, per partition."""
        self.committed: dict[Partition, int] = {}
        """The offsets stored (next to read), per partition."""
        self.paused: set[Partition] = set()
        self.only: set[str] | None = None
        """When set, fetch only from these topics (the Harness answering a request at once)."""
        self._listener: Rebalance | None = None
        self._assigned: set[Partition] = set()

    async def subscribe(self, topics: Sequence[str], listener: Rebalance) -> None:
        """Own every partition of `topics` (made if missing) at once."""
        self.topics = list(topics)
        self._listener = listener
        for topic in self.topics:
            self.broker.create_topic(topic)
        self._assign_new()

    def _assign_new(self) -> None:
        new = {
            (topic, p)
            for topic in self.topics
            for p in range(len(self.broker.topics.get(topic, [])))
        } - self._assigned
        if new and self._listener is not None:
            self._assigned |= new
            self._listener.assigned(new)

    async def fetch(self) -> Sequence[MessageLike]:
        """Store what was settled, then return the next records (at most the batch size)."""
        self._store()
        self._assign_new()
        batch: list[MessageLike] = []
        room = self.batch_size
        for topic in self.topics:
            if self.only is not None and topic not in self.only:
                continue
            for partition, records in enumerate(self.broker.topics.get(topic, [])):
                slot = (topic, partition)
                start = self.positions.get(slot, 0)
                if slot in self.paused or start >= len(records) or room <= 0:
                    continue
                taken = records[start : start + room]
                self.positions[slot] = start + len(taken)
                batch.extend(taken)
                room -= len(taken)
        # as Kafka's fetch does, let the loop's other tasks (the partition lanes) run: at
        # once with records, after a moment without (a running loop must not spin)
        await asyncio.sleep(0 if batch else 0.001)
        return batch

    def _store(self) -> None:
        if self._listener is not None:
            for slot, offset in self._listener.take().items():
                if slot in self._assigned:
                    self.committed[slot] = offset

    def pending(self) -> int:
        """Records on the subscribed topics not fetched yet (paused partitions too)."""
        return sum(
            len(records) - self.positions.get((topic, p), 0)
            for topic in self.topics
            for p, records in enumerate(self.broker.topics.get(topic, []))
        )

    async def pause(self, partitions: Iterable[Partition]) -> None:
        """Fetch nothing from these partitions until `resume`."""
        self.paused.update(partitions)

    async def resume(self, partitions: Iterable[Partition]) -> None:
        """Fetch from these partitions again."""
        self.paused.difference_update(partitions)

    async def close(self, timeout: float) -> None:
        """Settle, store, and give every partition up."""
        if self._listener is not None:
            await self._listener.settle(timeout)
            self._store()
            gone, self._assigned = self._assigned, set()
            self._listener.revoked(gone)


class MemoryTransport:
    """`Transport` on a MemoryBroker: what the Harness runs each service's Runtime on.

    Delivery is immediate and always succeeds; `lookup` asks `resolver` (e.g. the writer
    schemas of a recording fed to the harness). With a `registry` (a mock:// one, say),
    `publish_schemas` registers the writer schemas there, as the Kafka transport does.
    """

    def __init__(
        self,
        broker: MemoryBroker,
        name: str,
        resolver: Callable[[bytes], Schema | None] | None = None,
        registry: RegistryFormat | None = None,
    ) -> None:
        self.broker = broker
        self.sink = MemorySink(broker, name)
        self.reply_sink = self.sink
        self.consumer = MemoryConsumer(broker)
        self._resolver = resolver
        self.registry = registry
        self._write_registry = registry is not None and registry.settings.schema_registry_write

    async def open(
        self,
        service: Service,
        settings: Settings,
        *,
        group: str,
        instance_id: str,
        dead_letter_topic: Callable[[Handler], str],
        auto_commit: bool = True,
    ) -> None:
        """Create the service's topics."""
        self.consumer.batch_size = settings.batch_size
        for handler in service.handlers:
            self.broker.create_topic(handler.topic, handler.partitions)

    def poll(self, timeout: float) -> int:
        """0: delivery reports were given at produce time."""
        return 0

    async def lookup(self, fingerprint: bytes) -> Schema | None:
        """The resolver's schema for this fingerprint, if any."""
        return self._resolver(fingerprint) if self._resolver is not None else None

    async def publish_schemas(self, schemas: Iterable[Schema]) -> Mapping[bytes, bytes] | None:
        """With a registry to write to, register the schemas under their default topic's
        subject and return their headers; else nothing to do (the harness's readers share
        one codec)."""
        registry = self.registry
        if registry is None or not self._write_registry:
            return None
        return await asyncio.to_thread(registry.register_all, list(schemas))  # it blocks

    async def close(self) -> None:
        """Nothing to release."""
