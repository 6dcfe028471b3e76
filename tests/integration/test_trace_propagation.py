"""W3C trace headers on a real broker with OpenTelemetry spans off (KIT_TRACING=off): a record's
traceparent and tracestate go on to the event its handler publishes, the request it makes,
the reply to that request and, for a failing record, its dead letter; records without them
give records without them. Everything is read back raw from the broker and counted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Message

from kit import Codec, Settings
from kit.protocol import CORRELATION_ID, MARKER
from kit.requests import reply_topic_name
from kit.telemetry import TRACEPARENT, TRACESTATE, install_tracer, tracer
from tests.fixtures import traced
from tests.fixtures.events import OrderPlaced
from tests.integration.helpers import order, produce_raw, read_raw, running

pytestmark = pytest.mark.integration

PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
STATE = b"vendor=opaque,other=1"
TRACE = {TRACEPARENT: PARENT, TRACESTATE: STATE}
CODEC = Codec(OrderPlaced.__kit_repository__)


@pytest.fixture(autouse=True)
def propagation_only() -> Iterator[None]:
    """No OpenTelemetry spans: the base Tracer, whatever was installed before."""
    old = install_tracer(None)
    try:
        yield
    finally:
        install_tracer(old)


def trace_of(msg: Message) -> dict[str, bytes]:
    """The trace headers of a raw record (each must appear at most once)."""
    headers: list[tuple[str, bytes]] = msg.headers() or []  # type: ignore[assignment]
    found = [(k, v) for k, v in headers if k in (TRACEPARENT, TRACESTATE)]
    assert len(found) == len(dict(found)), f"repeated trace headers: {found}"
    return dict(found)


def rows(topic_orders: list[int], traced_ones: set[int]) -> list[dict[str, object]]:
    return [
        {
            "value": CODEC.encode(order(n)),
            "key": f"o-{n}".encode(),
            "headers": [("x-user", b"ada"), *TRACE.items()] if n in traced_ones else None,
        }
        for n in topic_orders
    ]


def test_trace_headers_follow_events_calls_replies_and_dead_letters(
    kit_settings: Settings, kafka_bootstrap: str
) -> None:
    settings = kit_settings.model_copy(update={"tracing": False})
    t = traced.make(f"tp-{uuid.uuid4().hex[:12]}")
    dlt = f"{t.failing}{settings.dead_letter_suffix}"

    async def scenario() -> dict[str, list[Message]]:
        async with running(t.b, settings), running(t.a, settings) as a:
            assert not tracer().spans
            replies = reply_topic_name(a.instance_id)
            await asyncio.to_thread(produce_raw, kafka_bootstrap, t.orders, rows([1, 2], {1}))
            await asyncio.to_thread(produce_raw, kafka_bootstrap, t.failing, rows([3, 4], {3}))
            # invoices first: one is published once its handler returned, its call answered;
            # the replies are read while A runs (its reply topic is deleted when it stops),
            # beside the requester's liveness marks
            topics = {t.invoices: t.invoices, t.check: t.check, "replies": replies, dlt: dlt}
            return {
                name: await asyncio.to_thread(read_raw, kafka_bootstrap, topic, 2)
                for name, topic in topics.items()
            }

    got = asyncio.run(scenario())
    got["replies"] = [m for m in got["replies"] if MARKER not in dict(m.headers() or ())]
    assert {k: len(v) for k, v in got.items()} == {t.invoices: 2, t.check: 2, dlt: 2, "replies": 2}

    invoices = {m.key(): m for m in got[t.invoices]}
    assert trace_of(invoices[b"o-1"]) == TRACE
    assert dict(invoices[b"o-1"].headers() or ())["x-kind"] == b"invoice"
    assert "x-user" not in dict(invoices[b"o-1"].headers() or ())
    assert invoices[b"o-2"].headers() == [("x-kind", b"invoice")]

    # the requests: one per order, the traced order's with its trace; each reply has its request's
    requests = {dict(m.headers() or ())[CORRELATION_ID]: trace_of(m) for m in got[t.check]}
    replies = {dict(m.headers() or ())[CORRELATION_ID]: trace_of(m) for m in got["replies"]}
    assert sorted(requests.values(), key=len) == [{}, TRACE]
    assert replies == requests

    letters = {m.key(): m for m in got[dlt]}
    assert trace_of(letters[b"o-3"]) == TRACE
    assert dict(letters[b"o-3"].headers() or ())["x-user"] == b"ada"  # the original's headers
    assert trace_of(letters[b"o-4"]) == {}
