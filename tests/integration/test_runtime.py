"""The runtime on a real broker: typed round trip, group sharing, restart, shutdown."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest

from kit import Client, Context, Service, Settings
from kit.testing.wait import wait_until_async
from tests.fixtures.events import InvoiceIssued, OrderPlaced
from tests.integration.helpers import order, running

pytestmark = pytest.mark.integration


def billing(
    orders: str, invoices: str, seen: list[OrderPlaced] | None = None, group: str | None = None
) -> Service:
    svc = Service("billing-test", group_id=group)

    @svc.handler(topic=orders)
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        if seen is not None:
            seen.append(event)
        total = sum(line.quantity * line.unit_price_cents for line in event.lines)
        ctx.publish(
            InvoiceIssued(
                invoice_id=f"i-{event.order_id}",
                order_id=event.order_id,
                total_cents=total,
                issued_at=event.placed_at,
            ),
            key=ctx.key,
            topic=invoices,
            headers={"source-offset": str(ctx.offset)},
        )

    return svc


def test_typed_round_trip(kit_settings: Settings, unique_name: Callable[[str], str]) -> None:
    orders, invoices = unique_name("orders"), unique_name("invoices")

    async def scenario() -> None:
        async with running(billing(orders, invoices, group=unique_name("g")), kit_settings):
            async with Client(kit_settings) as client:
                for n in range(20):
                    await client.publish(order(n), key=f"o-{n}", topic=orders)
                got = [(m, e) async for m, e in client.consume(invoices, InvoiceIssued, limit=20)]
        assert len(got) == 20
        by_id = {e.order_id: (m, e) for m, e in got}
        msg, inv = by_id["o-3"]
        assert isinstance(inv, InvoiceIssued)
        assert inv.total_cents == 103 and inv.invoice_id == "i-o-3"
        assert msg.key() == b"o-3"
        assert dict(msg.headers())["source-offset"].isdigit()

    asyncio.run(scenario())


def test_two_instances_share_partitions_and_handle_10000_exactly_once(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    topic, group = unique_name("readings"), unique_name("g")
    seen: dict[str, list[OrderPlaced]] = {"a": [], "b": []}

    def make(name: str) -> Service:
        svc = Service("shared", group_id=group)

        @svc.handler(topic=topic, partitions=6)
        async def on_order(event: OrderPlaced) -> None:
            seen[name].append(event)

        return svc

    async def scenario() -> None:
        async with running(make("a"), kit_settings) as a, running(make("b"), kit_settings) as b:
            await wait_until_async(
                lambda: (
                    len(a.assignment) + len(b.assignment) == 6 and a.assignment and b.assignment
                ),
                timeout=30,
                what="both instances own partitions",
            )
            async with Client(kit_settings) as client:
                # 100 keys, 100 events each, sequence number in the quantity field
                await asyncio.gather(
                    *(
                        client.publish(order(k, quantity=seq + 1), key=f"k{k}", topic=topic)
                        for seq in range(100)
                        for k in range(100)
                    )
                )
            await wait_until_async(
                lambda: len(seen["a"]) + len(seen["b"]) >= 10_000, timeout=60, what="10,000 handled"
            )
            assert a.assignment.isdisjoint(b.assignment)

    asyncio.run(scenario())
    everything = seen["a"] + seen["b"]
    assert len(everything) == 10_000
    counts = Counter((e.order_id, e.lines[0].quantity) for e in everything)
    assert len(counts) == 10_000 and max(counts.values()) == 1, "an event was handled twice"
    assert seen["a"] and seen["b"], "one instance handled nothing"
    for events in seen.values():
        per_key: dict[str, list[int]] = defaultdict(list)
        for e in events:
            per_key[e.order_id].append(e.lines[0].quantity)
        for key, seqs in per_key.items():
            assert seqs == sorted(seqs), f"order of key {key} not kept"


def test_restarted_service_resumes_from_committed_offset(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    orders, invoices, group = unique_name("orders"), unique_name("invoices"), unique_name("g")
    first: list[OrderPlaced] = []
    second: list[OrderPlaced] = []

    async def scenario() -> None:
        async with Client(kit_settings) as client:
            async with running(billing(orders, invoices, first, group), kit_settings):
                for n in range(30):
                    await client.publish(order(n), key=f"o-{n}", topic=orders)
                await wait_until_async(lambda: len(first) == 30, what="first 30 handled")
            for n in range(30, 50):
                await client.publish(order(n), key=f"o-{n}", topic=orders)
            async with running(billing(orders, invoices, second, group), kit_settings):
                await wait_until_async(lambda: len(second) >= 20, what="next 20 handled")

    asyncio.run(scenario())
    assert sorted(e.order_id for e in second) == sorted(f"o-{n}" for n in range(30, 50))


def test_graceful_stop_finishes_and_commits_in_flight_work(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    orders, group = unique_name("orders"), unique_name("g")
    started = asyncio.Event
    handled: list[str] = []
    redelivered: list[str] = []

    def slow_service(
        sink: list[str], gate: asyncio.Event | None, entered: asyncio.Event | None
    ) -> Service:
        svc = Service("slow", group_id=group)

        @svc.handler(topic=orders, partitions=1)
        async def on_order(event: OrderPlaced) -> None:
            if entered is not None:
                entered.set()
            if gate is not None:
                await gate.wait()
            sink.append(event.order_id)

        return svc

    async def scenario() -> None:
        gate, entered = asyncio.Event(), started()
        async with Client(kit_settings) as client:
            for n in range(5):
                await client.publish(order(n), key="same", topic=orders)
            from kit import Runtime

            runtime = Runtime(slow_service(handled, gate, entered), kit_settings)
            task = asyncio.create_task(runtime.run())
            await asyncio.wait_for(entered.wait(), 30)
            runtime.stop()  # the batch is in flight: the handler is blocked on the gate
            gate.set()
            await asyncio.wait_for(task, 30)
            assert handled == [f"o-{n}" for n in range(5)]
            await client.publish(order(99), key="same", topic=orders)
            async with running(slow_service(redelivered, None, None), kit_settings):
                await wait_until_async(lambda: redelivered, what="the record after the stop")
        assert redelivered == ["o-99"], "work finished during shutdown was not committed"

    asyncio.run(scenario())
