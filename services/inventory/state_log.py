"""Where inventory's stock lives: a compacted Kafka topic (or a memory topic in the Harness).

The topic (`SHOP_INVENTORY_TOPIC`, default `inventory.state`) has one partition and
`cleanup.policy=compact`. Keys: `sku/<sku>` → StockState, `order/<order_id>` →
ReservationState (a tombstone once released), `offset/<topic>/<partition>` →
AppliedOffset. Compaction keeps the last record per key, so the topic stays about as
large as the state itself, and reading it from the start gives the state back.

On Kafka, the writes of one operation (a reserve changes several SKUs and an order) go in
one transaction, and the rebuild reads with `isolation.level=read_committed`: it sees an
operation whole or not at all. The transactional id is derived from the topic, so a
second instance writing the same stock fences the first (its next write fails, and that
instance stops): one instance owns the stock. Every client call runs in a worker thread
(`asyncio.to_thread`) with a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from kit import Codec, Settings
from kit.errors import BrokerError
from kit.transport.admin import TopicSpec, ensure_topics
from kit.transport.kafka import admin_client, make_consumer, make_producer
from kit.transport.memory import MemoryBroker
from services.inventory.stock import STATE_TYPES, Change

__all__ = ["KafkaStateLog", "MemoryStateLog", "StateLog", "StateWriteError"]

log = logging.getLogger("services.inventory")


class StateWriteError(Exception):
    """The changes of an operation were not written (nothing of them is on the topic)."""


class StateLog(Protocol):
    """Where the state records go, and where they are read back from at start."""

    async def open(self) -> None:
        """Make the topic if missing, and get ready to write."""
        ...

    async def load(self) -> list[Change]:
        """Every committed record on the topic, oldest first."""
        ...

    async def write(self, changes: list[Change]) -> None:
        """Write the changes of one operation, all or none; StateWriteError if none."""
        ...

    async def close(self) -> None:
        """Release the clients."""
        ...


def encode(codec: Codec, change: Change) -> tuple[bytes, bytes | None]:
    """(key, value) bytes of a change; value None for a tombstone."""
    value = None if change.value is None else codec.encode(change.value)
    return change.key.encode(), value


def decode(codec: Codec, key: bytes | None, value: bytes | None) -> Change:
    """The change a record holds; ValueError for a key inventory does not write."""
    text = (key or b"").decode()
    model = STATE_TYPES.get(text.split("/", 1)[0])
    if model is None:
        raise ValueError(f"unexpected key {text!r} on the inventory state topic")
    return Change(text, None if value is None else codec.decode(value, model))


class MemoryStateLog:
    """The state topic on the Harness's MemoryBroker (its records show in `h.outputs`)."""

    def __init__(self, broker: MemoryBroker, topic: str, codec: Codec) -> None:
        self.broker = broker
        self.topic = topic
        self.codec = codec

    async def open(self) -> None:
        """Make the one-partition topic."""
        self.broker.create_topic(self.topic, 1)

    async def load(self) -> list[Change]:
        """Every record of the topic, oldest first."""
        return [decode(self.codec, m.key(), m.value()) for m in self.broker.topics[self.topic][0]]

    async def write(self, changes: list[Change]) -> None:
        """Append the records (memory delivery always succeeds)."""
        for change in changes:
            key, value = encode(self.codec, change)
            self.broker.append(self.topic, value, key, partition=0, producer="inventory")

    async def close(self) -> None:
        """Nothing to release."""


class KafkaStateLog:
    """The state topic on Kafka: transactional writes, a read_committed rebuild.

    `on_fenced` is called (on the loop) when another producer took the transactional id:
    another inventory instance owns the stock now.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        codec: Codec,
        on_fenced: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.codec = codec
        self.timeout = settings.delivery_timeout
        self.on_fenced = on_fenced
        self._producer: Producer | None = None

    async def open(self) -> None:
        """Create the compacted topic if missing; start the transactional producer, which
        aborts whatever transaction a crashed predecessor left open."""
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        spec = TopicSpec(
            self.topic, 1, self.settings.topic_replication, (("cleanup.policy", "compact"),)
        )
        ensure_topics(admin_client(self.settings), [spec], timeout=self.timeout)
        producer = make_producer(
            self.settings, low_latency=True, transactional_id=f"{self.topic}.writer"
        )
        try:
            producer.init_transactions(self.timeout)
        except KafkaException as exc:
            raise BrokerError(f"cannot start writing {self.topic}: {exc}") from None
        self._producer = producer

    async def load(self) -> list[Change]:
        """Read the topic from its start to its end, in a worker thread."""
        return await asyncio.to_thread(self._read)

    def _read(self) -> list[Change]:
        deadline = time.monotonic() + self.timeout
        consumer = make_consumer(
            self.settings,
            f"{self.topic}.loader",  # assign() only: no group is joined, nothing committed
            **{"enable.auto.commit": False, "isolation.level": "read_committed"},
        )
        try:
            tp = TopicPartition(self.topic, 0)
            low, high = consumer.get_watermark_offsets(tp, timeout=self.timeout, cached=False)
            changes: list[Change] = []
            position = low
            consumer.assign([TopicPartition(self.topic, 0, low)])
            while position < high:
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"{self.topic} not read to its end ({high}) within {self.timeout}s "
                        f"(at {position})"
                    )
                msg = consumer.poll(0.2)
                if msg is None:  # only transaction markers or compacted offsets left
                    (where,) = consumer.position([tp])
                    position = max(position, where.offset)
                    continue
                if msg.error() is not None:
                    log.warning("reading %s: %s", self.topic, msg.error())
                    continue
                position = (msg.offset() or 0) + 1
                changes.append(decode(self.codec, msg.key(), msg.value()))
            return changes
        finally:
            consumer.close()

    async def write(self, changes: list[Change]) -> None:
        """Write the changes in one transaction, in a worker thread, with a deadline."""
        records = [encode(self.codec, change) for change in changes]
        try:
            await asyncio.to_thread(self._transact, records)
        except (KafkaException, BufferError) as exc:
            if _fatal(exc):  # fenced: another producer has our transactional id
                log.error("%s: %s; another inventory instance owns the stock", self.topic, exc)
                self.on_fenced()
            raise StateWriteError(f"{self.topic}: {exc}") from None

    def _transact(self, records: list[tuple[bytes, bytes | None]]) -> None:
        producer = self._producer
        if producer is None:
            raise StateWriteError(f"{self.topic}: not opened")
        producer.begin_transaction()
        try:
            for key, value in records:
                producer.produce(self.topic, value, key, partition=0)
            producer.commit_transaction(self.timeout)
        except Exception as exc:
            if not _fatal(exc):
                producer.abort_transaction(self.timeout)
            raise

    async def close(self) -> None:
        """Drop the producer (every write was committed or aborted already)."""
        self._producer = None


def _fatal(exc: Exception) -> bool:
    """True for a producer error that ends the producer (e.g. fenced by a newer one)."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(err, KafkaError) and err.fatal()
