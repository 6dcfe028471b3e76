"""`Client`: publish typed events (and, later, make requests) from any asyncio program."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

from confluent_kafka import KafkaError, Message, TopicPartition
from confluent_kafka.admin import PartitionMetadata

from kit.app import open_registry
from kit.codec import Codec, UnknownWriterSchema
from kit.config import Settings, load_settings, warn_unknown_variables
from kit.errors import DecodeError, DeliveryError
from kit.event import Event
from kit.otel import install as install_tracing
from kit.registry import load_registry_config
from kit.requests import LiveCheck
from kit.schema import Schema, SchemaRepository, repository_for
from kit.service import Caller, Endpoint
from kit.telemetry import tracer
from kit.transport.kafka import admin_client, check_reachable, make_consumer, make_producer
from kit.transport.registry_format import RegistryFormat
from kit.transport.requester import Requester
from kit.transport.schema_topic import SchemaTopic
from kit.transport.sink import KafkaSink

__all__ = ["Client"]

E = TypeVar("E", bound=Event)


class Client(Caller):
    """A standalone producer of typed events, usable in scripts and tests::

        async with Client() as client:
            await client.publish(OrderPlaced(...), key="order-1")

    `publish` returns once the broker confirmed the record. The client owns one
    background thread ("kit-client-poll") that serves delivery reports, and a SchemaTopic
    (with its own producer, consumer and lookup thread); `close()` stops them.

    With KIT_SCHEMA_REGISTRY_URL set, events are written in the schema registry format
    (each schema registered once per subject, before its first record) unless
    KIT_SCHEMA_REGISTRY_WRITE is false, and both formats are read.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        repository: SchemaRepository | None = None,
        fail_fast: bool | None = None,
        registry: LiveCheck | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        warn_unknown_variables()
        install_tracing(self.settings)  # OpenTelemetry spans, unless KIT_TRACING is off
        self._reached = False
        self.repository = repository
        self.fail_fast = load_registry_config().fail_fast if fail_fast is None else fail_fast
        """Requests to a service with no live instance raise ServiceUnavailable at once."""
        self._producer = make_producer(self.settings, low_latency=True)
        self._admin = admin_client(self.settings)
        self._sink = KafkaSink(self._producer, self._admin, self.settings)
        self._schemas = SchemaTopic(self.settings, self._admin)
        url = self.settings.schema_registry_url
        self._format = RegistryFormat(self.settings) if url else None
        """The schema registry, when KIT_SCHEMA_REGISTRY_URL is set."""
        writes = self._format is not None and self.settings.schema_registry_write
        self._headers: dict[bytes, bytes] | None = {} if writes else None
        if not writes:  # schemas go to the schema topic: its producer is made ahead
            self._schemas.open_writer()
        self._subjects: set[tuple[str, bytes]] = set()
        """(topic, fingerprint) registered under the topic's subject (registry format)."""
        self._codec = Codec(  # on the loop: never blocks (UnknownWriterSchema, then resolve)
            repository or SchemaRepository(),
            async_resolver=self._lookup_async,
            headers=self._headers,
            registry=self._format is not None,
        )
        self._blocking_codec = self._codec.with_resolver(self._lookup)
        """`codec`: the same, resolving writer schemas as it decodes (off the loop)."""
        self._topic_lock = asyncio.Lock()
        self._requester: Requester | None = None
        self._registry = registry
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kit-client-poll", daemon=True)
        self._poller.start()

    def _lookup(self, key: bytes) -> Schema | None:
        """A writer schema by fingerprint (schema topic) or registry header (blocking)."""
        if len(key) == 8 or self._format is None:
            return self._schemas.lookup(key)
        return self._format.lookup(key)

    async def _lookup_async(self, key: bytes) -> Schema | None:
        """`_lookup` without blocking the event loop."""
        if len(key) == 8 or self._format is None:
            return await self._schemas.lookup_async(key)
        return await asyncio.to_thread(self._format.lookup, key)

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    async def __aenter__(self) -> Client:
        try:
            await self.connect()
        except BaseException:
            await self.close()  # __aexit__ does not run
            raise
        return self

    async def connect(self) -> None:
        """Return once a broker answers; else raise, after KIT_CONNECT_TIMEOUT at most, the
        ConfigError `kit run` gives (naming KIT_BOOTSTRAP_SERVERS, or the KIT_KAFKA_* setting
        a failed authentication points at). `async with`, the first publish and the first
        request call it; once it succeeded it returns at once."""
        if not self._reached:
            timeout = self.settings.connect_timeout
            await asyncio.to_thread(check_reachable, self._admin, self.settings, timeout)
            self._reached = True

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Deliver what is queued (bounded by KIT_DELIVERY_TIMEOUT), stop the poll thread and
        close the schema topic reader."""
        if self._closed.is_set():
            return
        if self._requester is not None:
            await self._requester.close()
        await asyncio.to_thread(self._producer.flush, self.settings.delivery_timeout)
        self._closed.set()
        await asyncio.to_thread(self._poller.join, 5)
        await asyncio.to_thread(self._schemas.close)
        if self._format is not None:
            self._format.close()

    async def _request(
        self,
        target: str | Endpoint[Any, Any],  # Any: either form of request()
        event: Event,
        reply: type[Event] | None,
        timeout: float | None,
        key: str | bytes | None,
    ) -> Event:
        """See `request()` (kit.service.Caller): the schema check counts in the deadline."""
        started = time.monotonic()
        schema = event.kit_schema()
        if not self._reached or not self._schema_ready(schema, schema.full_name):
            await self.ensure_schema(schema)  # once per schema
        return await self.requester.call(target, event, reply, timeout, key, started)

    async def request_raw(
        self,
        service: str,
        method: str,
        value: bytes,
        *,
        topic: str | None = None,
        timeout: float | None = None,
        create_topic: bool = True,
    ) -> Message:
        """Send encoded request bytes to service.method; return the reply record (see
        `Requester.request_raw`; `create_topic=False` never creates the request topic)."""
        return await self.requester.request_raw(
            service, method, value, topic=topic, timeout=timeout, create_topic=create_topic
        )

    async def ensure_schema(self, schema: Schema, topic: str | None = None) -> None:
        """Make sure readers can find a writer schema (call it before encoding, e.g. for
        raw publishing): on the schema topic, or registered with the schema registry under
        the subject of `topic` (default: the schema's full name), whose header the codec
        then writes. SchemaRefused if the registry refuses it."""
        await self.connect()
        if self._headers is None:
            if not self._schemas.is_published(schema):
                await asyncio.to_thread(self._schemas.publish, [schema])
            return
        where = (topic or schema.full_name, schema.fingerprint)
        if where not in self._subjects:
            assert self._format is not None
            header = await asyncio.to_thread(self._format.register, schema, where[0])
            header = self._headers.setdefault(schema.fingerprint, header)
            self._codec.add_writer(header, schema)  # replies in it decode with no lookup
            self._subjects.add(where)

    def _schema_ready(self, schema: Schema, topic: str) -> bool:
        if self._headers is None:
            return self._schemas.is_published(schema)
        return (topic, schema.fingerprint) in self._subjects

    def writer_schema(self, fingerprint: bytes) -> Schema | None:
        """A writer schema by fingerprint, from the schema topic (or by registry header,
        from the schema registry). Blocking."""
        return self._blocking_codec.writer_schema(fingerprint)

    def schema_named(self, full_name: str) -> Schema | None:
        """The schema with this full name: the local repository's, else the schema topic's
        (or the registry's latest under its default topic's subject). Blocking."""
        repo = self._local_repository()
        if full_name in repo:
            return repo.get(full_name)
        found = self._schemas.by_name(full_name)
        if found is None and self._format is not None:
            found = self._format.latest(full_name)
        return found

    def _local_repository(self, model: type[Event] | None = None) -> SchemaRepository:
        """The client's repository, else the one `model` is bound to, else `repository_for`."""
        if self.repository is not None:
            return self.repository
        bound = getattr(model, "__kit_repository__", None)
        if isinstance(bound, SchemaRepository):
            return bound
        return repository_for(settings=self.settings)

    @property
    def codec(self) -> Codec:
        """The client's codec (writer schemas resolved through the schema topic, or the
        schema registry). Its decode may block on that lookup: decode off the event loop
        (asyncio.to_thread), or on UnknownWriterSchema await `codec.resolve(exc.fingerprint)`
        and decode again, as the client's own requests do."""
        return self._blocking_codec

    @property
    def requester(self) -> Requester:
        """The underlying Requester (created on first request)."""
        if self._requester is None:
            self._requester = Requester(
                self.settings,
                self._codec,
                self._producer,
                registry=self._registry,
                fail_fast=self.fail_fast,
                registry_factory=open_registry,
            )
        return self._requester

    async def publish(
        self,
        event: Event,
        *,
        key: str | bytes | None = None,
        topic: str | None = None,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> None:
        """Publish one typed event and wait until the broker confirms it.

        Calls made in program order are produced in that order (per partition, per key).
        """
        schema = event.kit_schema()
        target = topic or schema.full_name
        if self._headers is not None and schema.fingerprint not in self._headers:
            async with self._topic_lock:  # registered before encoding: its id is in the value
                await self.ensure_schema(schema, target)
        value = self._codec.encode(event)
        await self._send(target, value, key, headers, schema)

    async def publish_raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: str | bytes | None = None,
        headers: Mapping[str, str | bytes] | list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Publish already-encoded bytes (for tests of bad input, replay, bridges)."""
        await self._send(topic, value, key, headers, None)

    async def _send(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None,
        headers: Mapping[str, str | bytes] | list[tuple[str, bytes]] | None,
        schema: Schema | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            error = None if err is None else DeliveryError(f"{topic}: {err}")
            loop.call_soon_threadsafe(_resolve, future, error)

        hdrs = list(headers.items()) if isinstance(headers, Mapping) else headers
        hdr_bytes = [(k, v.encode() if isinstance(v, str) else v) for k, v in hdrs or []] or None
        raw_key = key.encode() if isinstance(key, str) else key
        hdr_bytes = tracer().outgoing(topic, raw_key, hdr_bytes, None)  # the caller's trace
        sink = self._sink
        slow = (
            topic not in sink.known_topics
            or (schema is not None and not self._schema_ready(schema, topic))
            or self._topic_lock.locked()
        )
        if slow:
            # A FIFO lock: set-up runs in a thread, yet calls are produced in program order.
            async with self._topic_lock:
                await self.connect()
                if schema is not None:
                    await self.ensure_schema(schema, topic)
                if topic not in sink.known_topics:
                    await asyncio.to_thread(sink.ensure_topic, topic)
                sink.produce(topic, value, raw_key, hdr_bytes, delivered)
        else:
            sink.produce(topic, value, raw_key, hdr_bytes, delivered)
        await asyncio.wait_for(future, self.settings.delivery_timeout + 1)

    async def consume(
        self,
        topic: str,
        model: type[E],
        *,
        timeout: float = 10.0,
        limit: int | None = None,
    ) -> AsyncIterator[tuple[Message, E]]:
        """Read `topic` from the start; yield (message, event) until `limit` or `timeout` idle."""
        consumer = make_consumer(
            self.settings, f"kit-client-{id(self)}", **{"enable.auto.commit": False}
        )
        repo = self._local_repository(model)
        codec = Codec(  # never blocks the loop
            repo, async_resolver=self._lookup_async, registry=self._format is not None
        )
        try:
            idle_deadline = asyncio.get_running_loop().time() + timeout
            parts: dict[int, PartitionMetadata] = {}
            while not parts:  # the topic may not exist yet: wait for it, within the deadline
                meta = (await asyncio.to_thread(consumer.list_topics, topic, 10)).topics.get(topic)
                parts = meta.partitions if meta is not None and meta.error is None else {}
                if not parts:
                    if asyncio.get_running_loop().time() > idle_deadline:
                        return
                    await asyncio.sleep(0.1)
            consumer.assign([TopicPartition(topic, p, -2) for p in parts])
            seen = 0
            while limit is None or seen < limit:
                batch = await asyncio.to_thread(consumer.consume, 100, 0.1)
                if not batch:
                    if asyncio.get_running_loop().time() > idle_deadline:
                        return
                    continue
                idle_deadline = asyncio.get_running_loop().time() + timeout
                for msg in batch:
                    if msg.error():
                        continue
                    try:
                        event = codec.decode(msg.value(), model)
                    except UnknownWriterSchema as exc:
                        if not await codec.resolve(exc.fingerprint):
                            continue
                        try:
                            event = codec.decode(msg.value(), model)
                        except DecodeError:
                            continue
                    except DecodeError:
                        continue
                    seen += 1
                    yield msg, event
                    if limit is not None and seen >= limit:
                        return
        finally:
            await asyncio.to_thread(consumer.close)


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
