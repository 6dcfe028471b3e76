"""OpenTelemetry spans for kit's records (the `opentelemetry` extra): publish, process, receive.

`install(settings)` (called by kit.app when a runtime or client starts) makes `OtelTracer`
the process's tracer when opentelemetry-api can be imported and KIT_TRACING is not off.
Spans follow OpenTelemetry's messaging semantic conventions for Kafka:

- `process <topic>` (CONSUMER) around each record's handling, child of the `traceparent`
  the record carries, current while its handler runs;
- `publish <topic>` (PRODUCER) for each event, request and reply sent, child of the
  current span; its context replaces the record's `traceparent`/`tracestate`;
- `receive <reply topic>` (CONSUMER) when a reply arrives, child of the reply's
  `traceparent`, so the caller's trace shows the responder's work and its answer.

The spans go to the global TracerProvider (the application sets it up with its exporter,
e.g. opentelemetry-sdk with OTLP); without one, the API's no-op tracer still carries the
trace headers through. Nothing here imports opentelemetry before `install` finds it.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from kit.protocol import CORRELATION_ID, Headers, MessageLike
from kit.telemetry import TRACEPARENT, TRACESTATE, Tracer, current_record, install_tracer, tracer

if TYPE_CHECKING:
    from opentelemetry.context import Context as OtelContext
    from opentelemetry.trace import Span, TracerProvider
    from opentelemetry.util.types import AttributeValue

    from kit.config import Settings

__all__ = ["INSTRUMENTATION", "OtelTracer", "available", "install", "uninstall"]

log = logging.getLogger("kit.otel")

INSTRUMENTATION = "kit"
"""The instrumentation scope name of kit's spans."""

# Attribute names of the messaging semantic conventions (opentelemetry-semantic-conventions'
# incubating messaging attributes), spelled here so the API alone is enough.
SYSTEM = "messaging.system"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
DESTINATION = "messaging.destination.name"
PARTITION = "messaging.destination.partition.id"
GROUP = "messaging.consumer.group.name"
KEY = "messaging.kafka.message.key"
OFFSET = "messaging.kafka.offset"
TOMBSTONE = "messaging.kafka.message.tombstone"
CONVERSATION = "messaging.message.conversation_id"
ERROR_TYPE = "error.type"
HANDLER = "kit.handler"
"""kit's own: the handler or responder that processed the record."""
CALL = "kit.call"
"""kit's own: the `service.method` a received reply answers."""


