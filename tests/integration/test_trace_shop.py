"""One order through the example shop on a real broker gives one connected OpenTelemetry
trace: events, calls (request, the responder's work, the reply) and every service's part.

The shop's four kit services run in this process, one Runtime each in one event loop, with
kit.otel's tracer on a TracerProvider of the test's own (the SDK's in-memory exporter; the
global provider is not set). The order is placed by a kit Client inside a root span. Run
ids keep this run's order, SKU and inventory state topic apart from other runs on the same
broker (the shop's topics and groups have fixed names).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from contextlib import AsyncExitStack

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import services.inventory
import services.notifications
import services.orders
import services.payments
from kit import Client, Settings
from kit.otel import OtelTracer
from kit.telemetry import install_tracer
from kit.testing.wait import wait_until_async
from services.orders.events import OrderLine, OrderResult, PlaceOrder
from tests.integration.helpers import running

pytestmark = pytest.mark.integration

SHOP = (services.inventory, services.payments, services.notifications, services.orders)
"""Started in this order: what a service calls is up before it (orders calls inventory)."""

DESTINATION = "messaging.destination.name"
GROUP = "messaging.consumer.group.name"
KEY = "messaging.kafka.message.key"
CONVERSATION = "messaging.message.conversation_id"


def _ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def _attr(span: ReadableSpan, name: str) -> object:
    return (span.attributes or {}).get(name)


async def _place_one_order(
    settings: Settings, run: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> tuple[OrderResult, ReadableSpan]:
    """Start the shop, place one order in a root span, wait until notifications handled
    its confirmation; the reply and the root span."""
    order_id = f"{run}-1"
    request = PlaceOrder(
        order_id=order_id,
        customer=f"ada-{run}",
        lines=[OrderLine(sku=f"tea-{run}", quantity=2, unit_price_cents=350)],
    )
    root_tracer = provider.get_tracer("tests.trace_shop")
    async with AsyncExitStack() as stack:
        for module in SHOP:
            await stack.enter_async_context(running(module.service, settings))
        async with Client(settings) as client:
            with root_tracer.start_as_current_span("place order") as root:
                reply = await client.request(
                    "orders.place_order", request, reply=OrderResult, key=order_id, timeout=20
                )
        assert reply.accepted, reply.reason

        def notified() -> bool:
            return any(
                s.name == "process orders.OrderConfirmed" and _attr(s, KEY) == order_id
                for s in exporter.get_finished_spans()
            )

        await wait_until_async(notified, timeout=60, what="notifications to handle it")
    [root_span] = [s for s in exporter.get_finished_spans() if s.name == "place order"]
    assert root.get_span_context().span_id == _ids(root_span)[1]
    return reply, root_span


def test_one_order_is_one_connected_trace_across_services_and_calls(
    kit_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = f"trace{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("SHOP_INVENTORY_TOPIC", f"inventory.state.{run}")
    monkeypatch.setenv("SHOP_INITIAL_STOCK", f"tea-{run}=10")
    monkeypatch.setenv("SHOP_PAYMENT_LIMIT_CENTS", "50000")  # 700 cents: paid
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    old = install_tracer(OtelTracer(provider))  # Client and runtimes keep it (installed)
    try:
        reply, root = asyncio.run(_place_one_order(kit_settings, run, provider, exporter))
    finally:
        install_tracer(old)
    provider.force_flush()
    every = list(exporter.get_finished_spans())
    provider.shutdown()
    order_id = f"{run}-1"
    assert reply.order_id == order_id

    trace_id = _ids(root)[0]
    spans = [s for s in every if _ids(s)[0] == trace_id]
    transcript = "\n".join(
        f"{s.name} [{_attr(s, GROUP) or s.kind.name}] parent={s.parent and s.parent.span_id}"
        f" id={_ids(s)[1]}"
        for s in spans
    )
    # every span about this order, in any service, is in the order's trace
    about = [s for s in every if _attr(s, KEY) == order_id]
    assert about and all(_ids(s)[0] == trace_id for s in about), transcript

    # one tree: one root (the test's), every other span's parent in the trace
    by_id = {_ids(s)[1]: s for s in spans}
    roots = [s for s in spans if s.parent is None]
    assert roots == [root], transcript
    assert all(s.parent.span_id in by_id for s in spans if s.parent is not None), transcript

    # each service processed its part
    process = [s for s in spans if s.name.startswith("process ")]
    groups = {_attr(s, GROUP) for s in process}
    assert {"orders", "payments", "inventory", "notifications"} <= groups, transcript
    topics = Counter(str(_attr(s, DESTINATION)) for s in process)
    for topic in (
        "orders.place_order",
        "inventory.reserve",
        "orders.OrderPlaced",
        "payments.PaymentCompleted",
        "orders.OrderConfirmed",
    ):
        assert topics[topic] == 1, transcript
    assert all(s.kind is SpanKind.CONSUMER for s in process)

    # each processed record is a child of the span that published it (same topic)
    for span in process:
        assert span.parent is not None
        parent = by_id[span.parent.span_id]
        assert parent.name == f"publish {_attr(span, DESTINATION)}", transcript
        assert parent.kind is SpanKind.PRODUCER
    published = Counter(s.name for s in spans if s.name.startswith("publish "))
    for event in ("orders.OrderPlaced", "payments.PaymentCompleted", "orders.OrderConfirmed"):
        assert published[f"publish {event}"] == 1, transcript

    # the calls: request publish -> responder process -> reply publish -> caller's receive
    receives = [s for s in spans if s.name.startswith("receive ")]
    called: dict[object, ReadableSpan] = {}
    for receive in receives:
        assert receive.parent is not None, transcript
        reply_publish = by_id[receive.parent.span_id]
        assert reply_publish.name == f"publish {_attr(receive, DESTINATION)}", transcript
        assert reply_publish.parent is not None
        responder = by_id[reply_publish.parent.span_id]
        assert responder.name.startswith("process "), transcript
        assert responder.parent is not None
        request = by_id[responder.parent.span_id]
        assert request.name == f"publish {_attr(responder, DESTINATION)}", transcript
        conversation = _attr(receive, CONVERSATION)
        assert conversation and conversation == _attr(request, CONVERSATION), transcript
        assert request.parent is not None
        called[_attr(responder, DESTINATION)] = by_id[request.parent.span_id]
    assert set(called) == {"orders.place_order", "inventory.reserve"}, transcript
    assert called["orders.place_order"] is root  # the client called from the root span
    assert called["inventory.reserve"].name == "process orders.place_order"  # orders did
