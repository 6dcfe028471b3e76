"""A responder's replies: to the requester's own reply topic, batched per loop turn."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from kit.config import Settings
from kit.context import Ticket
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
        self.dropped = 0
        """Replies not sent (their topic was gone) or not delivered."""

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
        if error is not None:
            value = None
        ticket.pending += 1
        self._batch.produce(topic, value, None, headers, ticket.settled)
