"""What a handler sees: the record (key, headers, position) and how it publishes and calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, TypeVar

from kit.codec import Codec
from kit.event import Event
from kit.protocol import Headers, MessageLike, Sink, TopicNotReady, header
from kit.service import Caller, Endpoint, Service
from kit.telemetry import Stats, active, current_record

__all__ = [
    "Context",
    "Failure",
    "Headers",
    "MessageLike",
    "Sink",
    "Ticket",
    "TopicNotReady",
    "header",
]

R = TypeVar("R", bound=Event)


class Failure(NamedTuple):
    """A record the broker did not take: the input record it came from, and why."""

    source: MessageLike | None
    """The input record whose handling produced it (None when not known)."""
    error: Any  # Any: confluent-kafka's KafkaError, which this layer does not import
    """The confluent_kafka.KafkaError of the delivery report (or of produce())."""
    produced: Any  # Any: confluent-kafka's Message or the memory transport's record
    """The record that was refused (topic(), key(), value(), headers()), if known."""
    kind: str
    """"output" (a handler's published event) or "dead-letter"."""


class Ticket:
    """One fetched batch: offsets to store once its emitted records are all delivered.

    Delivery callbacks update it; they run where the producer is polled, which the
    runtime keeps on the event loop, so no lock is needed. A failed delivery is kept in
    `failures` with the input record it came from; the runtime resolves it (dead-letter
    or stop) before any offset of this batch, or of a later one, is stored.
    """

    __slots__ = ("closed", "dropped", "failures", "offsets", "pending", "records")

    def __init__(self, records: int = 0) -> None:
        self.records = records
        """How many fetched records the batch holds."""
        self.pending = 0
        self.closed = False
        self.failures: list[Failure] = []
        self.dropped = 0
        self.offsets: dict[tuple[str, int], int] = {}

    @property
    def error(self) -> Any:  # Any: as Failure.error
        """The first delivery error, or None."""
        return self.failures[0].error if self.failures else None

    def delivered(self, err: Any, msg: Any) -> None:  # Any: a delivery report, as Failure's
        """Delivery callback for a record whose input record is not known."""
        self.pending -= 1
        if err is not None:
            self.failures.append(Failure(None, err, msg, "output"))

    def output_of(self, source: MessageLike, kind: str = "output") -> Output:
        """A delivery callback for what handling `source` emitted (or its dead letter)."""
        return Output(self, source, kind)

    def settled(self, err: Any, _msg: Any) -> None:  # Any: a delivery report, as Failure's
        """Delivery callback for replies: a reply that cannot be delivered (its requester is
        gone, or the producer refused it) is logged and dropped; it must not stop the
        service (its caller gets RequestTimeout)."""
        self.pending -= 1
        if err is not None:
            self.dropped += 1

    @property
    def done(self) -> bool:
        """True when the batch is handled and every emitted record confirmed or failed."""
        return self.closed and self.pending <= 0


class Output:
    """The delivery callback of what one input record emitted: counts each report in the
    batch's ticket and keeps a failure with that input record. One small object per
    record, alive until its reports arrive (a closure would keep several)."""

    __slots__ = ("kind", "source", "ticket")

    def __init__(self, ticket: Ticket, source: MessageLike, kind: str = "output") -> None:
        self.ticket = ticket
        self.source = source
        self.kind = kind

    def __call__(self, err: Any, produced: Any) -> None:  # Any: a delivery report, as Failure's
        """Any: confluent-kafka's KafkaError and Message, or the memory transport's."""
        ticket = self.ticket
        ticket.pending -= 1
        if err is not None:
            ticket.failures.append(Failure(self.source, err, produced, self.kind))


def _to_bytes(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


class Host(Protocol):
    """What a Context needs from the dispatcher that made it."""

    service: Service
    codec: Codec
    requester: Callable[[], Awaitable[Any]] | None  # Any: a BaseRequester, of a layer above
    stats: Stats
    learned: set[tuple[str, type[Event]]]


class Context(Caller):
    """What a handler knows about its record, and how it publishes.

    Events given to `publish` are sent when the handler returns, before the record's
    offset is committed; a handler that raises publishes nothing.
    """

    __slots__ = ("_dispatcher", "_message", "outbox")

    def __init__(self, dispatcher: Host, message: MessageLike) -> None:
        self._dispatcher = dispatcher
        self._message = message
        self.outbox: list[tuple[str, bytes, bytes | None, Headers | None]] = []

    @property
    def key(self) -> bytes | None:
        """The record key as bytes."""
        return self._message.key()

    @property
    def headers(self) -> dict[str, bytes]:
        """The record headers (last value wins for repeated names)."""
        return dict(self._message.headers() or [])

    @property
    def topic(self) -> str:
        """The topic the record came from."""
        return self._message.topic() or ""

    @property
    def partition(self) -> int:
        """The partition the record came from."""
        return self._message.partition() or 0

    @property
    def offset(self) -> int:
        """The record's offset."""
        offset = self._message.offset()
        return -1 if offset is None else offset

    @property
    def timestamp(self) -> datetime:
        """The record's timestamp (UTC)."""
        return datetime.fromtimestamp(self._message.timestamp()[1] / 1000, tz=UTC)

    @property
    def service(self) -> Service:
        """The service whose handler is running."""
        return self._dispatcher.service

    async def _request(
        self,
        target: str | Endpoint[Any, Any],  # Any: either form of request()
        event: Event,
        reply: type[Event] | None,
        timeout: float | None,
        key: str | bytes | None,
    ) -> Event:
        factory = self._dispatcher.requester
        if factory is None:
            raise RuntimeError("this transport does not support requests")
        # Any: the requester is a kit.requests.BaseRequester, a layer above this one
        requester: Any = await factory()
        token = current_record.set(self._message)  # the request carries this record's trace
        try:
            answer: Event = await requester.request(
                target, event, reply=reply, timeout=timeout, key=key
            )
        finally:
            current_record.reset(token)
        return answer

    def publish(
        self,
        event: Event,
        *,
        key: str | bytes | None = None,
        topic: str | None = None,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> None:
        """Queue a typed event; it is sent, keyed, when the handler returns.

        `topic` defaults to the event schema's full name. Encoding errors raise here.
        """
        host = self._dispatcher
        value = host.codec.encode(event)
        hdrs = [(k, _to_bytes(v) or b"") for k, v in headers.items()] if headers else None
        kind = type(event)
        if topic is None:
            topic = kind.kit_schema().full_name
        if (topic, kind) not in host.learned:
            host.learned.add((topic, kind))
            host.stats.learn_published(topic, kind.kit_schema().full_name)
        raw_key = _to_bytes(key)
        trace = active.tracer
        if trace.spans or self._message.headers():  # else there is no trace to carry
            hdrs = trace.outgoing(topic, raw_key, hdrs, self._message)
        self.outbox.append((topic, value, raw_key, hdrs))
