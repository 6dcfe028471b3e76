"""The Kafka runtime: fetch → decode → handler → publish → confirm delivery → commit."""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, Future
from functools import partial
from typing import Any, Protocol, TypeVar, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from kit.codec import Codec
from kit.commits import Commits
from kit.config import Settings, load_settings, resolve_bootstrap
from kit.dispatch import Dispatcher, Ticket
from kit.errors import KitError
from kit.exactly_once import Transactions
from kit.protocol import MessageLike
from kit.schema import SchemaRepository, repository_for
from kit.service import Handler, Service
from kit.transport.diagnose import authorization_error, authorization_message
from kit.transport.kafka import (
    KafkaSink,
    admin_client,
    make_consumer,
    make_producer,
    poll_batch,
)
from kit.transport.schema_topic import SchemaTopic
from kit.transport.topics import ServiceTopics, setup_service_topics

__all__ = ["Runtime", "run"]

log = logging.getLogger("kit.runtime")
T = TypeVar("T")


class ConsumerThread(Executor):
    """The one thread that owns the consumer: runs every call on it, in order.

    A daemon thread: a librdkafka call that never returns (a close waiting for a group
    coordinator that does not answer) cannot keep the process alive past its stop.
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue `fn(*args, **kwargs)` for the consumer thread."""
        future: Future[T] = Future()
        self._calls.put((future, partial(fn, *args, **kwargs)))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """End the thread after the calls queued so far (waiting, if asked, at most 10 s)."""
        self._calls.put(None)
        if wait:
            self._thread.join(10)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)


class Extension(Protocol):
    """A feature plugged into a runtime's lifecycle, in the spirit of Nameko's Extension.

    `setup(runtime)` runs in `start()` once the runtime's clients, codec and dispatcher
    exist and before it subscribes: register `runtime.on_assigned` / `on_closed` hooks
    there, or offer something to the dispatcher. `stop(runtime)` runs at the end of the
    graceful stop, after the final commit, in reverse order. The runtime imports no
    feature: kit.app composes the default ones (discovery, requests).
    """

    async def setup(self, runtime: Runtime) -> None:
        """Plug in; the runtime is connected but not yet consuming."""
        ...

    async def stop(self, runtime: Runtime) -> None:
        """Release what setup() took."""
        ...


class _Defaults:
    """The extensions of a Runtime made without `extensions=`: none here; the package
    (kit/__init__.py, the composition root) installs kit.app.default_extensions."""

    def __init__(self) -> None:
        self.make: Callable[[Settings], list[Extension]] = lambda _settings: []


_defaults = _Defaults()


def install_default_extensions(make: Callable[[Settings], list[Extension]]) -> None:
    """Set what every Runtime made without `extensions=` gets (called by kit/__init__)."""
    _defaults.make = make


