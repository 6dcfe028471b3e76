"""Bad input on a real broker: undecodable records and failing handlers go to the DLT."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from kit import Client, Codec, Context, Service, Settings
from kit.testing.wait import wait_until_async
from tests.fixtures.events import OrderPlaced
from tests.integration.helpers import order, produce_raw, read_raw, running

pytestmark = pytest.mark.integration


def test_undecodable_records_are_dead_lettered_and_neighbours_handled(
    kit_settings: Settings, unique_name: Callable[[str], str], kafka_bootstrap: str
) -> None:
    topic = unique_name("orders")
    handled: list[str] = []
    svc = Service("strict", group_id=unique_name("g"))

    @svc.handler(topic=topic, partitions=1)
    async def on_order(event: OrderPlaced) -> None:
        handled.append(event.order_id)

    good = Codec(OrderPlaced.__kit_repository__).encode(order(1))
    bad = [
        b"\x07random bytes, not avro",
        b"\xc3\x01" + bytes.fromhex("0011223344556677") + b"\x02",  # unknown writer schema
        good[: len(good) // 2],  # truncated
    ]

    async def scenario() -> None:
        async with running(svc, kit_settings), Client(kit_settings) as client:
            await client.publish(order(1), key="k", topic=topic)
            for n, value in enumerate(bad):
                await client.publish_raw(topic, value, key=f"bad-{n}", headers={"trace": "t1"})
                await client.publish(order(n + 2), key="k", topic=topic)
            await wait_until_async(lambda: len(handled) == 4, what="the 4 valid records")

    asyncio.run(scenario())
    assert handled == ["o-1", "o-2", "o-3", "o-4"]
    dead = read_raw(kafka_bootstrap, f"{topic}.dlt", 3)
    assert [m.value() for m in dead] == bad
    assert [m.key() for m in dead] == [b"bad-0", b"bad-1", b"bad-2"]
    headers = [dict(m.headers()) for m in dead]
    for n, h in enumerate(headers):
        assert h["kit-dlt-reason"] == b"decode"
        assert h["kit-dlt-exception-type"] == (b"UnknownWriterSchema" if n == 1 else b"DecodeError")
        assert h["kit-dlt-original-topic"] == topic.encode()
        assert h["kit-dlt-original-partition"] == b"0"
        assert h["kit-dlt-original-offset"] == str(2 * n + 1).encode()
        assert int(h["kit-dlt-original-timestamp"]) > 0
        assert h["kit-dlt-service"] == b"strict"
        assert h["trace"] == b"t1", "original headers are kept"
    assert b"magic" in headers[0]["kit-dlt-exception-message"]
    assert b"unknown writer schema" in headers[1]["kit-dlt-exception-message"]


def test_dead_letters_keep_their_source_partition(
    kit_settings: Settings, unique_name: Callable[[str], str], kafka_bootstrap: str
) -> None:
    topic = unique_name("orders")
    handled: list[int] = []
    svc = Service("spread", group_id=unique_name("g"))

    @svc.handler(topic=topic, partitions=3)
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        handled.append(ctx.partition)

    good = Codec(OrderPlaced.__kit_repository__).encode(order(1))

    async def scenario() -> None:
        async with running(svc, kit_settings):
            rows = [{"value": b"junk-%d" % p, "partition": p} for p in (0, 1, 2)]
            rows += [{"value": good, "partition": p} for p in (0, 1, 2)]
            await asyncio.to_thread(produce_raw, kafka_bootstrap, topic, rows)
            await wait_until_async(lambda: len(handled) == 3, what="the 3 valid records")

    asyncio.run(scenario())
    assert sorted(handled) == [0, 1, 2]
    dead = read_raw(kafka_bootstrap, f"{topic}.dlt", 3)
    assert len(dead) == 3
    for m in dead:  # each in the partition it came from, so per-key order is kept
        assert m.value() == b"junk-%d" % m.partition()
        assert dict(m.headers())["kit-dlt-original-partition"] == str(m.partition()).encode()


def test_failing_handler_is_retried_then_dead_lettered(
    kit_settings: Settings, unique_name: Callable[[str], str], kafka_bootstrap: str
) -> None:
    topic = unique_name("orders")
    attempts: dict[str, int] = {}
    handled: list[str] = []
    svc = Service("flaky", group_id=unique_name("g"))

    @svc.handler(topic=topic, partitions=1, retries=2)
    async def on_order(event: OrderPlaced) -> None:
        attempts[event.order_id] = attempts.get(event.order_id, 0) + 1
        if event.order_id == "o-2":
            raise RuntimeError("payment service said no")
        if event.order_id == "o-3" and attempts["o-3"] < 3:
            raise ConnectionError("transient")
        handled.append(event.order_id)

    async def scenario() -> None:
        async with running(svc, kit_settings), Client(kit_settings) as client:
            for n in (1, 2, 3, 4):
                await client.publish(order(n), key="k", topic=topic)
            await wait_until_async(lambda: "o-4" in handled, what="o-4 handled")

    asyncio.run(scenario())
    assert handled == ["o-1", "o-3", "o-4"]
    assert attempts == {"o-1": 1, "o-2": 3, "o-3": 3, "o-4": 1}
    (dead,) = read_raw(kafka_bootstrap, f"{topic}.dlt", 1)
    h = dict(dead.headers())
    assert h["kit-dlt-reason"] == b"handler"
    assert h["kit-dlt-exception-type"] == b"RuntimeError"
    assert h["kit-dlt-exception-message"] == b"payment service said no"
    assert h["kit-dlt-attempts"] == b"3"
    assert h["kit-dlt-original-offset"] == b"1"
    assert b"on_order" in h["kit-dlt-stacktrace"]
