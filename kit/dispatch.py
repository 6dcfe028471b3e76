"""Decode → handler → outbox → dead-letter: the transport-agnostic part of the record flow."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence

from kit.codec import Codec
from kit.config import Settings
from kit.context import Context, Headers, MessageLike, Sink, Ticket, header
from kit.errors import DecodeError, EncodeError
from kit.event import Event
from kit.rpc import (
    CORRELATION_ID,
    DEADLINE,
    ERROR_MESSAGE,
    ERROR_TRACE,
    ERROR_TYPE,
    REPLY_TO,
    BaseRequester,
)
from kit.service import Handler, Responder, Service

__all__ = ["Context", "Dispatcher", "MessageLike", "Sink", "Ticket"]

log = logging.getLogger("kit.dispatch")


async def _always(_topic: str) -> bool:
    return True


class Dispatcher:
    """Runs each record through its handler with retries, then publishes or dead-letters."""

    def __init__(self, service: Service, codec: Codec, settings: Settings, sink: Sink) -> None:
        self.service = service
        self.codec = codec
        self.settings = settings
        self.sink = sink
        self.by_topic: dict[str, Handler] = {h.topic: h for h in service.handlers}
        self.group = settings.group_id or service.group
        self.handled = 0
        self.dead_lettered = 0
        self.expired = 0
        self.replies_dropped = 0
        self.reply_topic_exists: Callable[[str], Awaitable[bool]] = _always
        """Checks a reply topic exists before replying (so a dead requester's is not recreated)."""
        self.requester: Callable[[], Awaitable[BaseRequester]] | None = None
        """Gives the Requester that handlers' ctx.request() uses (set by the runtime)."""

    def dead_letter_topic(self, handler: Handler) -> str:
        """Where a handler's failed records go."""
        return handler.dead_letter_topic or f"{handler.topic}{self.settings.dead_letter_suffix}"

    async def handle_batch(self, messages: Sequence[MessageLike], ticket: Ticket) -> None:
        """Handle a batch: partitions concurrently, records of one partition in order."""
        groups: dict[tuple[str | None, int | None], list[MessageLike]] = {}
        for msg in messages:
            groups.setdefault((msg.topic(), msg.partition()), []).append(msg)
        if len(groups) == 1:
            await self._handle_partition(next(iter(groups.values())), ticket)
        else:
            await asyncio.gather(*(self._handle_partition(g, ticket) for g in groups.values()))

    async def _handle_partition(self, messages: list[MessageLike], ticket: Ticket) -> None:
        offsets = ticket.offsets
        first = messages[0]
        slot = (first.topic() or "", first.partition() or 0)
        handler = self.by_topic.get(slot[0])
        if handler is None or isinstance(handler, Responder):
            for msg in messages:
                await self.handle(msg, ticket)
                offsets[slot] = (msg.offset() or 0) + 1
            return
        # The hot path: one partition of one handler's topic. Anything unusual (a record
        # that does not decode, a handler that raises) goes through the full path.
        decode = self.codec.decode
        event_type = handler.event_type
        func = handler.func
        takes_context = handler.takes_context
        is_async = handler.is_async
        done = -1
        try:
            for msg in messages:
                try:
                    event = decode(msg.value(), event_type)
                except DecodeError:
                    await self.handle(msg, ticket)
                    done = msg.offset() or 0
                    continue
                ctx = Context(self, msg)
                try:
                    result = func(event, ctx) if takes_context else func(event)
                    if is_async:
                        await result
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._attempts(msg, handler, event, ticket, 1, exc)
                else:
                    self._succeeded(ctx, ticket)
                done = msg.offset() or 0
        finally:  # the records handled so far count, even if the run was cancelled
            if done >= 0:
                offsets[slot] = done + 1

    async def handle(self, msg: MessageLike, ticket: Ticket) -> None:
        """Handle one record completely: decode, call, publish outbox, reply or dead-letter."""
        handler = self.by_topic.get(msg.topic() or "")
        if handler is None:
            log.warning("no handler for topic %s; record skipped", msg.topic())
            return
        if isinstance(handler, Responder) and self._expired(msg):
            self.expired += 1
            log.info(
                "skipped expired request %s[%s]@%s", msg.topic(), msg.partition(), msg.offset()
            )
            return
        try:
            event = self.codec.decode(msg.value(), handler.event_type)
        except DecodeError as exc:
            self.dead_letter(msg, handler, exc, 0, ticket)
            if isinstance(handler, Responder):
                await self.reply(msg, None, exc, ticket)
            return
        await self._attempts(msg, handler, event, ticket, 0, None)

    async def _attempts(
        self,
        msg: MessageLike,
        handler: Handler,
        event: Event,
        ticket: Ticket,
        attempt: int,
        error: Exception | None,
    ) -> None:
        """Call the handler until it succeeds or its retries are spent (some may be done)."""
        responder = isinstance(handler, Responder)
        retries = self.settings.retries if handler.retries is None else handler.retries
        while True:
            if error is not None:
                if attempt > retries:
                    await self._failed(msg, handler, error, attempt, ticket)
                    return
                delay = min(
                    self.settings.retry_backoff * (2 ** (attempt - 1)),
                    self.settings.retry_backoff_max,
                )
                log.warning(
                    "%s.%s attempt %d failed (%s: %s); retrying in %.2fs",
                    self.service.name,
                    handler.name,
                    attempt,
                    type(error).__name__,
                    error,
                    delay,
                )
                await asyncio.sleep(delay)
            attempt += 1
            ctx = Context(self, msg)
            try:
                if handler.takes_context:
                    result = handler.func(event, ctx)
                else:
                    result = handler.func(event)
                if handler.is_async:
                    result = await result
                if responder:  # encoded here: a reply that cannot be encoded is a failure
                    if not isinstance(result, Event):
                        raise EncodeError(
                            f"{handler.name} returned {type(result).__name__}, not an Event"
                        )
                    reply = self.codec.encode(result)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
                continue
            break
        self._succeeded(ctx, ticket)
        if responder:
            await self.reply(msg, reply, None, ticket)

    def _succeeded(self, ctx: Context, ticket: Ticket) -> None:
        """The handler returned: send what it published, counted in the batch's ticket."""
        self.handled += 1
        if ctx.outbox:
            produce = self.sink.produce
            for topic, value, key, headers in ctx.outbox:
                ticket.pending += 1
                produce(topic, value, key, headers, ticket.delivered)

    async def _failed(
        self, msg: MessageLike, handler: Handler, exc: Exception, attempts: int, ticket: Ticket
    ) -> None:
        log.error(
            "%s.%s failed %d time(s) on %s[%s]@%s: %s: %s",
            self.service.name,
            handler.name,
            attempts,
            msg.topic(),
            msg.partition(),
            msg.offset(),
            type(exc).__name__,
            exc,
        )
        if isinstance(handler, Responder) and header(msg, REPLY_TO):
            await self.reply(msg, None, exc, ticket)  # the caller gets the error: not lost
        else:
            self.dead_letter(msg, handler, exc, attempts, ticket)

    def _expired(self, msg: MessageLike) -> bool:
        deadline = header(msg, DEADLINE)
        if not deadline:
            return False
        try:
            return int(deadline) < time.time() * 1000
        except ValueError:
            return False

    async def reply(
        self, msg: MessageLike, value: bytes | None, error: BaseException | None, ticket: Ticket
    ) -> None:
        """Send a responder's encoded result (or its error) to the requester's reply topic."""
        reply_to = header(msg, REPLY_TO)
        correlation = header(msg, CORRELATION_ID)
        if not reply_to or not correlation:
            return
        topic = reply_to.decode(errors="replace")
        if not await self.reply_topic_exists(topic):
            self.replies_dropped += 1
            log.warning("reply topic %s is gone (requester stopped); reply dropped", topic)
            return
        headers: Headers = [(CORRELATION_ID, correlation)]
        if error is not None:
            value = None
            headers.append((ERROR_TYPE, type(error).__name__.encode()))
            headers.append((ERROR_MESSAGE, str(error).encode(errors="replace")[:4096]))
            if self.settings.remote_tracebacks:
                trace = "".join(traceback.format_exception(error))[-8192:]
                headers.append((ERROR_TRACE, trace.encode(errors="replace")))
        ticket.pending += 1
        self.sink.produce(topic, value, None, headers, ticket.settled)

    def dead_letter(
        self, msg: MessageLike, handler: Handler, exc: BaseException, attempts: int, ticket: Ticket
    ) -> None:
        """Send the original record, with the reason in kit-dlt-* headers, to the DLT."""
        self.dead_lettered += 1
        _ts_type, ts = msg.timestamp()
        reason = "decode" if isinstance(exc, DecodeError) else "handler"
        extra = [
            ("kit-dlt-reason", reason.encode()),
            ("kit-dlt-exception-type", type(exc).__qualname__.encode()),
            ("kit-dlt-exception-message", str(exc).encode(errors="replace")[:4096]),
            ("kit-dlt-original-topic", (msg.topic() or "").encode()),
            ("kit-dlt-original-partition", str(msg.partition()).encode()),
            ("kit-dlt-original-offset", str(msg.offset()).encode()),
            ("kit-dlt-original-timestamp", str(ts).encode()),
            ("kit-dlt-attempts", str(attempts).encode()),
            ("kit-dlt-service", self.service.name.encode()),
            ("kit-dlt-group", self.group.encode()),
            ("kit-dlt-handler", handler.name.encode()),
        ]
        if reason == "handler":
            stack = "".join(traceback.format_exception(exc))[-8192:]
            extra.append(("kit-dlt-stacktrace", stack.encode(errors="replace")))
        topic = self.dead_letter_topic(handler)
        log.warning(
            "dead-lettering %s[%s]@%s to %s: %s",
            msg.topic(),
            msg.partition(),
            msg.offset(),
            topic,
            exc,
        )
        ticket.pending += 1
        self.sink.produce(
            topic,
            msg.value(),
            msg.key(),
            list(msg.headers() or []) + extra,
            ticket.delivered,
            msg.partition(),  # the DLT mirrors the source's partitions, so order is kept
        )
