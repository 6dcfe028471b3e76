"""Helpers for integration tests: raw reads, running runtimes, building orders."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from kit import Runtime, Service, Settings
from tests.fixtures.events import OrderLine, OrderPlaced


def order(n: int, quantity: int = 1) -> OrderPlaced:
    """A small valid order numbered n."""
    return OrderPlaced(
        order_id=f"o-{n}",
        customer=f"c-{n % 7}",
        lines=[OrderLine(sku="tea", quantity=quantity, unit_price_cents=100 + n)],
        placed_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def produce_raw(bootstrap: str, topic: str, rows: list[dict[str, Any]]) -> None:
    """Produce raw records (Producer.produce keyword rows: value, key, partition, headers,
    timestamp) with a plain idempotent producer, and wait until all are confirmed."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for row in rows:
        producer.produce(topic, **row)
    assert producer.flush(15) == 0


def read_raw(bootstrap: str, topic: str, count: int, timeout: float = 20.0) -> list[Message]:
    """Every record of `topic` (all partitions, from the beginning); fail if fewer than
    `count` arrive in time. Reads on to the end offsets, so extra records show up too."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"raw-{topic}", "enable.auto.commit": False}
    )
    try:
        deadline = time.monotonic() + timeout
        parts: dict = {}
        while not parts and time.monotonic() < deadline:
            meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
            parts = meta.partitions if meta and meta.error is None else {}
        consumer.assign([TopicPartition(topic, p, -2) for p in parts])
        out: list[Message] = []
        while len(out) < count and time.monotonic() < deadline:
            out += [m for m in consumer.consume(500, 0.2) if m.error() is None]
        assert len(out) >= count, f"read {len(out)} of {count} records from {topic} in {timeout}s"
        # then the rest up to the end offsets; positions, not counts, say when: a
        # transactional topic's commit markers take offsets but are no records
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 5) for p in parts}
        wanted = [TopicPartition(topic, p) for p, (low, high) in ends.items() if high > low]

        def behind() -> bool:
            return any(tp.offset < ends[tp.partition][1] for tp in consumer.position(wanted))

        while behind() and time.monotonic() < deadline:
            out += [m for m in consumer.consume(500, 0.2) if m.error() is None]
        return out
    finally:
        consumer.close()


@contextlib.asynccontextmanager
async def running(service: Service, settings: Settings, **kwargs: object) -> AsyncIterator[Runtime]:
    """Start a runtime, wait until it has partitions, stop it gracefully on exit."""
    runtime = Runtime(service, settings, **kwargs)  # type: ignore[arg-type]
    await runtime.start()
    task = asyncio.create_task(runtime.run(), name=f"test-{service.name}")
    try:
        await asyncio.wait_for(runtime.ready.wait(), 30)
        if runtime.announcer is not None:  # discoverable: fail-fast callers find it at once
            assert await runtime.announcer.confirmed(30), "registration not delivered"
        yield runtime
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 60)
