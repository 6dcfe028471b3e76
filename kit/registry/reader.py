"""`Registry`: reads the registry topic into memory; lookups, watch, TTL sweep and cleaning."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import threading
import time
import uuid
import weakref
from types import TracebackType

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from kit.codec import Codec
from kit.config import Settings, load_settings
from kit.errors import BrokerError, KitError, ServiceUnavailable
from kit.registry.cleaner import Cleaner
from kit.registry.model import (
    REPOSITORY,
    Registration,
    load_registry_config,
    registry_topic_spec,
)
from kit.registry.records import Removal, UnreadableRecord, read_record
from kit.registry.view import RegistryEvent, RegistryView
from kit.registry.watch import Watch
from kit.transport.admin import ensure_topics
from kit.transport.kafka import (
    admin_client,
    check_reachable,
    make_consumer,
    poll_batch,
    watermarks,
)
from kit.transport.schema_topic import SchemaTopic

__all__ = ["Registry"]

log = logging.getLogger("kit.registry")


class Registry:
    """A live, in-memory view of the registry topic.

    `await start()` reads the topic up to the high watermark it finds at start before it
    returns, so the view holds every registration written before then. One owned thread
    ("kit-registry-<topic>") then keeps consuming, sweeps out instances whose heartbeat
    got older than `ttl`, and, if `clean` is on, tombstones entries whose heartbeat is
    older than `clean_after`. Lookups only read memory. `await close()` stops the thread.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        ttl: float | None = None,
        topic: str | None = None,
        clean: bool | None = None,
        clean_after: float | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        config = load_registry_config(ttl=ttl, topic=topic, clean=clean, clean_after=clean_after)
        self.settings = settings or load_settings()
        self.topic = config.topic
        self.ttl = config.ttl
        self.clean = config.clean
        self.clean_after = config.clean_limit
        self.start_timeout = start_timeout
        self.reader_id = f"kit-registry-{uuid.uuid4().hex[:12]}"
        self.ready = asyncio.Event()
        """Set once the view holds everything written before start()."""
        self.records = 0
        """Records read so far (registrations, tombstones and skipped values)."""
        self.skipped = 0
        """Values that did not decode and were skipped."""
        self.error: BaseException | None = None
        """Why the reader thread stopped, if it failed."""
        self._view = RegistryView(self.ttl)
        self._lock = threading.Lock()
        self._watchers: weakref.WeakSet[Watch] = weakref.WeakSet()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._cleaner = Cleaner(self.settings, self.topic, self.clean_after, self.reader_id)
        self._codec: Codec | None = None
        self._schema_topic: SchemaTopic | None = None
        self._position = 0
        self._sync_requests: list[concurrent.futures.Future[None]] = []
        self._sweep_interval = max(0.05, min(0.25, self.ttl / 20))
        self._clean_interval = max(0.5, min(self.ttl, self.clean_after / 3))

    # --- reading -----------------------------------------------------------------------

    def lookup(self, service: str) -> list[Registration]:
        """Live instances of `service`, from memory."""
        now = time.time()
        with self._lock:
            return self._view.live(now, service)

    def instances(self) -> list[Registration]:
        """Every live instance, from memory."""
        now = time.time()
        with self._lock:
            return self._view.live(now)

    def has_live(self, service: str) -> bool:
        """Whether `service` has at least one live instance (for fail-fast requests)."""
        now = time.time()
        with self._lock:
            return self._view.has_live(service, now)

    def require(self, service: str) -> None:
        """Raise ServiceUnavailable if `service` has no live instance (once the view is ready).

        Before `start()` finished nothing is known, so nothing is refused.
        """
        if self.ready.is_set() and not self.has_live(service):
            raise ServiceUnavailable(service)

    def get(self, instance_id: str) -> Registration | None:
        """The registration of a live instance by id, or None."""
        with self._lock:
            return self._view.get_live(instance_id, time.time())

    @property
    def clean_rounds(self) -> int:
        """Cleaning rounds this reader has run (0 when it does not clean)."""
        return self._cleaner.rounds

    @property
    def tombstones_written(self) -> int:
        """Tombstones this reader wrote as a cleaner."""
        return self._cleaner.tombstones_written

    def watch(self, *, initial: bool = True) -> Watch:
        """Events from now until close(): `async for event in registry.watch(): ...`.

        With `initial`, it first yields an "up" event for every instance live right now.
        Call it from a coroutine; events are delivered to that coroutine's loop.
        """
        if self._thread is None:
            raise KitError("Registry.watch() needs start() first")
        watch = Watch(self._unsubscribe)
        with self._lock:
            if initial:
                for reg in self._view.live(time.time()):
                    watch.push(RegistryEvent("up", reg, "announced"))
            if self._closing.is_set() or not self._thread.is_alive():
                watch.push(self.error)
            self._watchers.add(watch)
        return watch

    def _unsubscribe(self, watch: Watch) -> None:
        with self._lock:
            self._watchers.discard(watch)

    async def sync(self, timeout: float = 10.0) -> None:
        """Read up to the current end of the topic (read-your-writes after start)."""
        if self._thread is None or not self._thread.is_alive():
            raise KitError("Registry.sync() needs a running registry")
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            self._sync_requests.append(done)
        await asyncio.wait_for(asyncio.wrap_future(done), timeout)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Create the topic if missing, read it to its end, then keep following it."""
        if self._thread is not None:
            return
        await asyncio.to_thread(self._prepare)
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name=f"kit-registry-{self.topic}", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wait_for(asyncio.wrap_future(started), self.start_timeout + 5)
        except BaseException:
            await self.close()
            raise
        self.ready.set()

    def _prepare(self) -> None:
        admin = admin_client(self.settings)
        check_reachable(admin, self.settings, self.settings.connect_timeout)
        ensure_topics(admin, [registry_topic_spec(self.settings, self.topic)])
        # Used from the reader thread only (blocking lookups there are fine); closed with it.
        self._schema_topic = SchemaTopic(self.settings, admin)
        self._codec = Codec(REPOSITORY, resolver=self._schema_topic.lookup)
        self._consumer = make_consumer(
            self.settings,
            self.reader_id,
            **{
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "client.id": self.reader_id,
                "auto.offset.reset": "earliest",  # whatever KIT_KAFKA_* says: see _run
            },
        )

    async def close(self) -> None:
        """Stop the reader thread (bounded), flush cleaner tombstones, end every watch()."""
        self._closing.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, 10.0)
            if thread.is_alive():
                log.error("registry reader thread did not stop within 10s")
        elif thread is None and self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            consumer.close()
            self._close_schema_topic()
        self._end_watchers()

    def _close_schema_topic(self) -> None:
        schema_topic, self._schema_topic = self._schema_topic, None
        if schema_topic is not None:
            schema_topic.close()

    async def __aenter__(self) -> Registry:
        await self.start()
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- the reader thread -------------------------------------------------------------

    def _run(self, started: concurrent.futures.Future[None]) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            tp = TopicPartition(self.topic, 0)
            low, high = watermarks(consumer, tp, self.start_timeout)
            # from `low`, not OFFSET_BEGINNING: no offset query (librdkafka retries one
            # asked before the leader is known only 500 ms later); if retention moved
            # past `low` meanwhile, auto.offset.reset (earliest) applies
            consumer.assign([TopicPartition(self.topic, 0, low)])
            if not self._read_to(high, time.monotonic() + self.start_timeout):
                raise BrokerError(
                    f"registry topic {self.topic} not read to offset {high} within "
                    f"{self.start_timeout}s (at {self._position})"
                )
            log.info("registry view of %s ready: %d entries", self.topic, len(self._view))
            started.set_result(None)
            self._follow()
        except BaseException as exc:
            self.error = exc
            if not started.done():
                started.set_exception(exc)
            else:
                log.error("registry reader of %s failed: %s", self.topic, exc)
        finally:
            self._end_watchers()
            try:
                consumer.close()
            finally:
                self._close_schema_topic()
                self._cleaner.close(5.0)

    def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        next_sweep = 0.0
        next_clean = time.monotonic() + self._clean_interval * random.uniform(0.5, 1.0)
        while not self._closing.is_set():
            self._pump(poll_batch(consumer, 0.05))
            now = time.monotonic()
            if now >= next_sweep:
                with self._lock:
                    self._emit(self._view.sweep(time.time()))
                next_sweep = now + self._sweep_interval
            if self._sync_requests:
                self._serve_sync()
            if self.clean and now >= next_clean:
                self._cleaner.run_once(self._view, self._lock, self._catch_up)
                next_clean = now + self._clean_interval * random.uniform(0.8, 1.2)
            self._cleaner.poll()

    def _serve_sync(self) -> None:
        with self._lock:
            requests, self._sync_requests = self._sync_requests, []
        # A caller whose sync() timed out has cancelled its future: answering it would raise.
        requests = [r for r in requests if r.set_running_or_notify_cancel()]
        if not requests:
            return
        ok = self._catch_up(5.0)
        for request in requests:
            if ok:
                request.set_result(None)
            else:
                request.set_exception(BrokerError(f"could not read {self.topic} to its end"))

    def _catch_up(self, timeout: float) -> bool:
        """Read to the current high watermark; False if that did not happen in `timeout`."""
        consumer = self._consumer
        assert consumer is not None
        tp = TopicPartition(self.topic, 0)
        try:
            _low, high = watermarks(consumer, tp, timeout)
        except KafkaException as exc:
            log.warning("cannot read the end offset of %s: %s", self.topic, exc)
            return False
        return self._read_to(high, time.monotonic() + timeout)

    def _read_to(self, high: int, deadline: float) -> bool:
        consumer = self._consumer
        assert consumer is not None
        while self._position < high:
            if time.monotonic() > deadline or self._closing.is_set():
                return False
            self._pump(poll_batch(consumer, 0.05))
        return True

    def _pump(self, messages: list[Message]) -> None:
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self._position = max(self._position, msg.offset() or 0)
                    continue
                if err.fatal():
                    raise KafkaException(err)
                log.warning("registry consumer error on %s: %s", self.topic, err)
                continue
            self._position = (msg.offset() or 0) + 1
            self.records += 1
            self._apply(msg)

    def _apply(self, msg: Message) -> None:
        assert self._codec is not None
        try:
            entry = read_record(msg, self._codec)
        except UnreadableRecord as exc:
            self._skip(msg, str(exc))
            return
        with self._lock:
            if isinstance(entry, Removal):
                event = self._view.remove(entry.instance_id, entry.reason, entry.judged)
            else:
                event = self._view.put(entry, time.time())
            if event is not None:
                self._emit([event])

    def _skip(self, msg: Message, why: str) -> None:
        self.skipped += 1
        log.warning(
            "registry: skipping record at %s[%d]@%d (key %r): %s",
            msg.topic(),
            msg.partition(),
            msg.offset(),
            msg.key(),
            why,
        )

    # --- watchers ----------------------------------------------------------------------

    def _emit(self, events: list[RegistryEvent]) -> None:
        """Hand events to every watch (call with the lock held, so order is kept)."""
        for event in events:
            for watch in list(self._watchers):
                watch.push(event)

    def _end_watchers(self) -> None:
        with self._lock:
            watches = list(self._watchers)
        for watch in watches:
            watch.push(self.error)
