"""What a handler sees (Context) and how a batch waits for its deliveries (Ticket)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from kit import Codec, Context, EncodeError, SchemaRepository, Service, load_settings
from kit.context import Failure, Ticket, header
from kit.dispatch import Dispatcher
from kit.transport.memory import MemoryBroker, MemoryMessage
from tests.fixtures import SCHEMAS
from tests.fixtures.events import InvoiceIssued, OrderChecked, OrderLine, OrderPlaced, StockLevel

CODEC = Codec(SchemaRepository(SCHEMAS))
PLACED = datetime(2026, 1, 1, tzinfo=UTC)


def order(n: int) -> OrderPlaced:
    return OrderPlaced(
        order_id=f"o-{n}",
        customer="c",
        lines=[OrderLine(sku="tea", quantity=1, unit_price_cents=100)],
        placed_at=PLACED,
    )


def invoice(n: int) -> InvoiceIssued:
    return InvoiceIssued(invoice_id=f"inv-{n}", order_id=f"o-{n}", total_cents=n, issued_at=PLACED)


SERVICE = Service("billing")


def dispatcher() -> Dispatcher:
    settings = load_settings({}, bootstrap_servers="memory", retry_backoff=0.0)
    return Dispatcher(SERVICE, CODEC, settings, MemoryBroker().sink("billing"))


def context(message: Any) -> Context:
    return Context(dispatcher(), message)


@dataclass
class Bare:
    """A record as confluent-kafka may give it: no headers, no partition, no offset."""

    value_: bytes | None = None
    headers_: list[tuple[str, bytes]] | None = None

    def topic(self) -> str | None:
        return None

    def partition(self) -> int | None:
        return None

    def offset(self) -> int | None:
        return None

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes | None:
        return self.value_

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self.headers_

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)


RECORD = MemoryMessage(
    "shop.OrderPlaced",
    2,
    41,
    b"o-1",
    b"value",
    (("trace", b"t-1"), ("tenant", b"a"), ("trace", b"t-2")),
    1_767_225_600_250,
)


def test_the_context_tells_where_the_record_came_from() -> None:
    ctx = context(RECORD)
    assert ctx.key == b"o-1"
    assert ctx.topic == "shop.OrderPlaced"
    assert (ctx.partition, ctx.offset) == (2, 41)
    assert ctx.timestamp == datetime(2026, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC)
    assert ctx.timestamp.tzinfo is UTC
    assert ctx.headers == {"trace": b"t-2", "tenant": b"a"}  # the last value of a name wins
    assert ctx.service is SERVICE


def test_a_record_without_position_or_headers_gives_neutral_values() -> None:
    ctx = context(Bare())
    assert (ctx.key, ctx.topic, ctx.partition, ctx.offset, ctx.headers) == (None, "", 0, -1, {})
    assert ctx.timestamp == datetime(1970, 1, 1, tzinfo=UTC)


def test_publish_queues_the_encoded_event_on_its_schema_topic() -> None:
    ctx = context(RECORD)
    ctx.publish(invoice(1), key="o-1")
    ctx.publish(invoice(2), key=b"o-2", topic="invoices.eu", headers={"a": "1", "b": b"\x00"})
    ctx.publish(OrderChecked(order_id="o-3", accepted=False))
    assert ctx.outbox == [
        ("billing.InvoiceIssued", CODEC.encode(invoice(1)), b"o-1", None),
        ("invoices.eu", CODEC.encode(invoice(2)), b"o-2", [("a", b"1"), ("b", b"\x00")]),
        (
            "shop.OrderChecked",
            CODEC.encode(OrderChecked(order_id="o-3", accepted=False)),
            None,
            None,
        ),
    ]
    assert CODEC.decode(ctx.outbox[0][1], InvoiceIssued) == invoice(1)


def test_an_event_that_cannot_be_encoded_raises_in_publish_and_queues_nothing() -> None:
    ctx = context(RECORD)
    broken = StockLevel.model_construct(sku=5, available=1, enough=True)  # sku is no string
    with pytest.raises(EncodeError, match=r"inventory\.StockLevel"):
        ctx.publish(broken)
    assert ctx.outbox == []


def run_handler(handler_body, *, retries: int = 0) -> tuple[list[MemoryMessage], Dispatcher]:
    """Run one record through a one-handler service on the memory transport."""
    svc = Service("billing")

    @svc.handler()
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        handler_body(event, ctx)

    settings = load_settings({}, bootstrap_servers="memory", retry_backoff=0.0, retries=retries)
    broker = MemoryBroker()
    d = Dispatcher(svc, CODEC, settings, broker.sink("billing"))
    msg = MemoryBroker().append("shop.OrderPlaced", CODEC.encode(order(1)), b"o-1")
    asyncio.run(d.handle_batch([msg], Ticket()))
    return broker.log, d


def test_published_events_are_sent_when_the_handler_returns() -> None:
    def body(event: OrderPlaced, ctx: Context) -> None:
        ctx.publish(invoice(1), key=event.order_id)
        ctx.publish(invoice(2), key=event.order_id)

    sent, _ = run_handler(body)
    assert [
        (m.topic(), m.key(), CODEC.decode(m.value(), InvoiceIssued).invoice_id) for m in sent
    ] == [
        ("billing.InvoiceIssued", b"o-1", "inv-1"),
        ("billing.InvoiceIssued", b"o-1", "inv-2"),
    ]


def test_a_handler_that_raises_publishes_nothing() -> None:
    def body(event: OrderPlaced, ctx: Context) -> None:
        ctx.publish(invoice(1))
        raise ValueError("after publishing")

    sent, d = run_handler(body)
    assert [m.topic() for m in sent] == ["shop.OrderPlaced.dlt"] and d.dead_lettered == 1


def test_an_attempt_that_failed_leaves_nothing_behind_for_the_next_one() -> None:
    attempts: list[int] = []

    def body(event: OrderPlaced, ctx: Context) -> None:
        attempts.append(len(attempts))
        ctx.publish(invoice(len(attempts)))
        if len(attempts) == 1:
            raise ValueError("first attempt")

    sent, _ = run_handler(body, retries=1)
    assert len(attempts) == 2
    assert [CODEC.decode(m.value(), InvoiceIssued).invoice_id for m in sent] == ["inv-2"]


def test_request_without_a_requester_says_the_transport_cannot() -> None:
    ctx = context(RECORD)
    with pytest.raises(RuntimeError, match="does not support requests"):
        asyncio.run(ctx.request("stockroom.check_stock", order(1), reply=StockLevel))


def test_request_goes_to_the_dispatchers_requester() -> None:
    asked: list[tuple[Any, ...]] = []

    class Requester:
        async def request(self, target, event, *, reply, timeout, key):
            asked.append((target, event, reply, timeout, key))
            return StockLevel(sku="tea", available=1, enough=True)

    async def factory() -> Requester:
        return Requester()

    d = dispatcher()
    d.requester = factory
    ctx = Context(d, RECORD)
    level = asyncio.run(
        ctx.request("stockroom.check_stock", order(1), reply=StockLevel, timeout=2.0, key="o-1")
    )
    assert level == StockLevel(sku="tea", available=1, enough=True)
    assert asked == [("stockroom.check_stock", order(1), StockLevel, 2.0, "o-1")]


def test_header_finds_the_first_value_of_a_name() -> None:
    assert header(RECORD, "trace") == b"t-1"
    assert header(RECORD, "missing") is None
    assert header(Bare(), "trace") is None


# --- the Ticket ------------------------------------------------------------------------


def test_a_ticket_is_done_only_once_closed_and_every_delivery_reported() -> None:
    ticket = Ticket()
    assert ticket.pending == 0 and not ticket.closed and not ticket.done  # still being handled
    ticket.closed = True
    assert ticket.done  # nothing emitted: done at once
    ticket.closed = False
    ticket.pending = 2
    ticket.closed = True
    report = ticket.output_of(RECORD)
    report(None, None)
    assert not ticket.done
    report(None, None)
    assert ticket.done and ticket.failures == [] and ticket.error is None


def test_output_of_records_a_failure_with_the_input_record_that_produced_it() -> None:
    ticket = Ticket()
    ticket.pending = 3
    other = MemoryMessage("shop.OrderPlaced", 0, 7, None, b"v", (), 0)
    ticket.output_of(RECORD)(None, "delivered")
    ticket.output_of(RECORD)("MSG_SIZE_TOO_LARGE", "the invoice")
    ticket.output_of(other, "dead-letter")("UNKNOWN_TOPIC", "the dead letter")
    assert ticket.pending == 0
    assert ticket.failures == [
        Failure(RECORD, "MSG_SIZE_TOO_LARGE", "the invoice", "output"),
        Failure(other, "UNKNOWN_TOPIC", "the dead letter", "dead-letter"),
    ]
    assert ticket.error == "MSG_SIZE_TOO_LARGE"  # the first failure


def test_a_failure_of_unknown_origin_is_recorded_without_a_source() -> None:
    ticket = Ticket()
    ticket.pending = 1
    ticket.delivered("TIMED_OUT", "record")
    assert ticket.failures == [Failure(None, "TIMED_OUT", "record", "output")]


def test_a_reply_that_cannot_be_delivered_is_dropped_not_failed() -> None:
    ticket = Ticket()
    ticket.pending = 2
    ticket.closed = True
    ticket.settled(None, None)
    ticket.settled("UNKNOWN_TOPIC_OR_PART", None)
    assert ticket.done and ticket.dropped == 1
    assert ticket.failures == [] and ticket.error is None
