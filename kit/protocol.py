"""The leaf every layer imports: kit-* header names, the record and sink shapes, header()."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any, Protocol

__all__ = [
    "CORRELATION_ID",
    "DEADLINE",
    "ERROR_MESSAGE",
    "ERROR_TRACE",
    "ERROR_TYPE",
    "MARKER",
    "METHOD",
    "REPLY_TO",
    "REPLY_TOPIC_PREFIX",
    "TRUNCATED",
    "Headers",
    "MessageLike",
    "Sink",
    "TopicNotReady",
    "TurnBatch",
    "header",
    "reply_headers",
    "request_expired",
]

Headers = list[tuple[str, bytes]]

log = logging.getLogger("kit.protocol")

CORRELATION_ID = "kit-correlation-id"
"""Request and reply: matches a reply to its request."""
REPLY_TO = "kit-reply-to"
"""Request: the topic the reply goes to (the requester's own)."""
DEADLINE = "kit-deadline"
"""Request: epoch milliseconds after which the caller no longer waits."""
METHOD = "kit-method"
"""Request: "service.method"."""
ERROR_TYPE = "kit-error"
"""Reply: the responder's exception type (the reply then has no value)."""
ERROR_MESSAGE = "kit-error-message"
"""Reply: the responder's exception message."""
ERROR_TRACE = "kit-error-trace"
"""Reply: the responder's traceback, with KIT_REMOTE_TRACEBACKS."""
REPLY_TOPIC_PREFIX = "_kit.replies."
"""Every requester's reply topic is this prefix and its instance id."""
MARKER = "kit-marker"
"""Header of the liveness marks a requester writes to its own reply topic (for pruning)."""
TRUNCATED = "kit-dlt-truncated"
"""Dead letter: the original value's size in bytes, when the copy had to be cut."""


class MessageLike(Protocol):
    """The part of confluent_kafka.Message the dispatcher reads."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> Headers | None: ...
    def timestamp(self) -> tuple[int, int]: ...


class TopicNotReady(Exception):
    """Raised by `Sink.produce` for a topic it has not set up yet: `await prepare(topic)`."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(topic)


class Sink(Protocol):
    """Where emitted records go: the Kafka producer or the in-memory transport."""

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        # Any: (err, msg) are confluent-kafka's or the memory transport's; this leaf imports neither
        on_delivery: Callable[[Any, Any], None],
        partition: int | None = None,
    ) -> None:
        """Queue one record; call on_delivery(err, msg) once the broker confirms or refuses it.

        Raises TopicNotReady (before queueing anything) for a topic not yet prepared.
        """
        ...

    async def prepare(self, topic: str) -> None:
        """Make sure `topic` exists, off the event loop (once per topic)."""
        ...

    def record_limit(self, topic: str) -> int | None:
        """The largest record `topic` accepts from this sink, in bytes, if known."""
        ...


class TurnBatch:
    """Records given in one turn of the event loop, produced back to back at its end.

    The reply paths' producers run with ``linger.ms`` 0: librdkafka sends a record the
    moment it is produced. Produced one handler call apart (tens of microseconds), requests
    and replies then go to the broker one or two per request, and a broker serving many
    tiny requests is what limited request-reply (docs/benchmarks.md: 8.2k calls/s at 256
    in flight, 1.6 broker requests per call). Queued here and produced together at the end
    of the turn, they share requests (15.9k-20.8k calls/s, 0.55 requests per call). At one
    call in flight this costs one turn of the loop: microseconds.

    `produce` is called on the event loop only. A record the sink refuses when the batch
    is sent is reported to its `on_delivery` with the exception as the error: a topic it
    does not know (TopicNotReady) fails that record only; anything else (the producer's
    queue stayed full for KIT_DELIVERY_TIMEOUT) fails the records after it too, without
    trying them (each would wait as long), and is logged.
    """

    __slots__ = ("_queued", "sink")

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self._queued: list[tuple[str, bytes | None, bytes | None, Headers | None, Any]] = []

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        on_delivery: Callable[[Any, Any], None],  # Any: as Sink.produce's
    ) -> None:
        """Queue one record; it goes to the sink at the end of this turn of the loop."""
        self._queued.append((topic, value, key, headers, on_delivery))
        if len(self._queued) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Give the sink what is queued, now (the end of the turn does it otherwise)."""
        queued, self._queued = self._queued, []
        for i, record in enumerate(queued):
            try:
                self.sink.produce(*record)
            except TopicNotReady as exc:  # this record only: the others may go elsewhere
                record[4](exc, None)
            except Exception as exc:  # the producer's queue stayed full: so it is for the rest
                log.error("%d records not produced: %s", len(queued) - i, exc)
                for _topic, _value, _key, _headers, on_delivery in queued[i:]:
                    on_delivery(exc, None)
                return


# Any: a MessageLike or a confluent_kafka.Message, whose stubbed headers() type is wider
def header(msg: Any, name: str) -> bytes | None:
    """The value of the first header called `name` of a record, or None."""
    headers: Iterable[tuple[str, bytes | None]] = msg.headers() or ()
    for key, value in headers:
        if key == name:
            return value
    return None


def reply_headers(
    correlation_id: bytes, error: BaseException | None = None, *, with_trace: bool = False
) -> Headers:
    """The headers of a reply: its request's correlation id and, for a failure, the
    responder's exception type and message (and traceback, `with_trace`), which the caller
    raises as RemoteError (`check_reply`)."""
    headers: Headers = [(CORRELATION_ID, correlation_id)]
    if error is not None:
        headers.append((ERROR_TYPE, type(error).__name__.encode()))
        headers.append((ERROR_MESSAGE, str(error).encode(errors="replace")[:4096]))
        if with_trace:
            trace = "".join(traceback.format_exception(error))[-8192:]
            headers.append((ERROR_TRACE, trace.encode(errors="replace")))
    return headers


def request_expired(msg: MessageLike, now: float | None = None) -> bool:
    """True when a request's `kit-deadline` (epoch ms) is before `now` (epoch s, default
    the clock): its caller no longer waits, so a responder skips it."""
    deadline = header(msg, DEADLINE)
    if not deadline:
        return False
    try:
        return int(deadline) < (time.time() if now is None else now) * 1000
    except ValueError:
        return False