class Runtime:
    """Runs one instance of a service on Kafka.

    `await runtime.start()` checks the cluster, creates topics and joins the group;
    `await runtime.run()` handles records until `stop()` is called; `run()` then finishes
    the batch in flight, waits for delivery of what it published, commits and closes.

    Threads (see docs/architecture.md):

    - The event loop decodes, calls handlers, produces, and polls the producer, so every
      delivery report (and so every `Ticket` update) runs on the loop.
    - One consumer thread owns the Consumer: every `consume`, `store_offsets`, `commit`,
      `subscribe` and `close` runs there, and so do the rebalance callbacks, which
      librdkafka calls inside `consume`. The loop never calls the Consumer; it hands the
      offsets it wants stored to that thread (`Commits.take`, under a lock), which stores
      them before its next fetch.
    - A revoke callback asks the loop to settle what is in flight and waits for it with a
      deadline. The loop can always answer: it only ever awaits the consumer thread.

    Commit rule: a batch's offsets are stored only once it is handled and every record it
    emitted is confirmed, oldest batch first. A delivery the broker refused for good
    dead-letters the input record it came from; any other failed delivery stops the
    service, and its batch stays at the head of the queue, so no path (loop, revoke,
    close, auto-commit) stores an offset at or past it.
    """

    def __init__(
        self,
        service: Service,
        settings: Settings | None = None,
        *,
        repository: SchemaRepository | None = None,
        instance_id: str | None = None,
        extensions: Sequence[Extension] | None = None,
    ) -> None:
        self.service = service
        self.settings = settings or load_settings()
        self.instance_id = instance_id or f"{service.name}-{uuid.uuid4().hex[:12]}"
        self.repository = repository or _repository_of(service, self.settings)
        self.bootstrap, self.bootstrap_source = resolve_bootstrap(self.settings)
        self.group = self.settings.group_id or service.group
        self.exactly_once = (
            service.exactly_once
            if self.settings.exactly_once is None
            else self.settings.exactly_once
        )
        """Each batch is one Kafka transaction with its offsets (see kit.exactly_once)."""
        self.transactions: Transactions | None = None
        self.ready = asyncio.Event()
        self.assignment: set[tuple[str, int]] = set()
        """Partitions this instance owns (updated on the event loop)."""
        self._owned: set[tuple[str, int]] = set()  # the same, kept by the consumer thread
        self._stopping = asyncio.Event()
        self.commits: Commits
        """The batches in flight and the offsets they may store (made by start())."""
        self._close_deadline = 0.0
        self._executor: ConsumerThread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._consumer: Consumer | None = None
        self._started = False
        self.codec: Codec
        self.dispatcher: Dispatcher
        self.extensions: list[Extension] = (
            list(extensions) if extensions is not None else _defaults.make(self.settings)
        )
        """Features plugged into this runtime's lifecycle (see Extension)."""
        self.announcer: Any = None
        """The instance's kit.registry.Announcer, when the Announcing extension runs (Any:
        the runtime does not import the registry, which sits above it)."""
        self.registry: Any = None
        """Optional kit.rpc.LiveCheck: lets requests fail fast with ServiceUnavailable."""
        self.on_assigned: list[Callable[[Runtime], None]] = []
        """Called on the loop after each assignment (e.g. to announce the instance)."""
        self.on_closed: list[Callable[[Runtime], Awaitable[None] | None]] = []
        """Called on the loop after a graceful stop committed (e.g. to write a tombstone);
        a callback that returns an awaitable is awaited."""

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, verify or create topics, publish writer schemas, and subscribe."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        settings = self.settings
        admin = admin_client(settings)
        self._admin = admin
        topics = await asyncio.to_thread(
            setup_service_topics, admin, settings, self.service.handlers, self._dead_letter_topic
        )
        producer = make_producer(
            settings,
            low_latency=bool(self.service.responders()),
            message_max_bytes=topics.producer_limit,
        )
        self.producer = producer
        self.reply_sink = self._sink_for(producer, topics)
        self.sink = self.reply_sink
        """Where handlers' events and dead letters go (transactional when exactly-once)."""
        if self.exactly_once and self.service.handlers:
            self.transactions = Transactions(self)
            self.sink = self._sink_for(await self.transactions.start(), topics)
        self.schema_topic = SchemaTopic(settings, admin)
        self.codec = Codec(self.repository, async_resolver=self.schema_topic.lookup_async)
        self.dispatcher = Dispatcher(self.service, self.codec, settings, self.sink)
        self.dispatcher.reply_sink = self.reply_sink
        self.dispatcher.reply_topic_exists = self._topic_exists
        self.dispatcher.stopping = self._stopping
        self.commits = Commits(settings, self.dispatcher, self.sink, producer.poll)
        schemas = {h.event_type.kit_schema() for h in self.service.handlers}
        await asyncio.to_thread(self.schema_topic.publish, schemas | set(self.repository))
        overrides: dict[str, Any] = {"client.id": self.instance_id}
        if self.transactions is not None:  # offsets are committed in the transactions
            overrides["enable.auto.commit"] = False
        self._consumer = make_consumer(settings, self.group, **overrides)
        self._executor = ConsumerThread(f"kit-consumer-{self.service.name}")
        for extension in self.extensions:
            await extension.setup(self)
        if self.service.handlers:
            await self._on_consumer_thread(
                self._consumer.subscribe,
                self.service.topics(),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        self._started = True
        log.info(
            "%s %s (instance %s) connected to %s via %s",
            self.service.name,
            self.service.version,
            self.instance_id,
            self.bootstrap,
            self.bootstrap_source,
        )

    def _sink_for(self, producer: Producer, topics: ServiceTopics) -> KafkaSink:
        sink = KafkaSink(producer, self._admin, self.settings, producer_limit=topics.producer_limit)
        sink.known_topics.update(topics.partitions)
        sink.partitions.update(topics.partitions)
        sink.limits.update(topics.limits)
        return sink

    def _dead_letter_topic(self, handler: Handler) -> str:
        return handler.dead_letter_topic or f"{handler.topic}{self.settings.dead_letter_suffix}"

    @property
    def admin(self) -> AdminClient:
        """The runtime's admin client (made by start())."""
        return self._admin

    async def requester(self) -> Any:
        """The kit.rpc.Requester that handlers' ctx.request() uses, started on first use
        (given by the Requesting extension)."""
        factory = self.dispatcher.requester
        if factory is None:
            raise KitError(f"{self.service.name}: no extension gives requests (kit.app.Requesting)")
        return await factory()

    async def _topic_exists(self, topic: str) -> bool:
        if topic in self.reply_sink.known_topics:
            return True
        found = await asyncio.to_thread(self._admin.list_topics, topic, 5)
        meta = found.topics.get(topic)
        exists = meta is not None and meta.error is None
        denied = (
            authorization_message(meta.error, topic=topic, action="produce", settings=self.settings)
            if meta is not None and meta.error is not None
            else None
        )
        if denied:
            log.error("cannot reply to %s: %s", topic, denied)
        if exists:
            self.reply_sink.known_topics.add(topic)
        return exists

    def stop(self) -> None:
        """Ask the runtime to stop after the batch in flight (safe from signal handlers)."""
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._stopping.set)
        else:
            self._stopping.set()

    @property
    def stopping(self) -> bool:
        """True once stop() was called."""
        return self._stopping.is_set()

    async def run(self) -> None:
        """Handle records until stop(); then finish, commit and close.

        Raises DeliveryError, after closing without committing past it, when a record
        it published could not be delivered and its input could not be dead-lettered.
        """
        if not self._started:
            await self.start()
        try:
            await self._loop_until_stopped()
        finally:
            await self._close()

    async def _loop_until_stopped(self) -> None:
        assert self._consumer is not None and self._executor is not None
        loop = asyncio.get_running_loop()
        executor = self._executor
        fetch = self._fetch
        poll = self.producer.poll
        handle_batch = self.dispatcher.handle_batch
        stopping = self._stopping
        commits = self.commits
        tickets = commits.tickets
        transactions = self.transactions
        while not stopping.is_set():
            messages = await loop.run_in_executor(executor, fetch)
            if commits.failed is not None:  # a revoke found it while settling
                raise commits.failed
            if messages:
                records = [m for m in messages if m.error() is None]
                if len(records) != len(messages):
                    self._check_errors(messages)
                if records and transactions is not None:
                    await transactions.run_batch(cast(list[MessageLike], records))
                elif records:
                    ticket = Ticket()
                    tickets.append(ticket)
                    try:
                        await handle_batch(cast(list[MessageLike], records), ticket)
                    finally:
                        ticket.closed = True
            poll(0)
            if tickets and tickets[0].done:
                await commits.settle()

    # --- the consumer thread ------------------------------------------------------------

    async def _on_consumer_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, partial(fn, *args, **kwargs)
        )

    def _fetch(self) -> list[Message]:
        """On the consumer thread: store what the loop settled, then fetch a batch."""
        consumer = self._consumer
        assert consumer is not None
        self._store_pending(consumer)
        return poll_batch(consumer, 0.05, self.settings.batch_size)

    def _store_pending(self, consumer: Consumer) -> None:
        """On the consumer thread: store the offsets the loop settled, for owned partitions."""
        pending = self.commits.take()
        offsets = [
            TopicPartition(t, p, o) for (t, p), o in pending.items() if (t, p) in self._owned
        ]
        if offsets:
            try:
                consumer.store_offsets(offsets=offsets)
            except KafkaException as exc:  # e.g. a partition lost meanwhile: redone later
                log.warning("could not store offsets %s: %s", _fmt(offsets), exc)

    def _commit(self, consumer: Consumer) -> None:
        """On the consumer thread: commit stored offsets synchronously."""
        if not self._owned:
            return
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed: %s", exc)

    def _close_consumer(self, consumer: Consumer) -> None:
        """On the consumer thread: store, commit, leave the group (the revoke callback
        settles once more) and close."""
        self._store_pending(consumer)
        self._commit(consumer)
        consumer.close()

    def _check_errors(self, messages: list[Message]) -> None:
        for msg in messages:
            err = msg.error()
            if err is None or err.code() == KafkaError._PARTITION_EOF:
                continue
            denied = authorization_error(
                err, group=self.group, topic=msg.topic(), action="consume", settings=self.settings
            )
            if denied is not None:  # it would never be allowed by waiting: stop, naming it
                raise denied
            if err.fatal():
                raise KafkaException(err)
            log.warning("consumer error: %s", err)

    async def _close(self) -> None:
        timeout = self.settings.shutdown_timeout
        self._close_deadline = time.monotonic() + timeout
        try:
            if self.commits.failed is None:
                await self.commits.quiesce(max(0.0, self._close_deadline - time.monotonic()))
        finally:
            consumer, self._consumer = self._consumer, None
            if consumer is not None and self._executor is not None:
                left = max(5.0, self._close_deadline - time.monotonic())
                try:  # a close waits on the group coordinator: never for ever
                    await asyncio.wait_for(
                        self._on_consumer_thread(self._close_consumer, consumer), left
                    )
                except TimeoutError:
                    log.error(
                        "the consumer did not close within %.0fs (is the group coordinator "
                        "reachable?); leaving it: what was not committed is handled again",
                        left,
                    )
            if self._executor is not None:
                self._executor.shutdown(wait=False)
            for callback in self.on_closed:
                try:
                    result = callback(self)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("on_closed callback %r failed", callback)
            for extension in reversed(self.extensions):
                try:
                    await extension.stop(self)
                except Exception:
                    log.exception("stopping extension %r failed", extension)
            await asyncio.to_thread(self.schema_topic.close)
            if self.transactions is not None:
                self.transactions.close()
            log.info(
                "%s stopped: %d handled, %d dead-lettered, %d expired requests skipped",
                self.service.name,
                self.dispatcher.handled,
                self.dispatcher.dead_lettered,
                self.dispatcher.expired,
            )

    # --- rebalance callbacks (librdkafka calls them inside consume(): consumer thread) --

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        owned = {(tp.topic, tp.partition) for tp in partitions}
        self._owned |= owned
        log.info("%s assigned %s", self.instance_id, _fmt(partitions))
        self._to_loop(self._assigned, owned)

    def _assigned(self, owned: set[tuple[str, int]]) -> None:
        self.assignment |= owned
        self.ready.set()
        for callback in self.on_assigned:
            callback(self)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Settle in-flight deliveries on the loop (which never waits on this thread), then
        # store and commit here, on the thread that owns the consumer.
        loop = self._loop
        if loop is not None and loop.is_running() and threading.get_ident() != self._loop_thread:
            limit = self.settings.shutdown_timeout
            if self._close_deadline:
                limit = max(0.0, min(limit, self._close_deadline - time.monotonic()))
            future = asyncio.run_coroutine_threadsafe(self.commits.quiesce(limit), loop)
            try:
                future.result(limit + 1)
            except Exception as exc:  # a revoke must go on: what is unsettled is redone
                future.cancel()
                log.warning("settling before revoke failed: %r", exc)
        self._store_pending(consumer)
        self._commit(consumer)
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._owned -= gone
        log.info("%s revoked %s", self.instance_id, _fmt(partitions))
        self._to_loop(self.assignment.difference_update, gone)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._owned -= gone
        self.commits.drop(gone)
        log.warning(
            "%s lost %s (their uncommitted work will be redone)",
            self.instance_id,
            _fmt(partitions),
        )
        self._to_loop(self.assignment.difference_update, gone)

    def _to_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            fn(*args)
        elif loop.is_running():
            loop.call_soon_threadsafe(fn, *args)


