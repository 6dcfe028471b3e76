"""The Kafka runtime: fetch → decode → handler → publish → confirm delivery → commit."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from kit.codec import Codec
from kit.config import Settings, load_settings, resolve_bootstrap
from kit.dispatch import Dispatcher, MessageLike, Ticket
from kit.errors import DeliveryError, KitError
from kit.registry import Announcer, load_registry_config
from kit.rpc import LiveCheck, Requester
from kit.schema import SchemaRepository, default_repository
from kit.service import Service
from kit.transport.kafka import (
    KafkaSink,
    SchemaTopic,
    TopicSpec,
    admin_client,
    check_reachable,
    ensure_topics,
    make_consumer,
    make_producer,
    poll_batch,
)

__all__ = ["Runtime", "run"]

log = logging.getLogger("kit.runtime")


class Runtime:
    """Runs one instance of a service on Kafka.

    `await runtime.start()` checks the cluster, creates topics and joins the group;
    `await runtime.run()` handles records until `stop()` is called; `run()` then finishes
    the batch in flight, waits for delivery of what it published, commits and closes.
    """

    def __init__(
        self,
        service: Service,
        settings: Settings | None = None,
        *,
        repository: SchemaRepository | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.service = service
        self.settings = settings or load_settings()
        self.instance_id = instance_id or f"{service.name}-{uuid.uuid4().hex[:12]}"
        self.repository = repository or _repository_of(service, self.settings)
        self.bootstrap, self.bootstrap_source = resolve_bootstrap(self.settings)
        self.group = self.settings.group_id or service.group
        self.ready = asyncio.Event()
        self.assignment: set[tuple[str, int]] = set()
        self._stopping = asyncio.Event()
        self._tickets: deque[Ticket] = deque()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._consumer: Consumer | None = None
        self._started = False
        self.codec: Codec
        self.dispatcher: Dispatcher
        self._requester: Requester | None = None
        self._fail_fast = False
        self.announcer: Announcer | None = None
        self.registry: LiveCheck | None = None
        """Optional: lets requests fail fast with ServiceUnavailable (see kit.registry)."""
        self.on_assigned: list[Callable[[Runtime], None]] = []
        """Called on the loop after each assignment (e.g. to announce the instance)."""
        self.on_closed: list[Callable[[Runtime], None]] = []
        """Called on the loop after a graceful stop committed (e.g. to write a tombstone)."""

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, verify or create topics, publish writer schemas, and subscribe."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        settings = self.settings
        admin = admin_client(settings)
        await asyncio.to_thread(check_reachable, admin, settings, settings.connect_timeout)
        producer = make_producer(settings, low_latency=bool(self.service.responders()))
        self.schema_topic = SchemaTopic(settings, admin, producer)
        self.codec = Codec(self.repository, resolver=self.schema_topic.lookup)
        self.sink = KafkaSink(producer, admin, settings)
        self.producer = producer
        self.dispatcher = Dispatcher(self.service, self.codec, settings, self.sink)
        self.dispatcher.reply_topic_exists = self._topic_exists
        self.dispatcher.requester = self.requester
        self._admin = admin
        specs = [
            TopicSpec(
                h.topic, h.partitions or settings.topic_partitions, settings.topic_replication
            )
            for h in self.service.handlers
        ]
        if settings.create_topics:
            await asyncio.to_thread(ensure_topics, admin, specs)
        else:
            meta = await asyncio.to_thread(admin.list_topics, timeout=15)
            missing = [s.name for s in specs if s.name not in meta.topics]
            if missing:
                raise KitError(f"topics missing and KIT_CREATE_TOPICS is false: {missing}")
        self.sink.known_topics.update(s.name for s in specs)
        if settings.create_topics:
            # Dead-letter topics mirror their source's partition count (records keep partition).
            meta = await asyncio.to_thread(admin.list_topics, timeout=15)
            dlts = [
                TopicSpec(
                    self.dispatcher.dead_letter_topic(h),
                    len(meta.topics[h.topic].partitions),
                    settings.topic_replication,
                )
                for h in self.service.handlers
                if h.topic in meta.topics
            ]
            await asyncio.to_thread(ensure_topics, admin, dlts)
            self.sink.known_topics.update(s.name for s in dlts)
        schemas = {h.event_type.kit_schema() for h in self.service.handlers}
        await asyncio.to_thread(self.schema_topic.publish, schemas | set(self.repository))
        self._consumer = make_consumer(settings, self.group, **{"client.id": self.instance_id})
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix=f"kit-consumer-{self.service.name}"
        )
        registry = load_registry_config()
        if registry.enabled:  # announce on the first assignment; tombstone on graceful stop
            self.announcer = Announcer.for_runtime(
                self, admin=admin, schema_topic=self.schema_topic
            )
            await self.announcer.prepare()
            if not self.service.handlers:
                await self.announcer.start()
        self._fail_fast = registry.fail_fast
        if self.service.handlers:
            self._consumer.subscribe(
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

    async def requester(self) -> Requester:
        """The Requester that handlers' ctx.request() uses, started on first use."""
        if self._requester is None:
            self._requester = Requester(
                self.settings,
                self.codec,
                self.producer,
                instance_id=self.instance_id,
                registry=self.registry,
                fail_fast=self._fail_fast,
            )
            if self.announcer is not None:  # carried from the next heartbeat on
                self.announcer.reply_address = self._requester.reply_topic
        await self._requester.start()
        return self._requester

    async def _topic_exists(self, topic: str) -> bool:
        if topic in self.sink.known_topics:
            return True
        found = await asyncio.to_thread(self._admin.list_topics, topic, 5)
        meta = found.topics.get(topic)
        exists = meta is not None and meta.error is None
        if exists:
            self.sink.known_topics.add(topic)
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
        """Handle records until stop(); then finish, commit and close."""
        if not self._started:
            await self.start()
        try:
            await self._loop_until_stopped()
        finally:
            await self._close()

    async def _loop_until_stopped(self) -> None:
        consumer = self._consumer
        assert consumer is not None and self._executor is not None
        loop = asyncio.get_running_loop()
        batch_size = self.settings.batch_size
        poll = self.producer.poll
        handle_batch = self.dispatcher.handle_batch
        stopping = self._stopping
        while not stopping.is_set():
            messages = consumer.consume(batch_size, 0)
            if not messages:
                messages = await loop.run_in_executor(
                    self._executor, poll_batch, consumer, 0.05, batch_size
                )
            if messages:
                records = [m for m in messages if m.error() is None]
                if len(records) != len(messages):
                    self._check_errors(messages)
                if records:
                    ticket = Ticket()
                    self._tickets.append(ticket)
                    try:
                        await handle_batch(cast(list[MessageLike], records), ticket)
                    finally:
                        ticket.closed = True
            poll(0)
            self._drain()

    def _check_errors(self, messages: list[Message]) -> None:
        for msg in messages:
            err = msg.error()
            if err is None or err.code() == KafkaError._PARTITION_EOF:
                continue
            if err.fatal():
                raise KafkaException(err)
            log.warning("consumer error: %s", err)

    def _drain(self) -> None:
        """Store offsets of completed batches, oldest first; a failed delivery is fatal."""
        with self._lock:
            tickets = self._tickets
            consumer = self._consumer
            while tickets and tickets[0].done:
                ticket = tickets.popleft()
                if ticket.error is not None:
                    raise DeliveryError(f"publishing failed; offsets not committed: {ticket.error}")
                if ticket.dropped:
                    self.dispatcher.replies_dropped += ticket.dropped
                    log.warning(
                        "%d replies could not be delivered (requester gone)", ticket.dropped
                    )
                offsets = [
                    TopicPartition(t, p, o)
                    for (t, p), o in ticket.offsets.items()
                    if (t, p) in self.assignment
                ]
                if offsets and consumer is not None:
                    consumer.store_offsets(offsets=offsets)

    def _finish_pending(self, timeout: float) -> None:
        """Wait (bounded) for every emitted record, then store offsets of finished batches."""
        remaining = self.producer.flush(timeout)
        if remaining:
            log.error("%d published records unconfirmed after %.1fs", remaining, timeout)
        self._drain()

    def _commit(self, consumer: Consumer | None) -> None:
        """Commit stored offsets synchronously, in the thread that runs consume()."""
        if consumer is None or not self.assignment:
            return
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed: %s", exc)

    async def _close(self) -> None:
        timeout = self.settings.shutdown_timeout
        if self._requester is not None:
            await self._requester.close()
        try:
            self._finish_pending(timeout)
            self._commit(self._consumer)
        finally:
            consumer, self._consumer = self._consumer, None
            if consumer is not None:
                await asyncio.to_thread(consumer.close)
            if self._executor is not None:
                self._executor.shutdown(wait=False)
            for callback in self.on_closed:
                try:
                    callback(self)
                except Exception:
                    log.exception("on_closed callback %r failed", callback)
            log.info(
                "%s stopped: %d handled, %d dead-lettered, %d expired requests skipped",
                self.service.name,
                self.dispatcher.handled,
                self.dispatcher.dead_lettered,
                self.dispatcher.expired,
            )

    # --- rebalance callbacks (run inside consume(), in whichever thread called it) ------

    def _in_loop(self, fn: Callable[[], Any]) -> Any:
        if threading.get_ident() == self._loop_thread or self._loop is None:
            return fn()
        done: Future[Any] = Future()

        def call() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(call)
        return done.result(timeout=self.settings.shutdown_timeout + 5)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        def assign() -> None:
            self.assignment.update((tp.topic, tp.partition) for tp in partitions)
            log.info("%s assigned %s", self.instance_id, _fmt(partitions))
            self.ready.set()
            for callback in self.on_assigned:
                callback(self)

        self._in_loop(assign)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Finish in-flight deliveries and store offsets on the loop, then commit here: a
        # synchronous commit from another thread would wait for this callback to return.
        self._in_loop(lambda: self._finish_pending(self.settings.shutdown_timeout))
        self._commit(consumer)

        def revoked() -> None:
            self.assignment.difference_update((tp.topic, tp.partition) for tp in partitions)
            log.info("%s revoked %s", self.instance_id, _fmt(partitions))

        self._in_loop(revoked)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        def lost() -> None:
            self.assignment.difference_update((tp.topic, tp.partition) for tp in partitions)
            log.warning(
                "%s lost %s (their uncommitted work will be redone)",
                self.instance_id,
                _fmt(partitions),
            )

        self._in_loop(lost)


def _fmt(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"


def _repository_of(service: Service, settings: Settings) -> SchemaRepository:
    if settings.schemas_dir:
        return SchemaRepository(settings.schemas_dir)
    for handler in service.handlers:
        repo = getattr(handler.event_type, "__kit_repository__", None)
        if isinstance(repo, SchemaRepository):
            return repo
    return default_repository()


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
