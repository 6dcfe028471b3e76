"""What the shop did, read back from Kafka: this run's records on every shop topic.

A plain consumer with no group (assign(), from the run's start time) reads each topic the
shop writes; a value is decoded with its own writer schema and counted when its order id
(or SKU) belongs to the run. Each partition starts at its first record written since the
run's start time or, where there is none yet, at the end offset read just before that
lookup (so a record written meanwhile is read, never skipped). Topics that appear during
the run are picked up as they appear, from their first record.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from kit.codec import Codec
from kit.config import Settings
from kit.errors import DecodeError
from kit.transport.kafka import make_consumer, watermarks

__all__ = ["TOPICS", "EventLog", "start_offsets"]

TOPICS: dict[str, str] = {
    "orders.place_order": "order_id",
    "inventory.reserve": "order_id",
    "orders.OrderPlaced": "order_id",
    "payments.PaymentCompleted": "order_id",
    "payments.PaymentFailed": "order_id",
    "orders.OrderConfirmed": "order_id",
    "orders.OrderCancelled": "order_id",
    "inventory.release": "order_id",
    "inventory.Restocked": "sku",
}
"""Each topic the scenario counts, with the field that says which run a value belongs to."""
RECURRING = frozenset({"inventory.Restocked"})
"""Topics where one id (a SKU) has many records by design: none of them is a duplicate."""


def start_offsets(
    consumer: Consumer, partitions: list[TopicPartition], since_ms: int
) -> list[TopicPartition]:
    """Where to start reading each partition: its first record written at or after
    `since_ms`, or, where it has none, its end offset read just *before* that lookup.

    Not the -1 (OFFSET_END) that offsets_for_times gives for such a partition: the
    consumer would resolve that end only when it starts fetching, and skip a record
    written in between (a sparse topic, OrderCancelled say, meets this). An end offset
    read before the lookup cannot skip one: a record written after it is at or past it,
    and one written before it with a timestamp of the run would have been found.
    """
    ends = {}
    for tp in partitions:
        ends[tp.topic, tp.partition] = watermarks(
            consumer, TopicPartition(tp.topic, tp.partition), 10
        )[1]
    asked = [TopicPartition(tp.topic, tp.partition, since_ms) for tp in partitions]
    starts = consumer.offsets_for_times(asked, timeout=10)
    for tp in starts:
        if tp.offset < 0:  # no record since `since_ms` (yet)
            tp.offset = ends[tp.topic, tp.partition]
    return starts


class EventLog:
    """This run's records per topic (call `drain()` from a thread: it blocks briefly)."""

    def __init__(self, settings: Settings, codec: Codec, run: str, since_ms: int) -> None:
        self.run = run
        self.since_ms = since_ms
        self.codec = codec
        self.consumer: Consumer = make_consumer(
            settings, f"kit-shop-demo-{run}", **{"enable.auto.commit": False}
        )
        self.assigned: set[tuple[str, int]] = set()
        self.records: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
        """topic -> id -> decoded values (more than one: a duplicate)."""
        self.undecodable: Counter[str] = Counter()
        self._listed_at = 0.0

    def close(self) -> None:
        self.consumer.close()

    def _assign_new(self) -> None:
        """Assign the partitions not yet assigned, each at `start_offsets`' offset."""
        metadata = self.consumer.list_topics(timeout=10).topics
        fresh = []
        for topic in TOPICS:
            meta = metadata.get(topic)
            if meta is None or meta.error is not None:
                continue
            for partition in meta.partitions:
                if (topic, partition) not in self.assigned:
                    fresh.append(TopicPartition(topic, partition, self.since_ms))
        if not fresh:
            return
        self.consumer.incremental_assign(start_offsets(self.consumer, fresh, self.since_ms))
        self.assigned.update((tp.topic, tp.partition) for tp in fresh)

    def drain(self, max_seconds: float = 1.0) -> int:
        """Read what is there now (up to `max_seconds`); the number of this run's records."""
        now = time.monotonic()
        if len(self.assigned) == 0 or now - self._listed_at > 1.0:
            self._assign_new()
            self._listed_at = now
        if not self.assigned:
            return 0
        found = 0
        deadline = now + max_seconds
        while time.monotonic() < deadline:
            batch = self.consumer.consume(500, 0.1)
            if not batch:
                break
            found += sum(self._take(msg) for msg in batch)
        return found

    def _take(self, msg: Message) -> int:
        if msg.error() is not None or msg.value() is None:
            return 0
        topic = msg.topic()
        assert topic is not None
        try:
            value = self.codec.decode_any(msg.value())
        except DecodeError:
            self.undecodable[topic] += 1
            return 0
        ident = str(value.get(TOPICS.get(topic, "order_id"), ""))
        if self.run not in ident:
            return 0
        if topic in RECURRING:  # not an order: each record is its own
            ident = f"{ident}@{msg.partition()}/{msg.offset()}"
        self.records[topic].setdefault(ident, []).append(value)
        return 1

    # --- reading what was seen ---------------------------------------------------------

    def ids(self, topic: str) -> set[str]:
        """Distinct ids of this run on `topic`."""
        return set(self.records[topic])

    def count(self, topic: str) -> int:
        """This run's records on `topic`, duplicates included."""
        return sum(len(values) for values in self.records[topic].values())

    def duplicates(self, topic: str) -> int:
        """Records beyond the first for the same id on `topic`."""
        return sum(len(values) - 1 for values in self.records[topic].values())

    def first(self, topic: str) -> dict[str, dict[str, Any]]:
        """The first value seen per id on `topic`."""
        return {ident: values[0] for ident, values in self.records[topic].items()}

    def per_topic(self) -> dict[str, int]:
        return {topic: self.count(topic) for topic in TOPICS}
