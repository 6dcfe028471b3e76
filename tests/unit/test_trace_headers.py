"""W3C trace headers without OpenTelemetry spans: what a handled record carries (traceparent,
tracestate) goes on to the events its handler publishes, its dead letter and its reply, and
nothing else of it does; a record without them adds none."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from kit import Codec, Context, Service, load_settings
from kit.context import Ticket
from kit.dispatch import Dispatcher
from kit.protocol import CORRELATION_ID, Headers
from kit.requests import request_headers
from kit.telemetry import (
    TRACEPARENT,
    TRACESTATE,
    Tracer,
    current_record,
    install_tracer,
    tracer,
    with_trace,
)
from kit.testing.harness import Harness
from kit.transport.memory import MemoryBroker, MemoryMessage
from tests.fixtures import traced
from tests.fixtures.events import CheckStock, InvoiceIssued, OrderPlaced, StockLevel
from tests.integration.helpers import order

PARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
STATE = b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
TRACE = [(TRACEPARENT, PARENT), (TRACESTATE, STATE)]
CODEC = Codec(OrderPlaced.__kit_repository__)


@pytest.fixture(autouse=True)
def propagation_only() -> Iterator[None]:
    """No OpenTelemetry spans: the base Tracer, whatever was installed before."""
    old = install_tracer(None)
    try:
        assert not tracer().spans
        yield
    finally:
        install_tracer(old)


class Produced(NamedTuple):
    topic: str
    key: bytes | None
    headers: Headers | None
    """As given to produce(): None stays None."""

    def trace(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.headers or () if k in (TRACEPARENT, TRACESTATE)]


class Sink:
    """Records what is produced, as given, and confirms it at once."""

    def __init__(self) -> None:
        self.produced: list[Produced] = []

    def produce(self, topic, value, key, headers, on_delivery, partition=None) -> None:  # type: ignore[no-untyped-def]
        self.produced.append(Produced(topic, key, headers))
        on_delivery(None, None)

    async def prepare(self, topic: str) -> None:
        pass

    def record_limit(self, topic: str) -> int | None:
        return None

    def to(self, topic: str) -> list[Produced]:
        return [p for p in self.produced if p.topic == topic]


def dispatcher(service: Service) -> tuple[Dispatcher, Sink]:
    sink = Sink()
    settings = load_settings({}, bootstrap_servers="memory", retry_backoff=0.0, retries=0)
    return Dispatcher(service, CODEC, settings, sink), sink


def record(topic: str, value: bytes | None, headers: Headers | None = None) -> MemoryMessage:
    return MemoryBroker(1).append(topic, value, b"k", list(headers or ()))


def handle(d: Dispatcher, msg: MemoryMessage, path: str) -> None:
    """Through the hot path (handle_batch) or the full path (handle) of the dispatcher."""
    ticket = Ticket(1)
    if path == "hot":
        asyncio.run(d.handle_batch([msg], ticket))
    else:
        asyncio.run(d.handle(msg, ticket))
    assert ticket.pending == 0 and not ticket.failures


def invoice(event: OrderPlaced, n: int) -> InvoiceIssued:
    return InvoiceIssued(
        invoice_id=f"i-{n}", order_id=event.order_id, total_cents=n, issued_at=event.placed_at
    )


def publisher(headers: dict[str, str] | None) -> Service:
    """A handler publishing two events: one with `headers`, one with none."""
    svc = Service("trace-publisher")

    @svc.handler()
    def on_order(event: OrderPlaced, ctx: Context) -> None:
        ctx.publish(invoice(event, 1), key="k1", headers=headers)
        ctx.publish(invoice(event, 2), key="k2", topic="other")

    return svc


# --- events ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["hot", "full"])
def test_published_events_carry_the_records_trace_and_the_handlers_own_headers(
    path: str,
) -> None:
    d, sink = dispatcher(publisher({"x-kind": "invoice"}))
    incoming = [("x-user", b"ada"), *TRACE]
    handle(d, record("shop.OrderPlaced", CODEC.encode(order(1)), incoming), path)
    first, second = sink.produced
    assert first.topic == "billing.InvoiceIssued" and first.key == b"k1"
    assert first.headers == [("x-kind", b"invoice"), *TRACE]
    assert second.topic == "other" and second.headers == TRACE
    assert all(("x-user", b"ada") not in (p.headers or ()) for p in sink.produced)


@pytest.mark.parametrize("path", ["hot", "full"])
@pytest.mark.parametrize("incoming", [None, [("x-user", b"ada")]], ids=["none", "other"])
def test_a_record_without_trace_headers_gives_events_without_them(
    path: str, incoming: Headers | None
) -> None:
    d, sink = dispatcher(publisher({"x-kind": "invoice"}))
    handle(d, record("shop.OrderPlaced", CODEC.encode(order(1)), incoming), path)
    first, second = sink.produced
    assert first.headers == [("x-kind", b"invoice")]
    assert second.headers is None, "no headers given, none to carry: None, not []"


def test_a_traceparent_the_handler_sets_is_kept() -> None:
    own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    d, sink = dispatcher(publisher({TRACEPARENT: own, TRACESTATE: "mine=1"}))
    handle(d, record("shop.OrderPlaced", CODEC.encode(order(1)), TRACE), "hot")
    assert sink.produced[0].headers == [(TRACEPARENT, own.encode()), (TRACESTATE, b"mine=1")]
    assert sink.produced[1].headers == TRACE


def test_a_traceparent_the_handler_sets_gets_no_tracestate_of_the_record() -> None:
    own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    d, sink = dispatcher(publisher({TRACEPARENT: own}))
    handle(d, record("shop.OrderPlaced", CODEC.encode(order(1)), TRACE), "hot")
    assert sink.produced[0].headers == [(TRACEPARENT, own.encode())]


# --- dead letters and replies ----------------------------------------------------------


def test_dead_letters_keep_the_trace() -> None:
    svc = Service("trace-failing")

    @svc.handler()
    def on_order(event: OrderPlaced) -> None:
        raise ValueError("never")

    d, sink = dispatcher(svc)
    handle(d, record("shop.OrderPlaced", CODEC.encode(order(1)), TRACE), "hot")
    handle(d, record("shop.OrderPlaced", b"not avro", TRACE), "hot")  # a decode failure
    handle(d, record("shop.OrderPlaced", CODEC.encode(order(2))), "hot")
    letters = sink.to("shop.OrderPlaced.dlt")
    assert [p.trace() for p in letters] == [TRACE, TRACE, []]
    reasons = [dict(p.headers or ())["kit-dlt-reason"] for p in letters]
    assert reasons == [b"handler", b"decode", b"handler"]


def responder_service() -> Service:
    svc = Service("trace-answers")

    @svc.responder()
    def check(request: CheckStock) -> StockLevel:
        if request.sku == "boom":
            raise KeyError("boom")
        return StockLevel(sku=request.sku, available=1, enough=True)

    return svc


@pytest.mark.parametrize("sku", ["tea", "boom"], ids=["answer", "error"])
def test_a_reply_carries_the_requests_trace(sku: str) -> None:
    d, sink = dispatcher(responder_service())
    deadline = int((time.time() + 30) * 1000)
    headers = request_headers("c-1", "_kit.replies.me", deadline, "trace-answers", "check")
    value = CODEC.encode(CheckStock(sku=sku, quantity=1))
    handle(d, record("trace-answers.check", value, [*headers, *TRACE]), "full")
    (reply,) = sink.to("_kit.replies.me")
    assert dict(reply.headers or ())[CORRELATION_ID] == b"c-1"
    assert reply.trace() == TRACE
    handle(d, record("trace-answers.check", value, headers), "full")
    assert sink.to("_kit.replies.me")[1].trace() == []


def test_a_request_made_by_a_handler_sees_the_record_being_handled() -> None:
    """ctx.request sets current_record, which a requester's tracer().outgoing reads (the
    Kafka Requester and the Client call it with no source)."""
    seen: list[Headers | None] = []

    class Requester:
        async def request(self, target: Any, event: Any, **_kw: Any) -> StockLevel:
            seen.append(tracer().outgoing("b.check", None, [("kit-correlation-id", b"1")], None))
            return StockLevel(sku="tea", available=1, enough=True)

    async def factory() -> Requester:
        return Requester()

    svc = Service("trace-caller")

    @svc.handler()
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        await ctx.request("b.check", CheckStock(sku="tea", quantity=1), reply=StockLevel)

    d, _sink = dispatcher(svc)
    d.requester = factory
    handle(d, record("shop.OrderPlaced", CODEC.encode(order(1)), TRACE), "hot")
    handle(d, record("shop.OrderPlaced", CODEC.encode(order(2))), "hot")
    assert seen == [[("kit-correlation-id", b"1"), *TRACE], [("kit-correlation-id", b"1")]]
    assert current_record.get() is None


# --- the harness: events, calls and dead letters of one traced record -------------------


def traced_harness() -> tuple[traced.Traced, Harness]:
    """A and B in a harness, after two orders (the first traced) and one failing record."""
    t = traced.make("tp-unit")
    h = Harness(t.a, t.b)
    h.send(order(1), topic=t.orders, headers=dict(TRACE))
    h.send(order(2), topic=t.orders)
    h.send(order(3), topic=t.failing, headers=dict(TRACE))
    asyncio.run(h.run())
    return t, h


def test_harness_carries_the_trace_through_events_and_dead_letters() -> None:
    t, h = traced_harness()
    invoices = [o for o in h.outputs if o.topic == t.invoices]
    assert [(o.key, o.headers) for o in invoices] == [
        (b"o-1", {"x-kind": b"invoice", **dict(TRACE)}),
        (b"o-2", {"x-kind": b"invoice"}),
    ]
    (letter,) = h.dead_letters(t.failing)
    assert letter.headers[TRACEPARENT] == PARENT and letter.headers[TRACESTATE] == STATE


def test_harness_carries_the_trace_through_calls_and_replies() -> None:
    t, h = traced_harness()
    requests = [m for part in h.broker.topics[t.check] for m in part]
    assert [dict(m.headers() or ()).get(TRACEPARENT) for m in requests] == [PARENT, None]
    assert [r.headers.get(TRACEPARENT) for r in h.replies(t.b.name)] == [PARENT, None]


# --- with_trace and Tracer.outgoing ----------------------------------------------------


def test_with_trace_adds_only_the_trace_headers_the_given_ones_lack() -> None:
    src = record("t", b"v", [("x-user", b"ada"), *TRACE])
    given = [("x-kind", b"a")]
    assert with_trace(None, src) == TRACE
    assert with_trace([], src) == TRACE
    assert with_trace(given, src) == [("x-kind", b"a"), *TRACE]
    assert given == [("x-kind", b"a")], "the given list is not changed"
    both = [(TRACEPARENT, b"mine"), (TRACESTATE, b"m=1")]
    assert with_trace(both, src) == both


@pytest.mark.parametrize(
    "src_headers",
    [None, [], [("x-user", b"ada")], [(TRACEPARENT, None)]],
    ids=["none", "empty", "other", "null-value"],
)
def test_with_trace_of_a_record_without_trace_gives_the_headers_back(
    src_headers: list[tuple[str, bytes | None]] | None,
) -> None:
    src = MemoryMessage("t", 0, 0, None, b"v", tuple(src_headers or ()), 0)  # type: ignore[arg-type]
    given = [("x-kind", b"a")]
    assert with_trace(given, src) is given
    assert with_trace(None, src) is None
    assert with_trace(given, None) is given


def test_outgoing_without_a_source_reads_the_current_record() -> None:
    base = Tracer()
    assert base.outgoing("t", None, None, None) is None
    token = current_record.set(record("t", b"v", TRACE))
    try:
        assert base.outgoing("t", None, None, None) == TRACE
        other = record("t", b"v", [(TRACEPARENT, b"other")])
        assert base.outgoing("t", None, None, other) == [(TRACEPARENT, b"other")]
    finally:
        current_record.reset(token)
