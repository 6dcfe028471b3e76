"""Decode → handler → outbox → dead-letter: the transport-agnostic part of the record flow."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from kit.codec import Codec, UnknownWriterSchema
from kit.config import Settings
from kit.context import Context, Output, Ticket
from kit.dead_letters import RECORD_OVERHEAD, dead_letter_headers, dead_letter_topic, fit_value
from kit.errors import (
    DecodeError,
    EncodeError,
)
from kit.event import Event
from kit.protocol import (
    REPLY_TO,
    MessageLike,
    Sink,
    TopicNotReady,
    header,
    request_expired,
)
from kit.replying import Replies
from kit.retry import TRANSIENT_ERRORS, Abandoned, retry_delay
from kit.service import Handler, Responder, Service
from kit.telemetry import HandlerStats, Stats, active, current_record, tracer, unique_names

__all__ = [
    "RECORD_OVERHEAD",
    "TRANSIENT_ERRORS",
    "Abandoned",
    "Context",
    "Dispatcher",
    "MessageLike",
    "Sink",
    "Ticket",
]

log = logging.getLogger("kit.dispatch")

Offsets = dict[tuple[str, int], int]
"""Per partition, the offset after the last record done."""


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
        # Any: a kit.requests.BaseRequester, of a layer above this one
        self.requester: Callable[[], Awaitable[Any]] | None = None
        """Gives the Requester that handlers' ctx.request() uses (set by the runtime)."""
        self.replies = Replies(settings, sink)
        """Where responders' results go (`replies.sink`: the runtime's plain producer when
        `sink` is transactional)."""
        self.stopping: asyncio.Event | None = None
        """Set by the runtime when it stops: retry waits end at once (see Abandoned)."""
        self.stats = Stats()
        """Counters per handler, published topics and calls (the runtime's `stats`)."""
        self.stats_names = unique_names((h.topic, h.name) for h in service.handlers)
        """Each handler's name in `stats` by topic: its own, or name@topic if two share it."""
        self.learned: set[tuple[str, type[Event]]] = set()
        """(topic, event type) pairs published so far: `stats.published` learns each once."""

    def dead_letter_topic(self, handler: Handler) -> str:
        """Where a handler's failed records go."""
        return dead_letter_topic(handler, self.settings.dead_letter_suffix)

    async def handle_batch(self, messages: Sequence[MessageLike], ticket: Ticket) -> None:
        """Handle a batch: partitions concurrently, records of one partition in order."""
        groups: dict[tuple[str | None, int | None], list[MessageLike]] = {}
        for msg in messages:
            groups.setdefault((msg.topic(), msg.partition()), []).append(msg)
        if len(groups) == 1:
            await self.handle_partition(next(iter(groups.values())), ticket)
        else:
            await asyncio.gather(*(self.handle_partition(g, ticket) for g in groups.values()))

    async def handle_partition(
        self, messages: Sequence[MessageLike], ticket: Ticket, offsets: Offsets | None = None
    ) -> None:
        """Handle records of one partition in order; `offsets` (the ticket's): next to do."""
        offsets, first = (ticket.offsets if offsets is None else offsets), messages[0]
        slot = (first.topic() or "", first.partition() or 0)
        handler = self.by_topic.get(slot[0])
        if handler is None or tracer().spans:
            await self._handle_each(messages, ticket, slot, handler, offsets)
            return
        # The hot path: one partition of one handler's topic. Anything unusual (a record
        # that does not decode, an expired request, a handler that raises) takes the full one.
        replies = self.replies if isinstance(handler, Responder) else None
        decode, event_type, func = self.codec.decode, handler.event_type, handler.func
        takes_context, is_async = handler.takes_context, handler.is_async
        reply: bytes | None = None
        stats = self.stats.handler(self.stats_names[handler.topic])
        running, observe, clock = stats.started, stats.latency.observe, time.monotonic
        part, timed, track = asyncio.current_task() or slot, active.timed, active.records
        done, handled, began, batch_began = -1, 0, 0.0, clock()
        try:
            for msg in messages:
                try:
                    expired = replies is not None and request_expired(msg)
                    event = None if expired else decode(msg.value(), event_type)
                except DecodeError:
                    event = None
                if event is None:  # the full path skips it (expired) or dead-letters it
                    await self.handle(msg, ticket)
                    done = msg.offset() or 0
                    continue
                ctx = Context(self, msg)
                if track:
                    current_record.set(msg)
                if timed:
                    began = running[part] = clock()
                try:
                    result = func(event, ctx) if takes_context else func(event)
                    if is_async:
                        result = await result
                    if replies is not None:  # an unencodable reply fails the attempt
                        reply = self._encoded(handler, result)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    running.pop(part, None)
                    stats.failed += 1
                    await self._attempts(msg, handler, event, ticket, 1, exc)
                else:
                    if timed:
                        observe(clock() - began)
                        running.pop(part, None)
                    handled += 1
                    if ctx.outbox and (i := self._publish(ctx, ticket)) >= 0:
                        await self._publish_rest(ctx, ticket, i)
                    if replies is not None:
                        await replies.send(msg, reply, None, ticket)
                done = msg.offset() or 0
        except Abandoned:
            log.info("stopping: %s[%s] left at offset %s", slot[0], slot[1], done + 1)
        finally:  # the records handled so far count, even if the run was cancelled
            self._ran(stats, part, handled, clock() - batch_began, track)
            if done >= 0:
                offsets[slot] = done + 1

    def _ran(
        self, stats: HandlerStats, part: object, handled: int, busy: float, track: bool
    ) -> None:
        """Count a run of the hot path over a partition's records, however it ended."""
        stats.started.pop(part, None)
        self.handled += handled
        stats.handled += handled
        stats.busy += busy
        if track:
            current_record.set(None)

    async def _handle_each(
        self,
        messages: Sequence[MessageLike],
        ticket: Ticket,
        slot: tuple[str, int],
        handler: Handler | None,
        offsets: Offsets,
    ) -> None:
        """The full path for each record of one partition, in order."""
        began = time.monotonic()
        try:
            for msg in messages:
                await self.handle(msg, ticket)
                offsets[slot] = (msg.offset() or 0) + 1
        except Abandoned:
            log.info("stopping: %s[%s] left before offset %s", *slot, msg.offset())
        finally:
            if handler is not None:
                self.stats.handler(self.stats_names[handler.topic]).busy += time.monotonic() - began

    async def handle(self, msg: MessageLike, ticket: Ticket) -> None:
        """Handle one record completely: decode, call, publish outbox, reply or dead-letter."""
        handler = self.by_topic.get(msg.topic() or "")
        if handler is None:
            log.warning("no handler for topic %s; record skipped", msg.topic())
            return
        if isinstance(handler, Responder) and request_expired(msg):
            self.expired += 1
            log.info(
                "skipped expired request %s[%s]@%s", msg.topic(), msg.partition(), msg.offset()
            )
            return
        token = current_record.set(msg)
        try:
            trace = tracer()
            if not trace.spans:
                await self._handle(msg, handler, ticket)
                return
            stopped: Abandoned | None = None
            with trace.process(msg, handler.name, self.group):
                try:
                    await self._handle(msg, handler, ticket)
                except Abandoned as exc:  # not a failure of the record: handled again later
                    stopped = exc
            if stopped is not None:
                raise stopped
        finally:
            current_record.reset(token)

    async def _handle(self, msg: MessageLike, handler: Handler, ticket: Ticket) -> None:
        try:
            event = await self._decode(msg, handler)
        except DecodeError as exc:
            tracer().failed(exc, final=True)
            await self.dead_letter(msg, handler, exc, 0, ticket)
            if isinstance(handler, Responder):
                await self.replies.send(msg, None, exc, ticket)
            return
        await self._attempts(msg, handler, event, ticket, 0, None)

    async def _decode(self, msg: MessageLike, handler: Handler) -> Event:
        """Decode; a writer schema not known yet is looked up (off the loop) and the
        decode tried again. DecodeError when it still cannot be decoded."""
        try:
            return self.codec.decode(msg.value(), handler.event_type)
        except UnknownWriterSchema as exc:
            if not await self.codec.resolve(exc.fingerprint):
                raise
        return self.codec.decode(msg.value(), handler.event_type)

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
        transient_for = (
            self.settings.transient_timeout
            if handler.transient_timeout is None
            else handler.transient_timeout
        )
        first_failure = time.monotonic() if error is not None else 0.0
        stats = self.stats.handler(self.stats_names[handler.topic])
        part = asyncio.current_task() or msg.partition()  # as handle_partition's
        while True:
            if error is not None:
                if not first_failure:
                    first_failure = time.monotonic()
                failing_for = time.monotonic() - first_failure
                delay = retry_delay(
                    self.settings, self.service.name, handler, error, attempt, retries,
                    transient_for, failing_for,
                )  # fmt: skip
                if delay is None:
                    await self._failed(msg, handler, error, attempt, ticket)
                    return
                waited = time.monotonic()
                await self._pause(delay)
                stats.busy -= time.monotonic() - waited  # waiting is not handling
                stats.retried += 1
            attempt += 1
            ctx = Context(self, msg)
            began = stats.started[part] = time.monotonic()
            try:
                reply = await self._call(handler, event, ctx, responder)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                stats.failed += 1
                tracer().failed(exc, final=False)
                error = exc
                continue
            finally:
                stats.started.pop(part, None)
            stats.latency.observe(time.monotonic() - began)
            break
        self.handled += 1
        stats.handled += 1
        if ctx.outbox and (i := self._publish(ctx, ticket)) >= 0:
            await self._publish_rest(ctx, ticket, i)
        if responder:
            await self.replies.send(msg, reply, None, ticket)

    async def _call(
        self, handler: Handler, event: Event, ctx: Context, responder: bool
    ) -> bytes | None:
        """Call the handler once; a responder's result is encoded here (a reply that cannot
        be encoded is a failure of the attempt). Returns the encoded reply, if any."""
        result = handler.func(event, ctx) if handler.takes_context else handler.func(event)
        if handler.is_async:
            result = await result
        return self._encoded(handler, result) if responder else None

    def _encoded(self, handler: Handler, result: object) -> bytes:
        """A responder's result, encoded; EncodeError if it is not an encodable Event."""
        if not isinstance(result, Event):
            raise EncodeError(f"{handler.name} returned {type(result).__name__}, not an Event")
        return self.codec.encode(result)

    async def _pause(self, delay: float) -> None:
        """Wait `delay` seconds before a retry; raise Abandoned at once if stopping."""
        stopping = self.stopping
        if stopping is None:
            await asyncio.sleep(delay)
            return
        if stopping.is_set():
            raise Abandoned
        try:
            await asyncio.wait_for(stopping.wait(), delay)
        except TimeoutError:
            return
        raise Abandoned

    def _publish(self, ctx: Context, ticket: Ticket, start: int = 0) -> int:
        """Send the outbox from `start`, counted in the ticket; -1 when all is queued, else
        the index of the first record whose topic must be prepared first."""
        produce = self.sink.produce
        outbox = ctx.outbox
        delivered = Output(ticket, ctx._message)
        for i, (topic, value, key, headers) in enumerate(
            outbox[start:] if start else outbox, start
        ):
            ticket.pending += 1
            try:
                produce(topic, value, key, headers, delivered)
            except TopicNotReady:
                ticket.pending -= 1
                return i
        return -1

    async def _publish_rest(self, ctx: Context, ticket: Ticket, i: int) -> None:
        """From outbox record `i` on: prepare (off the loop) each topic met for the first
        time, and send."""
        while i >= 0:
            await self.sink.prepare(ctx.outbox[i][0])
            i = self._publish(ctx, ticket, i)

    async def _failed(
        self, msg: MessageLike, handler: Handler, exc: Exception, attempts: int, ticket: Ticket
    ) -> None:
        tracer().failed(exc, final=True)
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
            await self.replies.send(msg, None, exc, ticket)  # the caller gets the error: not lost
        else:
            await self.dead_letter(msg, handler, exc, attempts, ticket)

    async def dead_letter(
        self,
        msg: MessageLike,
        handler: Handler,
        exc: BaseException,
        attempts: int,
        ticket: Ticket,
        *,
        max_value: int | None = None,
    ) -> None:
        """Send the original record, with the reason in kit-dlt-* headers, to the DLT.

        A copy that the dead-letter topic could not take is cut to fit (at most
        `max_value` value bytes when given) and marked with a kit-dlt-truncated header
        holding the original size; the kit-dlt-original-* headers say where the whole
        record is.
        """
        self.dead_lettered += 1
        self.stats.handler(self.stats_names[handler.topic]).dead_lettered += 1
        topic = self.dead_letter_topic(handler)
        headers = list(msg.headers() or []) + dead_letter_headers(
            msg, exc, attempts, self.service.name, self.group, handler.name
        )
        value = fit_value(msg, headers, self.sink.record_limit(topic), max_value, topic)
        key = msg.key()
        log.warning(
            "dead-lettering %s[%s]@%s to %s: %s",
            msg.topic(),
            msg.partition(),
            msg.offset(),
            topic,
            exc,
        )
        delivered = ticket.output_of(msg, "dead-letter")
        while True:
            ticket.pending += 1
            try:  # the DLT mirrors the source's partitions, so order is kept
                self.sink.produce(topic, value, key, headers, delivered, msg.partition())
                return
            except TopicNotReady:
                ticket.pending -= 1
                await self.sink.prepare(topic)
