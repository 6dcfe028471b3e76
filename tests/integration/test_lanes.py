"""Partition lanes on a real broker: a waiting handler overlaps partitions under a backlog,
each partition keeps its order, and what went in came out once, committed to the end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kit import Client, Context, Service, Settings
from kit.testing.wait import wait_until_async
from tests.fixtures.events import OrderPlaced
from tests.integration.helpers import order, read_raw, running

pytestmark = pytest.mark.integration

PARTS = 4
EVENTS = 400


def _committed_and_ends(bootstrap: str, group: str, topic: str) -> tuple[dict, dict]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTS)]
        done = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        return done, ends
    finally:
        consumer.close()


def test_a_waiting_handler_overlaps_partitions_in_order(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    orders, copies, group = unique_name("orders"), unique_name("copies"), unique_name("g")
    seen: list[tuple[int, int]] = []
    active: set[int] = set()
    peak = 0
    overlapped = asyncio.Event()

    svc = Service("lanes-test", group_id=group)

    @svc.handler(topic=orders, partitions=PARTS)
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        nonlocal peak
        active.add(ctx.partition)
        peak = max(peak, len(active))
        if len(active) > 1:
            overlapped.set()
        try:
            if ctx.offset == 0:  # each partition's first record waits for another's
                await asyncio.wait_for(overlapped.wait(), 30)
            await asyncio.sleep(0.002)  # the I/O the handler waits for
        finally:
            active.discard(ctx.partition)
        seen.append((ctx.partition, ctx.offset))
        ctx.publish(event, key=ctx.key, topic=copies)

    async def scenario() -> None:
        async with Client(kit_settings) as client:  # the backlog, before the service starts
            for n in range(EVENTS):
                await client.publish(order(n), key=f"k-{n % 40}", topic=orders)
        async with running(svc, kit_settings, extensions=[]):
            await wait_until_async(lambda: len(seen) >= EVENTS, timeout=60, what="all handled")

    bootstrap = kit_settings.bootstrap_servers or ""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(orders, PARTS, 1)]).values():
        future.result(30)  # PARTS partitions before the backlog goes in
    asyncio.run(scenario())
    assert peak > 1  # records of several partitions were handled at once
    assert len(seen) == len(set(seen)) == EVENTS  # each record once
    for p in {p for p, _ in seen}:
        offsets = [o for q, o in seen if q == p]
        assert offsets == sorted(offsets) == list(range(len(offsets)))  # in order, no gap
    assert len({p for p, _ in seen}) > 1
    assert len(read_raw(bootstrap, copies, EVENTS)) == EVENTS
    done, ends = _committed_and_ends(bootstrap, group, orders)
    assert sum(ends.values()) == EVENTS
    assert done == ends


def test_key_concurrency_overlaps_keys_of_one_partition_each_in_order(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    orders, group = unique_name("orders"), unique_name("g")
    keys, events = 8, 240
    seen: list[tuple[str, int]] = []
    active: set[str] = set()
    peak = overlaps = 0

    svc = Service("keys-test", group_id=group)

    @svc.handler(topic=orders, partitions=1, key_concurrency=4)
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        nonlocal peak, overlaps
        key = (ctx.key or b"").decode()
        overlaps += key in active
        active.add(key)
        peak = max(peak, len(active))
        try:
            await asyncio.sleep(0.002)  # the I/O the handler waits for
        finally:
            active.discard(key)
        seen.append((key, ctx.offset))

    async def scenario() -> None:
        async with Client(kit_settings) as client:  # the backlog, before the service starts
            for n in range(events):
                await client.publish(order(n), key=f"k-{n % keys}", topic=orders)
        async with running(svc, kit_settings, extensions=[]):
            await wait_until_async(lambda: len(seen) >= events, timeout=60, what="all handled")

    bootstrap = kit_settings.bootstrap_servers or ""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(orders, 1, 1)]).values():
        future.result(30)
    asyncio.run(scenario())
    assert 1 < peak <= 4  # keys of the one partition overlapped, at most 4 at a time
    assert overlaps == 0  # never two records of one key at once
    assert len(seen) == len(set(seen)) == events  # each record once
    for k in range(keys):
        offsets = [o for key, o in seen if key == f"k-{k}"]
        assert offsets == list(range(k, events, keys))  # in order per key, none missing
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tp = TopicPartition(orders, 0)
        [done] = consumer.committed([tp], timeout=10)
        assert done.offset == consumer.get_watermark_offsets(tp, timeout=10)[1] == events
    finally:
        consumer.close()
