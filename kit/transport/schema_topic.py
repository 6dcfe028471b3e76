"""`SchemaTopic`: writer schemas on a compacted topic keyed by fingerprint, read to its end.

Threads. One long-lived consumer (partition 0 assigned while it reads, no group membership,
no commits) reads the topic; a `threading.Lock` guards it, so sync `lookup` is safe from
any thread. The event loop uses `lookup_async`, which runs the read in the SchemaTopic's
own single thread ("kit-schema-topic") and never blocks the loop. `publish` uses a producer
of its own, so flushing it runs no delivery callback of anyone else's producer. `close()`
stops all three.

Why a read to the end and no cache of misses: a producer's schema write is confirmed
before its records are sent, so the end offsets queried after a record arrived include
its writer schema. A fingerprint still missing after that read is not on the topic.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from kit.config import Settings
from kit.errors import BrokerError, DeliveryError, KitError
from kit.schema import Schema
from kit.transport.admin import TopicSpec, ensure_topics
from kit.transport.kafka import make_consumer, make_producer, watermarks

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, TopicMetadata

__all__ = ["SchemaTopic"]

log = logging.getLogger("kit.kafka")

LISTING_KEPT = 30.0
"""Seconds a start-up topic listing given to a SchemaTopic stands for a fresh answer."""


class SchemaTopic:
    """Writer schemas on a compacted topic keyed by fingerprint: a registry with no server.

    Producers publish each schema they write with; readers look unknown fingerprints up
    here, so a consumer built against another version of a schema can still resolve it.

    - `lookup(fp)` (blocking, any thread) and `await lookup_async(fp)` (event loop) answer
      from memory when they can, else read the topic from where they left off to its
      current end offset. A lookup that finds nothing new costs one end-offset query.
    - Concurrent `lookup_async` calls share reads: each waits for the next read to start
      after it arrived, and every call that arrives before that read starts shares it (one
      read in flight and one queued at most, never one read per caller).
    - Reading raises BrokerError if the topic cannot be read to its end within `timeout`:
      a record is never judged "unknown writer schema" on a partial read. After `close()`,
      lookups that need a read raise KitError.
    """

    def __init__(
        self,
        settings: Settings,
        admin: AdminClient,
        producer: object = None,
        *,
        timeout: float = 10.0,
        create: bool | None = None,
        listed: dict[str, TopicMetadata] | None = None,
    ) -> None:
        # `producer` is accepted and ignored, for callers that still pass theirs (the runtime
        # does, until it drops the argument): publish() used to flush that shared producer
        # from a worker thread, which ran the owner's delivery callbacks on that thread
        # (issue 8, defect 5). A SchemaTopic now makes and owns its own producer.
        del producer
        self.settings = settings
        self.admin = admin
        self.topic = settings.schema_topic
        self.timeout = timeout
        """Deadline in seconds of one read to the end (and of the end-offset query)."""
        writes_registry = bool(settings.schema_registry_url and settings.schema_registry_write)
        self.create = not writes_registry if create is None else create
        """Create the topic when it is missing. Not by default when values are written in the
        schema registry format: the topic is then only read, for older single-object records,
        and a missing topic holds no schema."""
        self.end_offset_queries = 0
        """End-offset queries made so far (one per read to the end)."""
        self.records_read = 0
        """Records read from the topic so far (each is read once)."""
        self._known: dict[bytes, Schema] = {}
        self._parsed: set[bytes] = set()
        """Values read and parsed once: their copies further on are not parsed again."""
        self._published: set[bytes] = set()
        self._ensured = False
        self._listed = listed if self.create else None
        """A topic listing from start-up, which the first `publish` (at start) checks the
        topic against instead of asking again. Not kept for a reader that does not create
        the topic: its first check may come much later; nor past LISTING_KEPT seconds."""
        self._listed_until = time.monotonic() + LISTING_KEPT
        self._closed = False
        self._lock = threading.Lock()
        """Guards the consumer and `_position`: one read at a time, from any thread."""
        self._consumer: Consumer | None = None
        self._position = 0
        """Every record before this offset has been read into `_known`."""
        self._publish_lock = threading.Lock()
        self._producer: Producer | None = None
        self._state = threading.Lock()
        """Guards `_executor` and `_queued` (the async side's coalescing)."""
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._queued: concurrent.futures.Future[None] | None = None
        """The read that async callers wait for and that has not started yet."""

    # --- writing -----------------------------------------------------------------------

    def is_published(self, schema: Schema) -> bool:
        """True once this process made sure the schema is on the topic."""
        return schema.fingerprint in self._published

    def use_listing(self, listed: dict[str, TopicMetadata]) -> None:
        """A topic listing from start-up that the first `publish` may use instead of
        asking again (as `listed` given to the constructor)."""
        self._listed = listed if self.create else None
        self._listed_until = time.monotonic() + LISTING_KEPT

    def open_writer(self) -> None:
        """Make the producer `publish` uses now, if it has none: call it as soon as this
        process will publish. A new idempotent producer that sends at once waits about
        500 ms for its producer id (librdkafka retries the id request it made before its
        broker connection was up only after that); made some 20 ms ahead, it does not."""
        with self._publish_lock:
            if not self._closed:
                self._writer()

    def _writer(self) -> Producer:
        """The producer (made if need be); call it holding `_publish_lock`."""
        if self._producer is None:
            self._producer = make_producer(self.settings, low_latency=True)
        return self._producer

    def publish(self, schemas: Iterable[Schema], timeout: float = 15.0) -> None:
        """Make sure every schema is on the topic (idempotent: same key, same value).

        Blocking: returns once the broker confirmed every write. Call it off the loop.
        """
        todo = [s for s in schemas if s.fingerprint not in self._published]
        if not todo:
            return
        with self._publish_lock:
            self._check_open()
            if self._missing():
                raise KitError(f"schema topic {self.topic} does not exist (and create is off)")
            self._ensure()
            producer = self._writer()
            errors: list[KafkaError] = []
            for schema in todo:
                producer.produce(
                    self.topic,
                    schema.text.encode(),
                    schema.fingerprint.hex().encode(),
                    on_delivery=lambda err, _m: errors.append(err) if err else None,
                )
            remaining = producer.flush(timeout)
            if remaining or errors:
                raise DeliveryError(
                    f"could not publish writer schemas to {self.topic}: {errors or remaining}"
                )
        for s in todo:
            self._known.setdefault(s.fingerprint, s)
        self._published.update(s.fingerprint for s in todo)

    # --- reading -----------------------------------------------------------------------

    def lookup(self, fp: bytes) -> Schema | None:
        """The schema with this fingerprint, reading the topic to its end on a miss.

        Blocking (one end-offset query, plus reading what is new); safe from any thread.
        """
        found = self._known.get(fp)
        if found is not None:
            return found
        self.refresh()
        return self._known.get(fp)

    async def lookup_async(self, fp: bytes) -> Schema | None:
        """`lookup` for the event loop: the read runs in this SchemaTopic's own thread.

        Concurrent calls are coalesced: each waits for one read that starts after it was
        called (the queued one, shared by every call that arrives before it starts).
        Cancelling one caller does not cancel the read the others wait for.
        """
        found = self._known.get(fp)
        if found is not None:
            return found
        done = self._queue_read()
        # shield: a cancelled caller must not cancel a read other callers wait for
        await asyncio.shield(asyncio.wrap_future(done))
        return self._known.get(fp)

    def by_name(self, full_name: str) -> Schema | None:
        """The newest schema on the topic with this full name, if any (blocking)."""
        self.refresh()
        found = [s for s in self._known.values() if s.full_name == full_name]
        return found[-1] if found else None

    def refresh(self, timeout: float | None = None) -> None:
        """Read the topic from where the last read stopped to its current end offset.

        Blocking; safe from any thread. BrokerError if the end is not reached in time.
        """
        with self._lock:
            self._check_open()
            self._read_to_end(self.timeout if timeout is None else timeout)

    def close(self) -> None:
        """Stop the reader thread, close the consumer and drop the producer (blocking).

        A read in progress finishes first (bounded by `timeout`); lookups queued behind it
        and any later call raise KitError.
        """
        with self._state:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        with self._lock:
            consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()
        with self._publish_lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(0)

    # --- internals ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise KitError(f"schema topic {self.topic} reader is closed")

    def _queue_read(self) -> concurrent.futures.Future[None]:
        """The queued read (one that has not started), making one if there is none."""
        with self._state:
            self._check_open()
            if self._queued is None:
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        1, thread_name_prefix="kit-schema-topic"
                    )
                done: concurrent.futures.Future[None] = concurrent.futures.Future()
                self._executor.submit(self._run_read, done)
                self._queued = done
            return self._queued

    def _run_read(self, done: concurrent.futures.Future[None]) -> None:
        """In the reader thread: from now on, new callers queue the next read."""
        with self._state:
            if self._queued is done:
                self._queued = None
        if not done.set_running_or_notify_cancel():
            return
        try:
            self.refresh()
        except BaseException as exc:
            done.set_exception(exc)
        else:
            done.set_result(None)

    def _missing(self) -> bool:
        """With `create` off: whether the topic does not exist (yet). Lists every topic,
        so that no broker auto-creates it; once found, it is not asked again."""
        if self.create or self._ensured:
            return False
        meta = self.admin.list_topics(timeout=self.timeout).topics.get(self.topic)
        self._ensured = meta is not None and meta.error is None
        return not self._ensured

    def _ensure(self) -> None:
        if not self._ensured:
            spec = TopicSpec(
                self.topic, 1, self.settings.topic_replication, (("cleanup.policy", "compact"),)
            )
            listed, self._listed = self._listed, None
            fresh = listed is not None and time.monotonic() < self._listed_until
            ensure_topics(self.admin, [spec], listed=listed if fresh else None)
            self._ensured = True

    def _make_consumer(self) -> Consumer:
        """The one consumer: no group membership, no commits, assigned only while it reads."""
        consumer: Consumer = make_consumer(
            self.settings,
            "kit-schema-reader",
            **{"enable.auto.commit": False, "enable.auto.offset.store": False},
        )
        return consumer

    def _read_to_end(self, timeout: float) -> None:
        """Under `_lock`: query the end offset; read from `_position` up to it.

        The partition is assigned (at `_position`) only for the read: an idle reader sends
        no fetches, and the end-offset query is not queued behind a fetch in flight on the
        same connection. (pause/resume instead adds about 1 s per read in librdkafka.)
        """
        deadline = time.monotonic() + timeout
        if self._consumer is None:
            if self._missing():
                return
            self._ensure()
            self._consumer = self._make_consumer()
        consumer = self._consumer
        tp = TopicPartition(self.topic, 0)
        self.end_offset_queries += 1
        try:
            low, high = watermarks(consumer, tp, timeout)
        except KafkaException as exc:
            raise BrokerError(f"cannot read the end offset of {self.topic}: {exc}") from None
        if high < self._position:  # the topic was deleted and made again: start over
            log.warning(
                "%s ends at %d, before %d: reading it again", self.topic, high, self._position
            )
            self._position = 0
        self._position = max(self._position, low)
        if self._position >= high:
            return
        consumer.assign([TopicPartition(self.topic, 0, self._position)])
        try:
            while self._position < high:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BrokerError(
                        f"schema topic {self.topic} not read to its end offset {high} within "
                        f"{timeout}s (at {self._position})"
                    )
                first = consumer.poll(min(remaining, 0.2))
                if first is None:  # offsets compacted away at the end: where is the consumer?
                    (where,) = consumer.position([tp])
                    self._position = max(self._position, where.offset)
                    continue
                for msg in (first, *consumer.consume(500, 0)):
                    self._take(msg)
        finally:
            consumer.unassign()

    def _take(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("reading %s: %s", self.topic, err)
            return
        offset = msg.offset() or 0
        if offset < self._position:
            return
        self._position = offset + 1
        self.records_read += 1
        value = msg.value()
        if value is None or value in self._parsed:
            return  # a tombstone, or a copy of a schema read before (every start writes them)
        self._parsed.add(value)
        try:
            schema = Schema.from_json(value.decode(), source=self.topic)
        except Exception as exc:
            log.warning("skipping bad schema at %s@%s: %s", self.topic, offset, exc)
            return
        self._known.setdefault(schema.fingerprint, schema)
