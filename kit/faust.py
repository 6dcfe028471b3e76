"""The Faust bridge: kit's wire format as a Faust codec, and a Faust app as a kit service.

`KitCodec` (a Faust codec of one kit Event type), `KitBridge.topic` (a Faust topic of kit
events: writer schemas resolved and published through `_kit_schemas`, or the schema
registry with KIT_SCHEMA_REGISTRY_URL; both in kit.faust_topics), and `KitBridge` (the app
in kit's registry, answering kit requests; no failure of a request stops its agent).
Guide: docs/faust.md. No threads of its own: blocking calls run in worker threads or
before the worker's loop starts.
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
from faust.types import StreamT

from kit.codec import Codec, describe_key, writer_key
from kit.config import Settings, load_settings, resolve_bootstrap
from kit.dead_letters import dead_letter_headers, dead_letter_topic
from kit.errors import ConfigError, DecodeError, EncodeError, SchemaRefused
from kit.event import Event
from kit.faust_topics import KitCodec, KitSchema, KitTopic, WriterSchemaLookupFailed, _Record
from kit.protocol import CORRELATION_ID, DEADLINE, REPLY_TO, header
from kit.registry import Announcer
from kit.requests import reply_headers, request_expired
from kit.schema import Schema
from kit.service import Endpoint, Responder, Service
from kit.transport.admin import TopicSpec, ensure_topics
from kit.transport.kafka import admin_client
from kit.transport.registry_format import RegistryFormat
from kit.transport.schema_topic import SchemaTopic

__all__ = [
    "KitBridge",
    "KitCodec",
    "KitSchema",
    "KitTopic",
    "WriterSchemaLookupFailed",
    "broker_url",
]

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


Answer = Callable[[Q], Awaitable[P]]


class KitBridge:
    """A Faust app as one kit service: kit topics, kit responders, a registry entry.

    `service` declares what kit callers see: its name, version and responders (bodies
    unused: the bridge serves them; callers import the typed `Endpoint`, not Faust).
    Creating the bridge does no I/O; it hooks into the app's life:

    `faust worker` start (before the loop runs): creates missing topics and dead-letter
    topics; once started (after table recovery): publishes writer schemas (with
    KIT_SCHEMA_REGISTRY_URL, as kit services: registers them), announces the instance,
    heartbeats; at stop (after the consumer stopped): the tombstone.
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
        registry = bool(self.settings.schema_registry_url)  # then registry ids are read too
        self.codec = Codec(async_resolver=self._lookup, registry=registry)
        meta = {"runtime": "faust", "faust_app": str(app.conf.id), **(metadata or {})}
        self.announcer = Announcer(service, self.settings, self.instance_id, metadata=meta)
        self.answered = 0  # requests answered with a reply
        self.failed = 0  # requests answered with an error (the caller's RemoteError)
        self.expired = 0  # requests skipped: their caller's deadline had passed
        self.dead_lettered = 0  # records sent to their dead-letter topic
        self.dead_letters_lost = 0  # records whose dead letter could not be written
        self._topics: dict[str, TopicSpec] = {}
        self._schemas: dict[bytes, Schema] = {}
        self._published: set[bytes] = set()
        self._reply_topics: set[str] = set()  # reply topics that existed when last used
        self._dead: deque[str] = deque(maxlen=1024)  # records dead-lettered last
        self._schema_topic: SchemaTopic | None = None
        self._schema_topic_lock: asyncio.Lock | None = None
        self._registry: RegistryFormat | None = None  # made at first use, on the loop
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
                msg = _Record(event.message)
                await _logged("answer", msg, self._answer(declared, func, msg))

        self.app.agent(requests, name=f"kit-responder-{declared.topic}")(answer)

    def _want(self, name: str, partitions: int | None) -> None:
        s = self.settings
        self._topics[name] = TopicSpec(name, partitions or s.topic_partitions, s.topic_replication)

    async def decode(self, data: bytes | None, event_type: type[E]) -> E:
        """Decode a kit-encoded value, looking an unknown writer schema up first."""
        await self.resolve(data, event_type)
        return self.codec.decode(data, event_type)

    async def resolve(self, data: bytes | None, event_type: type[Event]) -> None:
        """Learn the writer schema of `data`, if not the reader's: by fingerprint from the
        schema topic, by registry id from the schema registry (in a worker thread)."""
        try:
            key = writer_key(data)
        except DecodeError:
            return  # neither framing: decode says so
        if key == event_type.kit_schema().fingerprint or self.codec.writer_schema(key) is not None:
            return
        try:
            await self.codec.resolve(key)  # False: decode raises UnknownWriterSchema
        except Exception as exc:  # BrokerError: the schema topic could not be read; or
            where = "on the schema topic" if len(key) == 8 else "in the schema registry"
            raise WriterSchemaLookupFailed(  # ConfigError: the registry could not be asked
                f"writer schema ({describe_key(key)}) could not be looked up {where}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    async def publish_schemas(self, schemas: Iterable[Schema]) -> None:
        """Make writer schemas known to readers, once each (in a worker thread): register
        them with the schema registry and encode with their ids from then on (with
        KIT_SCHEMA_REGISTRY_URL, unless KIT_SCHEMA_REGISTRY_WRITE=false), else put them on
        the schema topic. SchemaRefused, ConfigError: the registry refused, is unreachable."""
        todo = [s for s in schemas if s.fingerprint not in self._published]
        if not todo:
            return
        if self.settings.schema_registry_url and self.settings.schema_registry_write:
            headers = await asyncio.to_thread(self._registry_ready().register_all, todo)
            self.codec.set_headers({**(self.codec.headers or {}), **headers})
        else:
            await asyncio.to_thread((await self._schema_topic_ready()).publish, todo)
        self._published.update(s.fingerprint for s in todo)

    async def _lookup(self, key: bytes) -> Schema | None:
        """A writer schema by fingerprint (schema topic) or registry header (registry)."""
        if len(key) == 8:
            return await (await self._schema_topic_ready()).lookup_async(key)
        return await asyncio.to_thread(self._registry_ready().lookup, key)

    def _registry_ready(self) -> RegistryFormat:
        self._registry = self._registry or RegistryFormat(self.settings)
        return self._registry

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
        except Exception as exc:  # DecodeError, or another: dead letter and error reply
            await self._settle(msg, declared, None, exc, dead=True)
            return
        try:
            result = await func(request)
            reply_type = declared.reply_type or Event
            if not isinstance(result, reply_type):
                raise EncodeError(
                    f"{declared.name} returned {type(result).__name__}, not a {reply_type.__name__}"
                )
            await self.publish_schemas([type(result).kit_schema()])  # then its id is known
            value = self.codec.encode(result)
        except Exception as exc:
            self.failed += 1
            log.warning(
                "%s.%s failed: %s: %s", self.service.name, declared.name, type(exc).__name__, exc
            )  # nobody waits for the error: keep the request (dead letter), as kit does
            await self._settle(msg, declared, None, exc, dead=not header(msg, REPLY_TO))
            return
        self.answered += 1
        await self._settle(msg, declared, value, None, dead=False)

    async def _settle(
        self,
        msg: _Record,
        declared: Responder,
        value: bytes | None,
        exc: BaseException | None,
        *,
        dead: bool,
    ) -> None:
        """Dead-letter the request (`dead`), then reply `value` or `exc`. A failure of either
        is logged, never raised: a Faust agent that crashed would receive nothing more."""
        if dead and exc is not None:
            await _logged("dead letter", msg, self.dead_letter(msg, exc, declared.name, declared))
        await _logged("reply", msg, self._reply(msg, value, exc))

    async def _reply(self, msg: _Record, value: bytes | None, error: BaseException | None) -> None:
        """Send the reply (or the error) to the request's reply topic, if it has one that
        exists, before the request's deadline; one that cannot be sent is logged, dropped."""
        reply_to, correlation = header(msg, REPLY_TO), header(msg, CORRELATION_ID)
        if not reply_to or not correlation:
            return  # not sent by a kit requester: nobody to answer
        topic = reply_to.decode(errors="replace")
        try:  # Faust's producer would wait minutes for a topic that does not exist
            headers = reply_headers(correlation, error, with_trace=self.settings.remote_tracebacks)
            deadline = header(msg, DEADLINE)  # a reply after it is useless: wait no longer
            left = int(deadline) / 1000 - time.time() if deadline and deadline.isdigit() else 10.0
            if topic not in self._reply_topics and not await self._topic_exists(topic):
                raise LookupError("the topic does not exist (its requester stopped)")
            send = self.app.producer.send_and_wait(topic, None, value, None, None, headers)
            await asyncio.wait_for(send, max(left, 0.1))
            self._reply_topics.add(topic)
        except Exception as exc:
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
        reports a record that does not decode once per channel); `handler`: who failed.
        Waits at most KIT_DELIVERY_TIMEOUT; a dead letter not written is logged, counted in
        `dead_letters_lost`, never raised (Faust commits the record's offset all the same)."""
        where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        if where in self._dead:
            return
        self._dead.append(where)
        suffix = self.settings.dead_letter_suffix
        topic = dead_letter_topic(declared, suffix) if declared else f"{msg.topic()}{suffix}"
        try:  # Faust's producer would wait minutes for a topic without a leader
            headers = (msg.headers() or []) + dead_letter_headers(
                msg, exc, 0 if isinstance(exc, DecodeError) else 1, self.service.name,
                str(self.app.conf.id), handler,
            )  # fmt: skip
            log.warning("dead-lettering %s to %s: %s", where, topic, exc)
            send = self.app.producer.send_and_wait(
                topic, msg.key(), msg.value(), None, None, headers
            )
            await asyncio.wait_for(send, self.settings.delivery_timeout)
        except Exception as failure:
            self.dead_letters_lost += 1
            log.error(
                "%s NOT dead-lettered to %s (%s: %s), within KIT_DELIVERY_TIMEOUT=%ss: the "
                "record is skipped, its offset committed (it failed with: %s)", where, topic,
                type(failure).__name__, failure, self.settings.delivery_timeout, exc,
            )  # fmt: skip
            return
        self.dead_lettered += 1

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
        """Once the app has started: writer schemas, then the announcement and heartbeat. A
        registry that refuses one or cannot be reached stops the worker (Faust's crash)."""
        try:
            if self.settings.schema_registry_url:
                await asyncio.to_thread(self._registry_ready().check)
            await self.publish_schemas(self._schemas.values())
        except (SchemaRefused, ConfigError) as exc:
            log.error("kit bridge: %s cannot start: %s", self.service.name, exc)
            raise
        await self.announcer.start()
        # on the broker before "ready", so a caller that starts then finds it (bounded wait)
        ok = await self.announcer.confirmed(self.settings.connect_timeout)  # else: warned
        n, argv, app_id = len(self.service.responders()), " ".join(sys.argv), self.app.conf.id
        announced = "announced" if ok else "not announced"
        log.info(f"kit bridge: {self.service.name} ready: instance {self.instance_id} of Faust "
                 f"app {app_id}, {n} responder(s), {announced} on {self.announcer.topic} "
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


async def _logged(what: str, msg: _Record, step: Awaitable[None]) -> None:
    """Await `step` about the request `msg`; an exception is logged, never raised (in a
    responder's Faust agent: one that crashed would receive nothing more)."""
    try:
        await step
    except Exception as failure:
        log.error(
            "%s of request %s[%s]@%s failed: %s: %s", what, msg.topic(), msg.partition(),
            msg.offset(), type(failure).__name__, failure,
        )  # fmt: skip
