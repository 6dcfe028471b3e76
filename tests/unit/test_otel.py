"""kit.otel: OpenTelemetry spans for records (publish, process, receive), with the SDK's
in-memory exporter on a TracerProvider of the tests' own (the global one is never set)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from kit import otel
from kit.config import load_settings
from kit.otel import OtelTracer
from kit.protocol import CORRELATION_ID
from kit.telemetry import Tracer, install_tracer, tracer
from kit.testing.harness import Harness
from kit.transport.memory import MemoryMessage
from tests.fixtures import billing
from tests.integration.helpers import order

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def otel_tracer(exporter: InMemorySpanExporter) -> Iterator[OtelTracer]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    made = OtelTracer(provider)
    old = install_tracer(made)
    try:
        yield made
    finally:
        install_tracer(old)
        provider.shutdown()


def record(
    topic: str = "shop.OrderPlaced",
    headers: list[tuple[str, bytes]] | None = None,
    *,
    key: bytes | None = b"o-1",
    value: bytes | None = b"v",
    partition: int = 2,
    offset: int = 41,
) -> MemoryMessage:
    return MemoryMessage(topic, partition, offset, key, value, tuple(headers or ()), 0)


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    ctx = span.get_span_context()
    assert ctx is not None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def parent_id(span: ReadableSpan) -> str | None:
    return format(span.parent.span_id, "016x") if span.parent is not None else None


def test_a_handled_record_gives_a_process_span_child_of_its_traceparent(
    otel_tracer: OtelTracer, exporter: InMemorySpanExporter
) -> None:
    msg = record(headers=[("traceparent", TRACEPARENT), ("tracestate", b"vendor=1")])
    with otel_tracer.process(msg, "on_order_placed", "billing"):
        current = trace.get_current_span()
        assert current.is_recording()
    assert not trace.get_current_span().is_recording()  # detached again
    [span] = exporter.get_finished_spans()
    assert span.name == "process shop.OrderPlaced"
    assert span.kind is SpanKind.CONSUMER
    assert hex_ids(span)[0] == TRACE_ID and parent_id(span) == PARENT_ID
    assert span.parent is not None and span.parent.is_remote
    assert span.context is not None and span.context.trace_state.get("vendor") == "1"
    assert dict(span.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "shop.OrderPlaced",
        "messaging.destination.partition.id": "2",
        "messaging.kafka.offset": 41,
        "messaging.kafka.message.key": "o-1",
        "messaging.consumer.group.name": "billing",
        "kit.handler": "on_order_placed",
    }
    assert span.status.status_code is StatusCode.UNSET


def test_what_a_handler_publishes_is_a_publish_span_child_of_its_process_span(
    otel_tracer: OtelTracer, exporter: InMemorySpanExporter
) -> None:
    msg = record(headers=[("traceparent", TRACEPARENT)])
    with otel_tracer.process(msg, "on_order_placed", "billing"):
        sent = otel_tracer.outgoing("billing.InvoiceIssued", b"o-1", [("x", b"1")], msg)
    publish, process = exporter.get_finished_spans()  # publish ends first
    assert publish.name == "publish billing.InvoiceIssued"
    assert publish.kind is SpanKind.PRODUCER
    assert parent_id(publish) == hex_ids(process)[1]
    assert hex_ids(publish)[0] == hex_ids(process)[0] == TRACE_ID
    assert dict(publish.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": "billing.InvoiceIssued",
        "messaging.kafka.message.key": "o-1",
    }
    # the headers carry the publish span's context, the record's own headers kept
    trace_id, span_id = hex_ids(publish)
    assert sent == [("x", b"1"), ("traceparent", f"00-{trace_id}-{span_id}-01".encode())]


def test_outgoing_replaces_the_trace_headers_it_is_given(
    otel_tracer: OtelTracer, exporter: InMemorySpanExporter
) -> None:
    """A request's headers with a correlation id and stale trace headers; no span current,
    so the publish span continues the source record's trace."""
    source = record(headers=[("traceparent", TRACEPARENT), ("tracestate", b"a=b")])
    stale = f"00-{'1' * 32}-{'2' * 16}-01".encode()
    given = [(CORRELATION_ID, b"c-7"), ("traceparent", stale), ("tracestate", b"old=1")]
    sent = otel_tracer.outgoing("orders.place_order", None, given, source)
    [span] = exporter.get_finished_spans()
    assert hex_ids(span)[0] == TRACE_ID and parent_id(span) == PARENT_ID
    assert (span.attributes or {})["messaging.message.conversation_id"] == "c-7"
    assert "messaging.kafka.message.key" not in (span.attributes or {})
    assert sent is not None
    names = [k for k, _ in sent]
    assert names == [CORRELATION_ID, "traceparent", "tracestate"]
    traceparent = dict(sent)["traceparent"].decode()
    assert traceparent == f"00-{TRACE_ID}-{hex_ids(span)[1]}-01"
    assert dict(sent)["tracestate"] == b"a=b"


