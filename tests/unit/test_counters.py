"""The counters a dispatcher keeps (kit.telemetry.Stats): what `kit services --stats` and
/metrics show. Review findings of issue 14: handlers sharing a name, retry waits counted
as handling time, and a registration growing with every topic published to."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from kit import Service
from kit.context import Ticket
from kit.telemetry import MAX_LEARNED, Stats, active
from kit.transport.memory import MemoryBroker
from tests.fixtures.events import InvoiceIssued, OrderPlaced
from tests.integration.helpers import order
from tests.unit.test_trace_headers import CODEC, dispatcher


@pytest.fixture
def timed() -> Iterator[None]:
    """As with KIT_METRICS_PORT set: every handler call timed."""
    before = active.timed
    active.timed = True
    try:
        yield
    finally:
        active.timed = before


def test_two_handlers_of_one_name_count_apart_and_do_not_crash(timed: None) -> None:
    svc = Service("same-names")

    def handle_orders(event: OrderPlaced) -> None:
        return None

    def handle_invoices(event: InvoiceIssued) -> None:
        return None

    handle_orders.__name__ = handle_invoices.__name__ = "handle"
    svc.handler()(handle_orders)
    svc.handler()(handle_invoices)
    d, _sink = dispatcher(svc)
    broker = MemoryBroker(1)
    o = order(1)
    batch = [
        broker.append("shop.OrderPlaced", CODEC.encode(o), b"k", []),
        broker.append(
            "billing.InvoiceIssued",
            CODEC.encode(
                InvoiceIssued(invoice_id="i", order_id="o", total_cents=1, issued_at=o.placed_at)
            ),
            b"k",
            [],
        ),
    ]
    ticket = Ticket(2)
    asyncio.run(d.handle_batch(batch, ticket))  # both on partition 0, in one batch
    assert ticket.offsets == {("shop.OrderPlaced", 0): 1, ("billing.InvoiceIssued", 0): 1}
    handled = {name: h.handled for name, h in d.stats.handlers.items()}
    assert handled == {"handle@shop.OrderPlaced": 1, "handle@billing.InvoiceIssued": 1}
    assert all(h.latency.count == 1 and not h.started for h in d.stats.handlers.values())


def test_waiting_to_retry_is_not_handling_time() -> None:
    svc = Service("fails-once")
    calls: list[int] = []

    @svc.handler(retries=1)
    def on_order(event: OrderPlaced) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first time")

    d, _sink = dispatcher(svc)
    d.settings = d.settings.model_copy(update={"retry_backoff": 0.5})
    msg = MemoryBroker(1).append("shop.OrderPlaced", CODEC.encode(order(1)), b"k", [])
    asyncio.run(d.handle_batch([msg], Ticket(1)))
    stats = d.stats.handlers["on_order"]
    assert (stats.handled, stats.failed, stats.retried, len(calls)) == (1, 1, 1, 2)
    assert 0 <= stats.busy < 0.5, "the 0.5 s backoff is not counted as handling"


def test_the_topics_learned_are_capped() -> None:
    stats = Stats()
    for n in range(MAX_LEARNED + 40):
        stats.learn_published(f"tenant-{n}", "billing.InvoiceIssued")
    stats.learn_published("tenant-0", "shop.OrderPlaced")  # a known topic still learns
    assert len(stats.published) == MAX_LEARNED and stats.learned_all
    assert stats.published["tenant-0"] == {"billing.InvoiceIssued", "shop.OrderPlaced"}