def _fmt(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"


def _repository_of(service: Service, settings: Settings) -> SchemaRepository:
    """`settings.schemas_dir`, else the repository the service's first event type is bound
    to (the nearest `schemas/` above its module), else the current directory's."""
    if not settings.schemas_dir:
        for handler in service.handlers:
            repo = getattr(handler.event_type, "__kit_repository__", None)
            if isinstance(repo, SchemaRepository):
                return repo
    return repository_for(settings=settings)


async def run(service: Service, settings: Settings | None = None, *, signals: bool = True) -> int:
    """Run a service until SIGTERM/SIGINT; returns 0 after a graceful stop within the deadline."""
    runtime = Runtime(service, settings)
    loop = asyncio.get_running_loop()
    if signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runtime.stop)
    task = asyncio.create_task(runtime.run(), name=f"kit-runtime-{service.name}")
    stop_wait = asyncio.create_task(runtime._stopping.wait())
    done, _ = await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        stop_wait.cancel()
        task.result()
        return 0
    try:
        await asyncio.wait_for(task, runtime.settings.shutdown_timeout + 1)
    except TimeoutError:
        log.error(
            "graceful stop exceeded KIT_SHUTDOWN_TIMEOUT=%ss", runtime.settings.shutdown_timeout
        )
        return 1
    return 0