def test_outgoing_of_a_replayed_record_continues_the_trace_its_headers_carry(
    otel_tracer: OtelTracer, exporter: InMemorySpanExporter
) -> None:
    sent = otel_tracer.outgoing("t", None, [("traceparent", TRACEPARENT)], None)
    [span] = exporter.get_finished_spans()
    assert hex_ids(span)[0] == TRACE_ID and parent_id(span) == PARENT_ID
    assert sent == [("traceparent", f"00-{TRACE_ID}-{hex_ids(span)[1]}-01".encode())]


def test_outgoing_with_no_trace_anywhere_starts_one(
    otel_tracer: OtelTracer, exporter: InMemorySpanExporter
) -> None:
    sent = otel_tracer.outgoing("t", b"\xff\xfe", None, None)
    [span] = exporter.get_finished_spans()
    assert span.parent is None
    assert "messaging.kafka.message.key" not in (span.attributes or {})  # not text
    version, trace_id, span_id, flags = dict(sent or [])["traceparent"].decode().split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled (0x02: a random trace id)
    assert (trace_id, span_id) == hex_ids(span)


def test_an_exception_leaving_the_handling_is_recorded(
    otel_tracer: OtelTracer, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(ValueError), otel_tracer.process(record(), "h", "g"):
        raise ValueError("no stock")
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert "no stock" in (span.status.description or "")
    assert (span.attributes or {})["error.type"] == "ValueError"
    [event] = span.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "ValueError"


def test_failed_attempts_are_events_and_only_the_final_one_sets_the_status(
    otel_tracer: OtelTracer, exporter: InMemorySpanExporter
) -> None:
    with otel_tracer.process(record(), "h", "g"):
        otel_tracer.failed(RuntimeError("first"), final=False)
        otel_tracer.failed(KeyError("second"), final=True)
    [span] = exporter.get_finished_spans()
    assert [(e.attributes or {})["exception.message"] for e in span.events] == [
        "first",
        "'second'",
    ]
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "KeyError"


def test_a_received_reply_is_a_receive_span_child_of_the_reply_not_of_the_current_span(
    otel_tracer: OtelTracer, exporter: InMemorySpanExporter
) -> None:
    reply = record(
        "_kit.replies.caller-1",
        [(CORRELATION_ID, b"c-9"), ("traceparent", TRACEPARENT)],
        key=None,
        partition=0,
        offset=3,
    )

    async def deliver() -> None:  # as the requester does: in the loop's callback
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.call_soon(lambda: (otel_tracer.received(reply, "orders", "place"), done.set_result(1)))
        await done

    other = record(headers=[("traceparent", f"00-{'a' * 32}-{'b' * 16}-01".encode())])
    with otel_tracer.process(other, "h", "g"):  # current while the reply arrives
        asyncio.run(deliver())
    receive, _process = exporter.get_finished_spans()
    assert receive.name == "receive _kit.replies.caller-1"
    assert receive.kind is SpanKind.CONSUMER
    assert hex_ids(receive)[0] == TRACE_ID and parent_id(receive) == PARENT_ID
    attributes = dict(receive.attributes or {})
    assert attributes["messaging.operation.type"] == "receive"
    assert attributes["messaging.message.conversation_id"] == "c-9"
    assert attributes["messaging.kafka.offset"] == 3
    assert attributes["kit.call"] == "orders.place"
    assert "messaging.kafka.message.key" not in attributes


def test_the_harness_runs_a_handler_inside_its_process_span(
    otel_tracer: OtelTracer, exporter: InMemorySpanExporter
) -> None:
    """Through the real dispatcher (memory transport): the record's traceparent, then the
    process span, then the published invoice, whose headers continue the trace."""
    h = Harness(billing.service)
    h.send(order(1), key="o-1", headers={"traceparent": TRACEPARENT})
    assert asyncio.run(h.run()) == 1
    spans = {s.name: s for s in exporter.get_finished_spans()}
    process = spans["process shop.OrderPlaced"]
    publish = spans["publish billing.InvoiceIssued"]
    assert parent_id(process) == PARENT_ID and parent_id(publish) == hex_ids(process)[1]
    assert (process.attributes or {})["messaging.consumer.group.name"] == "billing"
    [invoice] = [m for p in h.broker.topics["billing.InvoiceIssued"] for m in p]
    traceparent = dict(invoice.headers() or [])["traceparent"].decode()
    assert traceparent == "00-{}-{}-01".format(*hex_ids(publish))


def test_without_a_provider_only_the_headers_travel() -> None:
    """The global provider is not set in the tests: the tracer makes no span and passes the
    record's trace headers on unchanged, as kit's propagation alone does."""
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    quiet = OtelTracer()
    assert quiet.spans is False
    source = record(headers=[("traceparent", TRACEPARENT), ("tracestate", b"a=b")])
    expected = Tracer().outgoing("t", None, [("x", b"1")], source)
    assert quiet.outgoing("t", None, [("x", b"1")], source) == expected
    assert expected == [("x", b"1"), ("traceparent", TRACEPARENT), ("tracestate", b"a=b")]


def test_install_follows_kit_tracing_and_is_idempotent() -> None:
    old = install_tracer(None)
    try:
        assert otel.install(load_settings(tracing="off")) is False
        assert type(tracer()) is Tracer
        assert otel.install(load_settings()) is True  # unset: on, the API is importable
        first = tracer()
        assert isinstance(first, OtelTracer)
        assert otel.install(load_settings(tracing=True)) is True and tracer() is first
        otel.uninstall()
        assert type(tracer()) is Tracer
    finally:
        install_tracer(old)


def test_kit_tracing_is_read_from_the_environment() -> None:
    assert load_settings({"KIT_TRACING": "off"}).tracing is False
    assert load_settings({"KIT_TRACING": "on"}).tracing is True
    assert load_settings({}).tracing is None


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_kit_imports_no_opentelemetry_until_install_finds_it() -> None:
    done = _python(
        "import sys, kit, kit.otel\n"
        "from kit.config import load_settings\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
        "print(kit.otel.install(load_settings(tracing=False)))\n"
        "print('opentelemetry.trace' in sys.modules)\n"
        "print(kit.otel.install(load_settings()))\n"
        "print('opentelemetry.trace' in sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n") == ["[]", "False", "False", "True", "True", ""]


def test_without_opentelemetry_install_is_off_and_kit_still_propagates() -> None:
    done = _python(
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if not installed\n"
        "import kit.otel\n"
        "from kit.config import load_settings\n"
        "from kit.telemetry import tracer\n"
        "print(kit.otel.available(), kit.otel.install(load_settings(tracing=True)))\n"
        "print(type(tracer()).__name__)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n") == ["False False", "Tracer", ""]
    assert "opentelemetry-api is not installed" in done.stderr  # KIT_TRACING=on: warned
