"""A responder's replies: to the requester's own reply topic, batched per loop turn."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from kit.config import Settings
from kit.context import Ticket
from kit.errors import DeliveryRefused
from kit.protocol import (
    CORRELATION_ID,
    REPLY_TO,
    MessageLike,
    Sink,
    TurnBatch,
    reply_headers,
)
from kit.telemetry import tracer

__all__ = ["Replies"]

log = logging.getLogger("kit.dispatch")


async def _always(_topic: str) -> bool:
    return True


def _never(_err: Any) -> bool:  # Any: as a delivery report's error
    return False


class Replies:
    """Sends a responder's encoded result (or its error) where its request asked.

    Replies given in one turn of the event loop go to the sink together at its end
    (`kit.protocol.TurnBatch`), so that librdkafka puts them in one produce request.
    """

    def __init__(self, settings: Settings, sink: Sink) -> None:
        self.settings = settings
        self._batch = TurnBatch(sink)
        self.topic_exists: Callable[[str], Awaitable[bool]] = _always
        """Checks a reply topic exists before replying (so a dead requester's is not
        recreated)."""
        self.refused_for_good: Callable[[Any], bool] = _never  # Any: a report's error
        """Whether a delivery error means the reply will never be taken (too large for the
        requester's reply topic, invalid); the Kafka runtime sets the transport's judgement.
        Such a reply is replaced by an error reply, so the caller fails at once."""
        self.dropped = 0
        """Replies not sent (their topic was gone) or not delivered."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    def flush(self) -> None:
        """Give the sink the replies queued in this turn now."""
        self._batch.flush()

    @property
    def sink(self) -> Sink:
        """Where replies go (the runtime's plain producer when events are transactional)."""
        return self._batch.sink

    @sink.setter
    def sink(self, sink: Sink) -> None:
        self._batch = TurnBatch(sink)

    async def send(
        self, msg: MessageLike, value: bytes | None, error: BaseException | None, ticket: Ticket
    ) -> None:
        """Reply to request `msg` with `value`, or with `error` (the caller raises it as
        RemoteError); counted in `ticket` until delivered. No reply-to header: nothing."""
        found = dict(msg.headers() or ())  # one scan of the headers for both
        reply_to, correlation = found.get(REPLY_TO), found.get(CORRELATION_ID)
        if not reply_to or not correlation:
            return
        topic = reply_to.decode(errors="replace")
        if not await self.topic_exists(topic):
            self.dropped += 1
            log.warning("reply topic %s is gone (requester stopped); reply dropped", topic)
            return
        headers = reply_headers(correlation, error, with_trace=self.settings.remote_tracebacks)
        headers = tracer().outgoing(topic, None, headers, msg) or headers
        on_delivery: Callable[[Any, Any], None] = ticket.settled  # Any: a delivery report
        if error is not None:
            value = None
        elif value is not None:
            if self._loop is None:
                self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
            on_delivery = _Delivery(self, ticket, correlation)
        ticket.pending += 1
        self._batch.produce(topic, value, None, headers, on_delivery)

    # Any: (err, msg) of a delivery report
    def refused(self, err: Any, msg: Any, ticket: Ticket, correlation: bytes) -> None:
        """Answer the caller of reply `msg`, which was refused for good, with an error reply
        naming why. On the loop it is counted in `ticket`, so the batch's commit waits for
        it; from a worker thread (an exactly-once commit polls there while the loop waits
        for it) it is made on the loop, uncounted. With no loop running, none is sent."""
        topic = msg.topic() if msg is not None else "?"
        size = len(msg.value() or b"") if msg is not None else 0
        text = err.str() if hasattr(err, "str") else str(err)
        error = DeliveryRefused(f"reply of {size} bytes refused by {topic}: {text}")
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            log.warning("%s; the service has stopped, so no error reply", error)
        elif threading.get_ident() == self._loop_thread:
            ticket.pending += 1
            self._error_reply(topic, correlation, error, ticket.settled)
        else:
            loop.call_soon_threadsafe(
                self._error_reply, topic, correlation, error, self._error_delivered
            )

    def _error_reply(
        self,
        topic: str,
        correlation: bytes,
        error: DeliveryRefused,
        on_delivery: Callable[[Any, Any], None],  # Any: a delivery report
    ) -> None:
        log.warning("%s; sent the caller an error reply instead", error)
        headers = reply_headers(correlation, error)
        self._batch.produce(topic, None, None, headers, on_delivery)

    def _error_delivered(self, err: Any, _msg: Any) -> None:  # Any: a delivery report
        if err is not None:
            self.dropped += 1
            log.warning("error reply not delivered either: %s", err)


class _Delivery:
    """The delivery callback of a reply with a value: counts it in its batch's ticket, and
    has a reply refused for good followed by an error reply (`Replies.refused`), so that
    its caller gets a RemoteError (DeliveryRefused) at once instead of a RequestTimeout at
    its deadline."""

    __slots__ = ("correlation", "replies", "ticket")

    def __init__(self, replies: Replies, ticket: Ticket, correlation: bytes) -> None:
        self.replies = replies
        self.ticket = ticket
        self.correlation = correlation

    def __call__(self, err: Any, msg: Any) -> None:  # Any: a delivery report
        try:
            if err is not None and self.replies.refused_for_good(err):
                self.replies.refused(err, msg, self.ticket, self.correlation)
        finally:
            self.ticket.settled(err, msg)
