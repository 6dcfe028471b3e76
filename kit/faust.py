"""The Faust bridge: kit's wire format as a Faust codec, and a Faust app as a kit service.

`KitCodec` (a Faust codec of one kit Event type), `KitBridge.topic` (a Faust topic of kit
events: writer schemas resolved and published through `_kit_schemas`), and `KitBridge`
(the app in kit's registry, answering kit requests). Guide: docs/faust.md. No threads of
its own: blocking calls run in worker threads or before the worker's loop starts.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import faust
from faust.serializers import codecs
from faust.types import AppT, StreamT
from faust.types.tuples import Message as FaustMessage

from kit.codec import Codec, fingerprint_of
from kit.config import Settings, load_settings, resolve_bootstrap
from kit.dead_letters import dead_letter_headers, dead_letter_topic
from kit.errors import ConfigError, DecodeError, EncodeError
from kit.event import Event
from kit.protocol import CORRELATION_ID, DEADLINE, REPLY_TO, Headers, header
from kit.registry import Announcer
from kit.requests import reply_headers, request_expired
from kit.schema import Schema
from kit.service import Endpoint, Responder, Service
from kit.transport.admin import TopicSpec, ensure_topics
from kit.transport.kafka import admin_client
from kit.transport.schema_topic import SchemaTopic

__all__ = ["KitBridge", "KitCodec", "KitSchema", "KitTopic", "broker_url"]

log = logging.getLogger("kit.faust")

E = TypeVar("E", bound=Event)
Q = TypeVar("Q", bound=Event)
P = TypeVar("P", bound=Event)


def broker_url(settings: Settings | None = None, *, fallback: str | None = None) -> str:
    """Faust's `broker=` for kit's cluster (KIT_BOOTSTRAP_SERVERS, else the local broker).

    With neither, `fallback` if given (so a module defining an app imports anywhere; the
    bridge's worker start then stops with kit's ConfigError), else that ConfigError. Only
    the address: KIT_KAFKA_* settings are librdkafka's and do not reach Faust's clients.
    """
    try:
        bootstrap, _source = resolve_bootstrap(settings or load_settings())
    except ConfigError:
        if fallback is None:
            raise
        return fallback
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


class KitCodec(codecs.Codec):
    """A Faust codec of one kit Event type, in kit's wire format: `dumps` is `kit.Codec.encode`
    (of an `event_type` only), `loads` decodes into `event_type` through Avro schema
    resolution, with writer schemas `codec` knows (`KitBridge.topic` looks others up)."""

    def __init__(
        self,
        event_type: type[Event],
        codec: Codec | None = None,
        children: tuple[codecs.Codec, ...] | None = None,
    ) -> None:
        # Faust's clone() rebuilds a codec from its kwargs, so both go in there.
        super().__init__(children, event_type=event_type, codec=codec or Codec())
        self.event_type = event_type
        self.codec: Codec = self.kwargs["codec"]

    def _loads(self, s: bytes) -> Event:
        return self.codec.decode(s, self.event_type)

    def _dumps(self, s: object) -> bytes:
        if not isinstance(s, self.event_type):
            raise EncodeError(f"expected a {self.event_type.__qualname__}, got {type(s).__name__}")
        return self.codec.encode(s)


class KitSchema(faust.Schema[str, Event]):
    """Faust's schema of a topic of kit events: str keys, `KitCodec` values; its decode
    looks an unknown writer schema up (schema topic, worker thread) before Faust decodes."""

    def __init__(self, event_type: type[Event], bridge: KitBridge) -> None:
        super().__init__(key_type=str, value_serializer=KitCodec(event_type, bridge.codec))
        self.event_type = event_type
        self.bridge = bridge

    # Any: Faust's compile() keywords and decode function, passed through unchanged
    def compile(self, app: AppT, **options: Any) -> Callable[..., Awaitable[Any]]:
        """Faust's decode function, preceded by the writer schema's look-up."""
        decode, bridge, reader = super().compile(app, **options), self.bridge, self.event_type

        # Any: Faust's event (EventT) or None for a record it skips
        async def resolving(message: FaustMessage, **kwargs: Any) -> Any:
            await bridge.resolve(message.value, reader)
            return await decode(message, **kwargs)

        return resolving


class KitTopic(faust.Topic):
    """A Faust topic of kit events (`KitBridge.topic`). Before it sends a record it makes
    sure the record's writer schema is on the schema topic, as kit's producers do. A record
    that does not decode goes to `<topic>.dlt` with kit's headers, and the agent goes on
    (Faust's default crashes the agent, whose restart then receives nothing)."""

    async def on_value_decode_error(self, exc: Exception, message: FaustMessage) -> None:
        """Dead-letter the record (Faust has acked it already) instead of crashing."""
        schema = self.schema
        if not isinstance(schema, KitSchema):
            return await super().on_value_decode_error(exc, message)
        await schema.bridge.dead_letter(_Record(message), exc.__cause__ or exc, "faust-agent")

    # Any: Faust's FutureMessage in, its awaitable of RecordMetadata out
    async def publish_message(self, fut: Any, wait: bool = False) -> Any:
        """Publish the writer schema (once), then the record (Faust's `publish_message`)."""
        schema = self.schema
        if isinstance(schema, KitSchema):
            await schema.bridge.publish_schemas([schema.event_type.kit_schema()])
        return await super().publish_message(fut, wait=wait)


class _Record:
    """A Faust message seen as kit's `MessageLike`, for kit's header and dead-letter helpers."""

    __slots__ = ("_message", "key", "offset", "partition", "topic", "value")

    def __init__(self, message: FaustMessage) -> None:
        self._message = message
        self.topic: Callable[[], str | None] = lambda: message.topic
        self.partition: Callable[[], int | None] = lambda: message.partition
        self.offset: Callable[[], int | None] = lambda: message.offset
        self.key: Callable[[], bytes | None] = lambda: message.key
        self.value: Callable[[], bytes | None] = lambda: message.value

    def headers(self) -> Headers | None:
        raw = self._message.headers
        items = raw.items() if isinstance(raw, Mapping) else raw or ()
        return [(str(k), bytes(v or b"")) for k, v in items] or None

    def timestamp(self) -> tuple[int, int]:
        return self._message.timestamp_type, int(self._message.timestamp * 1000)


Answer = Callable[[Q], Awaitable[P]]


class KitBridge:
    """A Faust app as one kit service: kit topics, kit responders, a registry entry.

    `service` declares what kit callers see: its name, version and responders (bodies
    unused: the bridge serves them; callers import the typed `Endpoint`, not Faust).
    Creating the bridge does no I/O; it hooks into the app's life:

    `faust worker` start (before the loop runs): creates missing topics and dead-letter
    topics; once started (after table recovery): publishes writer schemas, announces the
    instance, heartbeats; at stop (after the consumer stopped): the tombstone.
    """

    def __init__(
        self,
        app: faust.App,
        service: Service,
        settings: Settings | None = None,
        *,
        instance_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.settings = settings or load_settings()
        self.instance_id = instance_id or f"{service.name}-{uuid.uuid4().hex[:12]}"
        self.codec = Codec(async_resolver=self._lookup)  # resolve(fp): the schema topic
        meta = {"runtime": "faust", "faust_app": str(app.conf.id), **(metadata or {})}
        self.announcer = Announcer(service, self.settings, self.instance_id, metadata=meta)
        self.answered = 0  # requests answered with a reply
        self.failed = 0  # requests answered with an error (the caller's RemoteError)
        self.expired = 0  # requests skipped: their caller's deadline had passed
        self.dead_lettered = 0  # records sent to their dead-letter topic
        self._topics: dict[str, TopicSpec] = {}
        self._schemas: dict[bytes, Schema] = {}
        self._published: set[bytes] = set()
        self._reply_topics: set[str] = set()  # reply topics that existed when last used
        self._dead: deque[str] = deque(maxlen=1024)  # records dead-lettered last
        self._schema_topic: SchemaTopic | None = None
        self._schema_topic_lock: asyncio.Lock | None = None
        # mode types receivers with mypy_extensions' NamedArg("BaseSignalT"), which no
        # written signature matches: the receivers below take (sender, *args, **kwargs).
        app.on_worker_init.connect(self._on_worker_init)  # type: ignore[arg-type]
        app.task(self._start)
        app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]

    def topic(
        self,
        event_type: type[E],
        name: str | None = None,
        *,
        partitions: int | None = None,
        **options: Any,  # Any: faust.Topic's own keywords (retention, config, acks, ...)
    ) -> KitTopic:
        """A Faust topic of `event_type` events; the name defaults to kit's, the schema's
        full name. Use it in `@app.agent(...)` and `await topic.send(key=..., value=...)`."""
        schema = event_type.kit_schema()
        name = name or schema.full_name
        self._schemas[schema.fingerprint] = schema
        self._want(name, partitions)
        self._want(f"{name}{self.settings.dead_letter_suffix}", partitions)
        schema_of_topic = KitSchema(event_type, self)
        return KitTopic(
            self.app, topics=[name], schema=schema_of_topic, partitions=partitions, **options
        )

    def responder(
        self, endpoint: Endpoint[Q, P], *, route: Callable[[Q], str] | None = None
    ) -> Callable[[Answer[Q, P]], Answer[Q, P]]:
        """Serve a responder declared in `service` with this function, in a Faust agent
        reading its request topic (`<service>.<name>`) in the app's consumer group::

            @bridge.responder(api.get, route=lambda request: request.customer)
            async def get(request: GetStats) -> CustomerStats: ...

        `route` re-keys each request (Faust's `group_by`, through the topic
        `<app id>-<service>.<name>-routed`, headers kept) so that it is answered by the
        worker that holds the table partition of that key, as a table's writer does.
        """
        service_name, declared = endpoint.__kit_responder__
        if service_name != self.service.name or declared not in self.service.handlers:
            raise ConfigError(
                f"{service_name}.{declared.name}",
                f"not a responder of the bridged service {self.service.name!r}",
            )

        def serve(func: Answer[Q, P]) -> Answer[Q, P]:
            self._serve(declared, func, route)
            return func

        return serve

    # Any: one bridge serves responders of any request and reply types
    def _serve(self, declared: Responder, func: Answer[Any, Any], route: Any) -> None:
        self._want(declared.topic, declared.partitions)
        self._want(dead_letter_topic(declared, self.settings.dead_letter_suffix), None)
        reply_type = declared.reply_type
        if reply_type is not None:
            self._schemas[reply_type.kit_schema().fingerprint] = reply_type.kit_schema()
        requests = self.app.topic(declared.topic, key_serializer="raw", value_serializer="raw")
        routed = requests.derive_topic(topics=[f"{self.app.conf.id}-{declared.topic}-routed"])
        self._want(routed.get_topic_name(), None)

        async def key_of(value: bytes) -> str:  # one that does not decode is answered anyway
            try:
                return str(route(await self.decode(value, declared.event_type)))
            except Exception:  # answered (with the error) wherever it lands
                return ""

        async def answer(stream: StreamT[bytes]) -> None:
            source = stream.group_by(key_of, name="routed", topic=routed) if route else stream
            async for event in source.events():
                await self._answer(declared, func, _Record(event.message))

        self.app.agent(requests, name=f"kit-responder-{declared.topic}")(answer)

    def _want(self, name: str, partitions: int | None) -> None:
        s = self.settings
        self._topics[name] = TopicSpec(name, partitions or s.topic_partitions, s.topic_replication)

    async def decode(self, data: bytes | None, event_type: type[E]) -> E:
        """Decode a kit-encoded value, looking an unknown writer schema up first."""
        await self.resolve(data, event_type)
        return self.codec.decode(data, event_type)

    async def resolve(self, data: bytes | None, event_type: type[Event]) -> None:
        """Learn the writer schema of `data`, if not the reader's, from the schema topic."""
        fp = fingerprint_of(data or b"")
        if fp is None or fp == event_type.kit_schema().fingerprint:
            return  # not single-object encoded (decode says so), or the reader's own
        if self.codec.writer_schema(fp) is None:
            await self.codec.resolve(fp)

    async def publish_schemas(self, schemas: Iterable[Schema]) -> None:
        """Put writer schemas on the schema topic (once each, in a worker thread)."""
        todo = [s for s in schemas if s.fingerprint not in self._published]
        if todo:
            topic = await self._schema_topic_ready()
            await asyncio.to_thread(topic.publish, todo)
            self._published.update(s.fingerprint for s in todo)

    async def _lookup(self, fp: bytes) -> Schema | None:
        return await (await self._schema_topic_ready()).lookup_async(fp)

    async def _schema_topic_ready(self) -> SchemaTopic:
        self._schema_topic_lock = self._schema_topic_lock or asyncio.Lock()
        async with self._schema_topic_lock:
            if self._schema_topic is None:
                admin = await asyncio.to_thread(admin_client, self.settings)
                self._schema_topic = SchemaTopic(self.settings, admin)
            return self._schema_topic

    # Any: one bridge serves responders of any request and reply types
    async def _answer(self, declared: Responder, func: Answer[Any, Any], msg: _Record) -> None:
        """One request: skip it if expired; decode, call, reply (or reply the error)."""
        if request_expired(msg):
            self.expired += 1
            log.info("skipped expired request %s@%s", msg.topic(), msg.offset())
            return
        try:
            request = await self.decode(msg.value(), declared.event_type)
        except DecodeError as exc:
            await self.dead_letter(msg, exc, declared.name, declared)
            await self._reply(msg, None, exc)
            return
        try:
            result = await func(request)
            reply_type = declared.reply_type or Event
            if not isinstance(result, reply_type):
                raise EncodeError(
                    f"{declared.name} returned {type(result).__name__}, not a {reply_type.__name__}"
                )
            value = self.codec.encode(result)
            await self.publish_schemas([type(result).kit_schema()])
        except Exception as exc:
            self.failed += 1
            log.warning(
                "%s.%s failed: %s: %s", self.service.name, declared.name, type(exc).__name__, exc
            )
            if header(msg, REPLY_TO):
                await self._reply(msg, None, exc)
            else:  # nobody waits for the error: keep the request, as kit does
                await self.dead_letter(msg, exc, declared.name, declared)
            return
        self.answered += 1
        await self._reply(msg, value, None)

    async def _reply(self, msg: _Record, value: bytes | None, error: BaseException | None) -> None:
        reply_to, correlation = header(msg, REPLY_TO), header(msg, CORRELATION_ID)
        if not reply_to or not correlation:
            return  # not sent by a kit requester: nobody to answer
        headers = reply_headers(correlation, error, with_trace=self.settings.remote_tracebacks)
        topic = reply_to.decode(errors="replace")
        deadline = header(msg, DEADLINE)  # a reply after it is useless: wait no longer
        left = int(deadline) / 1000 - time.time() if deadline and deadline.isdigit() else 10.0
        send = self.app.producer.send_and_wait(topic, None, value, None, None, headers)
        try:  # Faust's producer would wait minutes for a topic that does not exist
            if topic not in self._reply_topics and not await self._topic_exists(topic):
                raise LookupError("the topic does not exist (its requester stopped)")
            await asyncio.wait_for(send, max(left, 0.1))
            self._reply_topics.add(topic)
        except Exception as exc:
            send.close()
            log.warning("reply to %s dropped: %s: %s", topic, type(exc).__name__, exc)

    async def _topic_exists(self, topic: str) -> bool:
        """Whether the cluster has `topic` (listing all topics, in a worker thread)."""
        admin = (await self._schema_topic_ready()).admin
        listed = await asyncio.to_thread(admin.list_topics, timeout=10)
        meta = listed.topics.get(topic)
        return meta is not None and meta.error is None

    async def dead_letter(
        self, msg: _Record, exc: BaseException, handler: str, declared: Responder | None = None
    ) -> None:
        """Send a failed record to `<topic>.dlt` with kit's kit-dlt-* headers, once (Faust
        reports a record that does not decode once per channel); `handler`: who failed."""
        where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        if where in self._dead:
            return
        self._dead.append(where)
        self.dead_lettered += 1
        suffix = self.settings.dead_letter_suffix
        topic = dead_letter_topic(declared, suffix) if declared else f"{msg.topic()}{suffix}"
        headers = (msg.headers() or []) + dead_letter_headers(
            msg, exc, 0 if isinstance(exc, DecodeError) else 1, self.service.name,
            str(self.app.conf.id), handler,
        )  # fmt: skip
        log.warning("dead-lettering %s to %s: %s", where, topic, exc)
        await self.app.producer.send_and_wait(topic, msg.key(), msg.value(), None, None, headers)

    # Any: mode's signal-receiver signature (sender, *args, signal=..., **kwargs), all unused
    def _on_worker_init(self, _app: Any, *_args: Any, **_kwargs: Any) -> None:
        """Before the worker's loop runs (blocking is fine): create the missing topics, and
        the changelog topics of the app's plain tables, so the consumer finds them."""
        parts, replicas = self.app.conf.topic_partitions, self.app.conf.topic_replication_factor
        for t in self.app.tables.values():  # as Faust makes them: its partitions, replicas
            if getattr(t, "window", None) is None:  # windowed ones: Faust's own settings
                name, config = t.changelog_topic.get_topic_name(), (("cleanup.policy", "compact"),)
                self._topics.setdefault(
                    name, TopicSpec(name, t.partitions or parts, replicas, config)
                )
        ensure_topics(admin_client(self.settings), self._topics.values())

    async def _start(self) -> None:
        """Once the app has started: writer schemas, then the announcement and heartbeat."""
        await self.publish_schemas(self._schemas.values())
        await self.announcer.start()
        n, argv, app_id = len(self.service.responders()), " ".join(sys.argv), self.app.conf.id
        log.info(f"kit bridge: {self.service.name} ready: instance {self.instance_id} of Faust "
                 f"app {app_id}, {n} responder(s), announced on {self.announcer.topic} "
                 f"(started as: {argv})")  # fmt: skip

    # Any: mode's signal-receiver signature, as above
    async def _on_shutdown(self, _app: Any, *_args: Any, **_kwargs: Any) -> None:
        """After the consumer stopped: tombstone (bounded wait), close the schema reader."""
        await self.announcer.stop()
        if self._schema_topic is not None:
            await asyncio.to_thread(self._schema_topic.close)
        done = "tombstoned" if self.announcer.announced_at else "never announced"
        counts = f"{self.answered} answered, {self.failed} failed, {self.expired} expired"
        log.info(
            "kit bridge: %s stopped: %s %s (%s)", self.service.name, self.instance_id, done, counts
        )
