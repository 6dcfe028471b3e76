"""The harness runs the real runtime loop over the memory transport: commit rule, batches,
assignment and pause/resume behave as on Kafka, with no broker and no threads."""

from __future__ import annotations

import asyncio
import threading

from kit import Service
from kit.config import load_settings
from kit.runtime import Runtime
from kit.testing.harness import Harness
from kit.transport.memory import MemoryBroker, MemoryTransport
from tests.fixtures import billing, stockroom
from tests.fixtures.events import CheckStock, InvoiceIssued, OrderPlaced, StockLevel
from tests.integration.helpers import order


def run(coro):
    return asyncio.run(coro)


def test_the_harness_commits_what_the_runtime_handled_and_nothing_past_it() -> None:
    h = Harness(billing.service, partitions=2)
    for n in range(10):
        h.send(order(n), key=f"o-{n}")
    assert run(h.run()) == 10
    runtime = h.runtimes["billing"]
    consumer = h.transports["billing"].consumer
    ends = {
        ("shop.OrderPlaced", p): len(records)
        for p, records in enumerate(h.broker.topics["shop.OrderPlaced"])
    }
    assert sum(ends.values()) == 10 and all(ends.values())
    # offsets of the last batch are stored by the next fetch, as on Kafka
    assert run(runtime.step()) == 0
    assert consumer.committed == ends
    assert runtime.assignment == set(ends) and runtime.ready.is_set()
    assert runtime.dispatcher.handled == 10


def test_a_handler_that_fails_for_good_is_dead_lettered_and_its_offset_committed() -> None:
    h = Harness(billing.service)
    h.send(order(1, quantity=0), key="zero")
    h.send(order(2), key="ok")
    run(h.run())
    run(h.runtimes["billing"].step())
    assert h.transports["billing"].consumer.committed == {("shop.OrderPlaced", 0): 2}
    assert [d.key for d in h.dead_letters("shop.OrderPlaced")] == [b"zero"]


def test_batches_follow_kit_batch_size() -> None:
    settings = load_settings(
        bootstrap_servers="memory", retry_backoff=0.0, retry_backoff_max=0.0, batch_size=4
    )
    sizes: list[int] = []
    svc = Service("sizes")

    @svc.handler(topic="shop.OrderPlaced")
    async def on_order(event: OrderPlaced) -> None:
        sizes.append(len(event.lines))

    h = Harness(svc, settings=settings)
    for n in range(10):
        h.send(order(n), key=f"o-{n}")
    runtime = h.runtimes["sizes"]

    async def steps() -> list[int]:
        await h.start()
        return [await runtime.step() for _ in range(4)]

    assert run(steps()) == [4, 4, 2, 0]
    assert len(sizes) == 10


def test_a_service_can_call_its_own_responder_from_a_handler() -> None:
    svc = Service("selfcall")
    levels: list[int] = []

    @svc.responder()
    async def check(request: CheckStock) -> StockLevel:
        return StockLevel(sku=request.sku, available=7, enough=request.quantity <= 7)

    @svc.handler(topic="shop.OrderPlaced")
    async def on_order(event: OrderPlaced, ctx) -> None:
        level = await ctx.request(check, CheckStock(sku=event.lines[0].sku, quantity=1))
        levels.append(level.available)

    h = Harness(svc)
    h.send(order(1), key="o-1")
    h.send(order(2), key="o-2")
    run(h.run())
    assert levels == [7, 7]
    assert len(h.replies("selfcall")) == 2


def test_paused_partitions_are_not_fetched_until_resumed() -> None:
    broker = MemoryBroker(partitions=2)
    transport = MemoryTransport(broker, "billing")
    settings = load_settings(bootstrap_servers="memory")
    runtime = Runtime(billing.service, settings, extensions=[], transport=transport)
    for n in range(6):
        broker.append("shop.OrderPlaced", b"x", f"k{n}".encode(), partition=n % 2)

    async def scenario() -> tuple[list[int], list[int]]:
        await runtime.start()
        consumer = transport.consumer
        await consumer.pause([("shop.OrderPlaced", 1)])
        first = [m.partition() for m in await consumer.fetch()]
        await consumer.resume([("shop.OrderPlaced", 1)])
        second = [m.partition() for m in await consumer.fetch()]
        return first, second

    first, second = run(scenario())
    assert first == [0, 0, 0] and second == [1, 1, 1]


def test_the_harness_starts_no_thread() -> None:
    before = set(threading.enumerate())
    h = Harness(billing.service, stockroom.service)
    h.send(order(1), key="o-1")
    run(h.run())
    assert run(h.request(stockroom.check_stock, CheckStock(sku="tea", quantity=1))).enough
    assert h.emitted(InvoiceIssued)
    assert set(threading.enumerate()) <= before


def test_a_call_to_a_service_outside_the_harness_is_dead_lettered_after_the_retries() -> None:
    """It was retried as transient, back to back, for KIT_TRANSIENT_TIMEOUT (30 s and
    hundreds of thousands of attempts): nothing in a harness changes by waiting."""
    from kit.testing.harness import NotInHarness
    from tests.fixtures import orderdesk

    h = Harness(orderdesk.service)  # orderdesk calls stockroom, which is not in the harness
    h.send(order(1), key="o-1")
    run(h.run())
    [letter] = h.dead_letters("shop.OrderPlaced")
    assert letter.headers["kit-dlt-attempts"] == b"4"  # 1 + KIT_RETRIES
    assert letter.headers["kit-dlt-exception-type"] == NotInHarness.__qualname__.encode()
    assert b"add 'stockroom' to the Harness" in letter.headers["kit-dlt-exception-message"]
