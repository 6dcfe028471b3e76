"""The Kafka requester: per-instance reply topics, a reply reader thread, pending futures.

The protocol it speaks (headers, reply checks, the typed `request()` API) is kit.requests.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from kit.codec import Codec
from kit.config import Settings
from kit.errors import (
    BrokerError,
    ConfigError,
    DeliveryError,
    RemoteError,
    RequestTimeout,
    ServiceUnavailable,
)
from kit.protocol import CORRELATION_ID, MARKER, TurnBatch
from kit.requests import (
    BaseRequester,
    LiveCheck,
    check_reply,
    reply_topic_name,
    request_headers,
)
from kit.telemetry import Stats, tracer
from kit.transport.admin import TopicSpec, ensure_topics
from kit.transport.deadlines import Deadlines
from kit.transport.kafka import admin_client, make_consumer, poll_batch
from kit.transport.sink import KafkaSink

__all__ = ["Requester"]

log = logging.getLogger("kit.rpc")

FIRST_OFFSET = 0
"""Where the reply reader starts: the first offset of its topic, which this requester has
just created (or `_heal` re-created). On a topic left by an earlier run of the same
instance id whose first records were deleted, the offset is out of range and the reader
starts at the earliest (auto.offset.reset), as OFFSET_BEGINNING would.
Not OFFSET_BEGINNING: librdkafka resolves that with an offset query, and one asked
before the new topic's leader is known is retried only 500 ms later, which every
first call waited for (bench.startup: Client() to the first answer 1.17 s)."""


FETCH_ERROR_BACKOFF_MS = 20
"""How soon the reply reader fetches again after a fetch error. The first fetch of a reply
topic just created often fails with UNKNOWN_LEADER_EPOCH (the broker's partition state
trails its metadata by a moment), and at librdkafka's 500 ms the first call of one
`Client()` in three or so waited that long for its reply (bench.startup). One partition,
read by this instance only: a fetch every 20 ms while the broker keeps failing is cheap."""


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Message]
    service: str
    method: str
    started: float


class Requester(BaseRequester):
    """Sends requests and matches replies on this instance's own reply topic.

    Replies go to `_kit.replies.<instance id>` (one partition, read by this instance only,
    no consumer group), so a reply never reaches another instance. The topic is created by
    `start()` and deleted by `close()`; topics left by crashed instances are removed by
    `kit replies prune` (see docs/requests.md).
    """

    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        producer: Producer,
        *,
        instance_id: str | None = None,
        registry: LiveCheck | None = None,
        fail_fast: bool = False,
        registry_factory: Callable[[Settings], Awaitable[LiveCheck]] | None = None,
    ) -> None:
        self.settings = settings
        self.codec = codec
        self.producer = producer
        self.instance_id = instance_id or f"client-{uuid.uuid4().hex[:12]}"
        self.reply_topic = reply_topic_name(self.instance_id)
        self.registry = registry
        """The registry view consulted before sending (see fail_fast)."""
        self.fail_fast = fail_fast
        """Without a registry given, start one on the first request (with
        `registry_factory`) and fail fast with it."""
        self._registry_factory = registry_factory
        self._own_registry: LiveCheck | None = None
        self._registry_lock = asyncio.Lock()
        self.pending: dict[bytes, _Pending] = {}
        """Calls waiting for their reply, by correlation id."""
        self._deadlines = Deadlines(self.pending)
        self.late_replies = 0
        self.stats = Stats()
        self._tracer = tracer()
        """Counters per `service.method` called (a runtime's requester counts into the
        runtime's `stats`)."""
        self._admin = admin_client(settings)
        self._sink = KafkaSink(producer, self._admin, settings)
        self._requests = TurnBatch(self._sink)
        """Requests made in one turn of the loop are produced together (TurnBatch)."""
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start_lock = asyncio.Lock()
        self._verified = time.monotonic()
        self._reassign = threading.Event()
        self._id_prefix = f"{self.instance_id}-{uuid.uuid4().hex[:8]}-".encode()
        self._reply_to = self.reply_topic.encode()
        self._ids = itertools.count(1)

    @property
    def started(self) -> bool:
        """True once the reply topic exists and is being read."""
        return self._thread is not None

    async def start(self) -> None:
        """Create the reply topic and start the reply reader thread (idempotent)."""
        async with self._start_lock:
            if self._thread is not None:
                return
            self._loop = asyncio.get_running_loop()
            await asyncio.to_thread(ensure_topics, self._admin, [self._reply_topic_spec()])
            consumer = make_consumer(
                self.settings,
                f"kit-replies-{self.instance_id}",
                **{
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 5,
                    "auto.offset.reset": "earliest",  # see FIRST_OFFSET
                    "fetch.error.backoff.ms": FETCH_ERROR_BACKOFF_MS,
                },
            )
            consumer.assign([TopicPartition(self.reply_topic, 0, FIRST_OFFSET)])
            self._consumer = consumer
            self._mark()
            self._thread = threading.Thread(
                target=self._read_replies, name=f"kit-replies-{self.instance_id}", daemon=True
            )
            self._thread.start()

    async def _check_live(self, service: str, timeout: float | None) -> None:
        """Raise ServiceUnavailable when the registry has no live instance of `service`."""
        if self.registry is None and self.fail_fast and self._registry_factory is not None:
            async with self._registry_lock:  # concurrent first calls start one registry
                if self.registry is None:
                    registry = await self._registry_factory(self.settings)
                    self._own_registry = self.registry = registry
        if self.registry is not None and not self.registry.has_live(service):
            try:
                await self.registry.sync(timeout=min(2.0, timeout or 2.0))  # just announced?
            except (TimeoutError, BrokerError):  # cannot tell: send, the deadline decides
                log.warning("registry view of %s not confirmed in time; sending anyway", service)
                return
            if not self.registry.has_live(service):
                raise ServiceUnavailable(service)

    def _reply_topic_spec(self) -> TopicSpec:
        """One partition, read by this instance only; replies older than an hour are useless."""
        retention = (("retention.ms", str(3_600_000)),)
        return TopicSpec(self.reply_topic, 1, self.settings.topic_replication, retention)

    def _mark(self) -> None:
        """Write a liveness mark to the reply topic, so `kit replies prune` sees it in use."""
        self.producer.produce(self.reply_topic, None, None, headers=[(MARKER, b"1")])

    async def _heal(self) -> None:
        """Re-create the reply topic if it was pruned while this requester was idle."""
        self._verified = time.monotonic()
        meta = await asyncio.to_thread(self._admin.list_topics, self.reply_topic, 10)
        if self.reply_topic in meta.topics and meta.topics[self.reply_topic].error is None:
            self._mark()
            return
        log.warning("reply topic %s was deleted; re-creating it", self.reply_topic)
        await asyncio.to_thread(ensure_topics, self._admin, [self._reply_topic_spec()])
        self._reassign.set()  # the reader thread re-assigns: the consumer is used by it only
        self._mark()

    async def close(self, *, delete_topic: bool = True) -> None:
        """Stop reading replies, fail pending calls, and delete the reply topic."""
        if self._own_registry is not None:
            await self._own_registry.close()
            self._own_registry = self.registry = None
        if self._thread is None:
            return
        self._closed.set()
        await asyncio.to_thread(self._thread.join, 5)
        self._thread = None
        self._deadlines.close()
        for corr, entry in list(self.pending.items()):
            if not entry.future.done():
                entry.future.set_exception(
                    RequestTimeout(
                        entry.service, entry.method, corr.decode(), time.monotonic() - entry.started
                    )
                )
        if self._consumer is not None:
            await asyncio.to_thread(self._consumer.close)
            self._consumer = None
        if delete_topic:
            futures = self._admin.delete_topics([self.reply_topic], operation_timeout=10)
            for future in futures.values():
                try:
                    await asyncio.to_thread(future.result, 15)
                except Exception as exc:
                    log.warning("could not delete reply topic %s: %s", self.reply_topic, exc)

    def _read_replies(self) -> None:
        consumer, loop = self._consumer, self._loop
        assert consumer is not None and loop is not None
        while not self._closed.is_set():
            if self._reassign.is_set():
                self._reassign.clear()
                consumer.assign([TopicPartition(self.reply_topic, 0, FIRST_OFFSET)])
            batch = poll_batch(consumer, 0.1)
            if batch:
                loop.call_soon_threadsafe(self._deliver, batch)

    def _deliver(self, batch: list[Message]) -> None:
        """Hand a fetched batch of replies to their callers (on the loop, once per batch)."""
        pending = self.pending
        for msg in batch:
            if msg.error() is not None:
                log.warning("reply topic error: %s", msg.error())
                continue
            corr: bytes | None = None
            marker: bytes | None = None
            headers: list[tuple[str, bytes]] = msg.headers() or []  # type: ignore[assignment]
            for name, data in headers:  # one scan for both
                if name == CORRELATION_ID:
                    corr = data
                elif name == MARKER:
                    marker = data
            if marker is not None:  # a liveness mark, not a reply
                continue
            entry = pending.get(corr) if corr is not None else None
            if entry is None or entry.future.done():
                self.late_replies += 1
                log.debug("dropped a late or unknown reply (correlation id %r)", corr)
                continue
            entry.future.set_result(msg)
            if self._tracer.spans:
                try:
                    self._tracer.received(msg, entry.service, entry.method)
                except Exception:  # a tracer's failure must not keep other replies from callers
                    log.exception("tracing a reply failed")

    async def request_raw(
        self,
        service: str,
        method: str,
        value: bytes,
        *,
        topic: str | None = None,
        key: bytes | None = None,
        timeout: float | None = None,
        started: float | None = None,
        create_topic: bool = True,
    ) -> Message:
        """Send encoded request bytes to `service.method`; return the reply record. Raises
        ServiceUnavailable (no live instance; with `create_topic=False`, no request topic),
        RequestTimeout, or RemoteError (the responder raised or could not decode the
        request). A missing request topic is created otherwise: an early call waits."""
        wait = self.settings.request_timeout if timeout is None else timeout
        if wait <= 0:
            raise ConfigError("timeout", f"must be positive, got {wait}")
        if self.registry is None or not self.registry.has_live(service):  # else: no await
            await self._check_live(service, timeout)
        if self._thread is None:
            await self.start()
        elif time.monotonic() - self._verified > 60:
            await self._heal()
        loop = asyncio.get_running_loop()
        corr = b"%s%d" % (self._id_prefix, next(self._ids))  # unique: the instance id is
        now = time.monotonic()
        started = now if started is None else started
        wait -= now - started
        calls = self.stats.call(service, method)
        if wait <= 0:  # set-up (schema, topics, registry check) used the whole deadline
            calls.timeouts += 1
            raise RequestTimeout(service, method, corr.decode(), now - started)
        future: asyncio.Future[Message] = loop.create_future()
        self.pending[corr] = _Pending(future, service, method, started)
        target = topic or f"{service}.{method}"
        headers = self._headers(corr, target, key, wait, service, method)
        calls.sent += 1
        calls.in_flight += 1
        request = (target, value, key, headers, partial(self._sent, corr))
        try:
            if target in self._sink.known_topics:  # the usual case: no set-up to wait for
                self._requests.produce(*request)
                self._deadlines.watch(loop, now + wait, corr)
                reply = await future
            else:
                reply = await self._first(service, method, create_topic, request, future, wait)
        except TimeoutError:
            calls.timeouts += 1
            raise RequestTimeout(service, method, corr.decode(), loop.time() - started) from None
        finally:
            calls.in_flight -= 1
            self.pending.pop(corr, None)
        calls.latency.observe(time.monotonic() - started)
        try:
            return check_reply(reply, service, method, corr.decode())
        except RemoteError:
            calls.errors += 1
            raise

    def _headers(
        self, corr: bytes, target: str, key: bytes | None, wait: float, service: str, method: str
    ) -> list[tuple[str, bytes]]:
        """A request's headers: the protocol's, and the caller's trace."""
        deadline_ms = int((time.time() + wait) * 1000)
        headers = request_headers(corr, self._reply_to, deadline_ms, service, method)
        trace = self._tracer = tracer()
        return trace.outgoing(target, key, headers, None) or headers

    async def _first(
        self,
        service: str,
        method: str,
        create_topic: bool,
        request: tuple[str, bytes, bytes | None, list[tuple[str, bytes]], Callable[..., None]],
        future: asyncio.Future[Message],
        wait: float,
    ) -> Message:
        """A call to a request topic met for the first time: check (or create) it off the
        loop, produce `request` (topic, value, key, headers, delivery callback), and wait
        for the reply, all within the deadline (TimeoutError)."""
        target = request[0]
        async with asyncio.timeout(wait):
            if not create_topic and not await asyncio.to_thread(self._sink.topic_exists, target):
                raise NoRequestTopic(service, method, target)
            await asyncio.to_thread(self._sink.ensure_topic, target)
            self._sink.produce(*request)
            return await future

    def _sent(self, corr: bytes, err: object, _msg: object) -> None:
        """Delivery report of a request (where the producer is polled): a request that
        could not be sent fails its call at once, with DeliveryError. (Delivery reports
        carry no headers: the correlation id is bound to the callback.)"""
        loop = self._loop
        if err is not None and loop is not None:
            error = DeliveryError(f"request not sent: {err}")
            loop.call_soon_threadsafe(self._send_failed, corr, error)

    def _send_failed(self, corr: bytes, error: DeliveryError) -> None:
        entry = self.pending.get(corr)
        if entry is not None and not entry.future.done():
            entry.future.set_exception(error)


class NoRequestTopic(ServiceUnavailable):
    """The request topic of service.method does not exist: nothing ever served it."""

    def __init__(self, service: str, method: str, topic: str) -> None:
        super().__init__(service)
        self.args = (f"no request topic {topic!r}: no responder {service}.{method} has ever run",)
