"""Exactly-once processing on a real broker: each batch is one transaction with its offsets."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from kit import Settings
from kit.exactly_once import transactional_id
from kit.runtime import Runtime
from kit.testing.wait import wait_until_async
from tests.fixtures.events import InvoiceIssued
from tests.integration.helpers import order, produce_raw, read_raw, running
from tests.integration.test_reliability import (
    CODEC,
    committed,
    create_topic,
    end_offsets,
    invoicing,
)

pytestmark = pytest.mark.integration


def read_committed(bootstrap: str, topic: str) -> list[InvoiceIssued]:
    """Every committed record of `topic`, to its end offsets, as a read_committed reader."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "eos-reader",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in parts}
        out: list[InvoiceIssued] = []
        done: set[int] = {p for p, end in ends.items() if end == 0}
        while len(done) < len(parts):
            for msg in consumer.consume(500, 1.0):
                if msg.error() is not None:
                    continue
                out.append(InvoiceIssued.model_validate(CODEC.decode_any(msg.value())))
            for p in parts:  # the last offset of a partition is a commit marker
                position = consumer.position([TopicPartition(topic, p)])[0].offset
                if position >= ends[p]:
                    done.add(p)
        return out
    finally:
        consumer.close()


def test_each_output_is_committed_once_with_its_input_offsets(
    kit_settings: Settings, unique_name: Callable[[str], str], kafka_bootstrap: str
) -> None:
    orders, invoices, group = unique_name("orders"), unique_name("invoices"), unique_name("g")
    create_topic(kafka_bootstrap, orders, 3)
    create_topic(kafka_bootstrap, invoices, 3, **{"max.message.bytes": "512000"})
    n = 2000
    rows = [{"value": CODEC.encode(order(i)), "key": f"k{i % 40}".encode()} for i in range(n)]
    produce_raw(kafka_bootstrap, orders, rows)
    svc = invoicing(orders, invoices, group, big={"o-700"})
    svc.exactly_once = True
    settings = kit_settings.model_copy(update={"batch_size": 100})

    async def scenario() -> Runtime:
        async with running(svc, settings) as runtime:
            assert runtime.transactions is not None
            await wait_until_async(
                lambda: (
                    committed(kafka_bootstrap, group, orders)
                    == end_offsets(kafka_bootstrap, orders)
                ),
                timeout=60,
                what="every input offset committed in a transaction",
            )
            return runtime

    runtime = asyncio.run(scenario())
    assert runtime.transactions is not None
    out = read_committed(kafka_bootstrap, invoices)
    counts = Counter(inv.order_id for inv in out)
    assert set(counts) == {f"o-{i}" for i in range(n)} - {"o-700"}
    assert max(counts.values()) == 1, "no output committed twice"
    assert runtime.transactions.aborted >= 1, "the refused output aborted its transaction"
    (dead,) = read_raw(kafka_bootstrap, f"{orders}.dlt", 1)
    h = dict(dead.headers())
    assert h["kit-dlt-reason"] == b"delivery"
    assert dead.value() == CODEC.encode(order(700))


def test_transactional_ids_are_stable_per_host_slot_and_unique_among_live_instances(
    tmp_path: Path,
) -> None:
    first, lock1 = transactional_id("billing", None, tmp_path)
    second, lock2 = transactional_id("billing", None, tmp_path)
    assert first != second and first.endswith("-0") and second.endswith("-1")
    assert lock1 is not None
    lock1.close()  # the first instance exits (or is killed): its slot is free again
    again, lock3 = transactional_id("billing", None, tmp_path)
    assert again == first, "a restarted instance gets its old id back"
    assert transactional_id("billing", "explicit-id", tmp_path) == ("explicit-id", None)
    for lock in (lock2, lock3):
        assert lock is not None
        lock.close()


def test_an_exactly_once_responder_answers_at_once_and_aborts_nothing(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    """Review finding: replies go through the plain producer and are counted in the batch,
    but the transaction's commit polled only the transactional one, so each batch with a
    request waited out the delivery timeout, aborted, and answered again."""
    from kit import Client
    from tests.fixtures.events import CheckStock, StockLevel
    from tests.integration.test_rpc import inventory

    name = unique_name("inv")
    svc = inventory(name)
    svc.exactly_once = True

    async def scenario() -> tuple[list[StockLevel], int]:
        async with running(svc, kit_settings) as runtime, Client(kit_settings) as client:
            assert runtime.transactions is not None
            levels = [
                await client.request(
                    f"{name}.check",
                    CheckStock(sku="tea", quantity=2, request_id=f"r-{n}"),
                    reply=StockLevel,
                    timeout=5.0,
                )
                for n in range(3)
            ]
            return levels, runtime.transactions.aborted

    levels, aborted = asyncio.run(scenario())
    assert [level.request_id for level in levels] == ["r-0", "r-1", "r-2"]
    assert aborted == 0