def available() -> bool:
    """True when opentelemetry-api can be imported (found without importing it)."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


class OtelTracer(Tracer):
    """kit's tracer with OpenTelemetry spans (see the module's docstring).

    `provider`: the TracerProvider to use (tests pass their own); None: the global one,
    looked up at each span, so a provider set after `install` is used.
    """

    def __init__(self, provider: TracerProvider | None = None) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._context = context
        self._propagator = TraceContextTextMapPropagator()
        self._kinds = trace.SpanKind
        self._tracer = trace.get_tracer(INSTRUMENTATION, tracer_provider=provider)
        self._live = provider is not None
        self._next_look = 0.0

    @property
    def spans(self) -> bool:  # type: ignore[override]  # read-only: the base's is a constant
        """True once there is a TracerProvider to send spans to (given, or set globally):
        until then kit only carries the headers and the dispatcher keeps its fast path."""
        if not self._live:  # the global provider can be set once; then it stays
            now = time.monotonic()
            if now >= self._next_look:  # get_tracer_provider reads os.environ: once a second
                self._next_look = now + 1.0
                found = self._trace.get_tracer_provider()
                self._live = not isinstance(found, self._trace.ProxyTracerProvider)
        return self._live

    def outgoing(
        self, topic: str, key: bytes | None, headers: Headers | None, source: MessageLike | None
    ) -> Headers | None:
        """A `publish <topic>` span, child of the current span (or, with none current, of
        the trace `source` or the record being handled carries, else of the one `headers`
        carry: a replayed record's), ended at once; returns `headers` with its
        traceparent/tracestate instead of any they had."""
        if not self.spans:
            return super().outgoing(topic, key, headers, source)
        parent: OtelContext | None = None  # None: the current context
        if not self._trace.get_current_span().get_span_context().is_valid:
            origin = source if source is not None else current_record.get()
            parent = self._extract(origin.headers() if origin is not None else headers)
        attributes = _base("send", "publish", topic)
        _key_and_conversation(attributes, key, headers)
        span = self._tracer.start_span(f"publish {topic}", parent, self._kinds.PRODUCER, attributes)
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, self._trace.set_span_in_context(span))
        span.end()
        if not carrier:  # a no-op tracer with no trace to continue: propagate as without
            return super().outgoing(topic, key, headers, source)
        kept = [(k, v) for k, v in headers or () if k not in (TRACEPARENT, TRACESTATE)]
        return kept + [(k, v.encode()) for k, v in carrier.items()]

    def process(self, msg: MessageLike, handler: str, group: str) -> AbstractContextManager[object]:
        """A `process <topic>` span around the handling of `msg`, child of its traceparent
        and current meanwhile; an exception leaving it is recorded (status ERROR)."""
        return self._processing(msg, handler, group)

    @contextmanager
    def _processing(self, msg: MessageLike, handler: str, group: str) -> Iterator[Span]:
        topic = msg.topic() or ""
        attributes = _consumed("process", msg, topic)
        attributes[GROUP] = group
        attributes[HANDLER] = handler
        span = self._tracer.start_span(
            f"process {topic}", self._extract(msg.headers()), self._kinds.CONSUMER, attributes
        )
        token = self._context.attach(self._trace.set_span_in_context(span))
        try:
            yield span
        except Exception as exc:
            self._failure(span, exc, final=True)
            raise
        finally:
            self._context.detach(token)
            span.end()

    def failed(self, error: BaseException, final: bool) -> None:
        """A handler attempt of the record being processed raised `error` (the dispatcher
        retries it, or, `final`, gives up: dead letter or error reply)."""
        self._failure(self._trace.get_current_span(), error, final)

    def _failure(self, span: Span, error: BaseException, final: bool) -> None:
        if not span.is_recording():
            return
        span.record_exception(error)
        if final:
            span.set_attribute(ERROR_TYPE, type(error).__qualname__)
            status = self._trace.Status(self._trace.StatusCode.ERROR, f"{error!r}"[:1024])
            span.set_status(status)

    def received(self, msg: MessageLike, service: str, method: str) -> None:
        """A `receive <reply topic>` span, child of the reply's traceparent, ended at once
        (the current context is not read: this runs in the event loop's callback)."""
        topic = msg.topic() or ""
        attributes = _consumed("receive", msg, topic)
        attributes[CALL] = f"{service}.{method}"
        span = self._tracer.start_span(
            f"receive {topic}", self._extract(msg.headers()), self._kinds.CONSUMER, attributes
        )
        span.end()

    def _extract(self, headers: Headers | None) -> OtelContext:
        """The W3C trace context of a record's headers (an empty context when none)."""
        carrier = {
            k: v.decode("latin-1") for k, v in headers or () if k in (TRACEPARENT, TRACESTATE)
        }
        empty = self._context.Context()
        return self._propagator.extract(carrier, empty) if carrier else empty


def _base(operation_type: str, operation: str, topic: str) -> dict[str, AttributeValue]:
    return {
        SYSTEM: "kafka",
        OPERATION_TYPE: operation_type,
        OPERATION_NAME: operation,
        DESTINATION: topic,
    }


def _key_and_conversation(
    attributes: dict[str, AttributeValue], key: bytes | None, headers: Headers | None
) -> None:
    """The record key (when it is text) and the correlation id (of requests and replies)."""
    if key is not None:
        try:
            attributes[KEY] = key.decode()
        except UnicodeDecodeError:
            pass  # no canonical text form: left out, as the conventions say
    for k, v in headers or ():
        if k == CORRELATION_ID and v is not None:
            attributes[CONVERSATION] = v.decode(errors="replace")
            break


def _consumed(operation: str, msg: MessageLike, topic: str) -> dict[str, AttributeValue]:
    """The attributes of a consumed record's span."""
    attributes = _base(operation, operation, topic)
    _key_and_conversation(attributes, msg.key(), msg.headers())
    partition, offset = msg.partition(), msg.offset()
    if partition is not None:
        attributes[PARTITION] = str(partition)
    if offset is not None and offset >= 0:
        attributes[OFFSET] = offset
    if msg.value() is None:
        attributes[TOMBSTONE] = True
    return attributes


def install(settings: Settings | None = None, provider: TracerProvider | None = None) -> bool:
    """Make OtelTracer the process's tracer, unless KIT_TRACING is off or opentelemetry-api
    is missing (then nothing is imported); idempotent. Returns whether spans are on."""
    if isinstance(tracer(), OtelTracer):
        return True
    wanted = None if settings is None else settings.tracing
    if wanted is False:
        return False
    if not available():
        if wanted:
            log.warning("KIT_TRACING is on but opentelemetry-api is not installed: no spans")
        return False
    install_tracer(OtelTracer(provider))
    return True


def uninstall() -> None:
    """Back to propagation only (if OtelTracer was installed)."""
    if isinstance(tracer(), OtelTracer):
        install_tracer(None)
