"""Run services in-process on the memory transport: feed events, get back what they emitted."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kit.codec import Codec, registry_id, writer_key
from kit.config import Settings, load_settings
from kit.context import header
from kit.dead_letters import dead_letter_topic
from kit.errors import DecodeError, RequestTimeout, ServiceUnavailable
from kit.event import Event
from kit.requests import (
    CORRELATION_ID,
    REPLY_TOPIC_PREFIX,
    BaseRequester,
    check_reply,
    reply_topic_name,
    request_headers,
)
from kit.runtime import Runtime, repository_of
from kit.schema import Schema, SchemaRepository
from kit.service import Caller, Endpoint, Handler, Responder, Service
from kit.telemetry import tracer
from kit.transport.memory import MemoryBroker, MemoryConsumer, MemoryMessage, MemoryTransport
from kit.transport.registry_format import RegistryFormat

if TYPE_CHECKING:
    from kit.replay.file import Record

__all__ = ["Emitted", "Harness"]

E = TypeVar("E", bound=Event)
REPLY_TOPIC = reply_topic_name("harness")


@dataclass(frozen=True)
class Emitted:
    """One record a service produced: an event, a reply or a dead letter."""

    service: str
    message: MemoryMessage

    @property
    def topic(self) -> str:
        """Where it went."""
        return self.message.topic()

    @property
    def key(self) -> bytes | None:
        """Its key."""
        return self.message.key()

    @property
    def headers(self) -> dict[str, bytes]:
        """Its headers."""
        return dict(self.message.headers() or [])

    @property
    def value(self) -> bytes | None:
        """Its value bytes."""
        return self.message.value()


class Harness(Caller):
    """Services wired to in-memory topics, with Kafka's record flow and no broker.

    Each service gets the same `Runtime` it runs on Kafka, over the memory transport
    (kit.transport.memory), as its own consumer group owning every partition. `run()` turns
    the runtimes' loops (`Runtime.step`: fetch, decode, handler, publish, confirm, commit)
    until no service has anything left. `ctx.request` from a handler, and
    `harness.request`, put the request on the responder's topic and turn the responder's
    loop at once, on that topic alone, so the reply is there when the call returns (unlike
    on Kafka, a service can answer its own requests here). The memory transport has a
    logical clock and no threads, so the same input gives the same output, in the same
    order.
    """

    def __init__(
        self,
        *services: Service,
        settings: Settings | None = None,
        partitions: int = 1,
        repository: SchemaRepository | None = None,
    ) -> None:
        self.settings = settings or load_settings(
            bootstrap_servers="memory",
            retry_backoff=0.0,
            retry_backoff_max=0.0,
            # nothing in a harness changes by waiting: a transient failure (a service not in
            # the harness) is retried KIT_RETRIES times, not for 30 s of back-to-back attempts
            transient_timeout=0.0,
        )
        self.broker = MemoryBroker(partitions)
        self.repository = repository or repository_of(services, self.settings)
        self._extra_schemas: dict[bytes, Schema] = {}
        self.registry = RegistryFormat(self.settings) if self.settings.schema_registry_url else None
        """The schema registry (mock://, say) of KIT_SCHEMA_REGISTRY_URL, if set."""
        self.codec = Codec(self.repository, resolver=self._writer, registry=bool(self.registry))
        if self.registry is not None and self.settings.schema_registry_write:
            # what send() encodes is framed too (meant for mock://: registering blocks)
            self.codec.set_headers(self.registry.register_all(self.repository))
        self.services = list(services)
        self.transports: dict[str, MemoryTransport] = {}
        self.runtimes: dict[str, Runtime] = {}
        """Each service's Runtime, by service name (started by the first run or request)."""
        for svc in services:
            transport = MemoryTransport(self.broker, svc.name, self._writer, self.registry)
            self.transports[svc.name] = transport
            self.runtimes[svc.name] = Runtime(
                svc,
                self.settings,
                repository=self.repository,
                instance_id=f"{svc.name}-harness",
                extensions=[],
                transport=transport,
                codec=self.codec,
            )
            for handler in svc.handlers:
                self.broker.create_topic(handler.topic, handler.partitions)
        self._requests = 0
        self._requester_obj = _MemoryRequester(self)
        self._started = False

    def _writer(self, key: bytes) -> Schema | None:
        """A writer schema given to the harness, or one of the schema registry."""
        found = self._extra_schemas.get(key)
        if found is None and self.registry is not None:
            found = self.registry.lookup(key)
        return found

    async def start(self) -> None:
        """Start every service's runtime on the memory transport (run() does it first)."""
        if self._started:
            return
        self._started = True
        for runtime in self.runtimes.values():
            await runtime.start()
            runtime.dispatcher.requester = self._requester

    # --- input -------------------------------------------------------------------------

    def send(
        self,
        event: Event,
        *,
        key: str | bytes | None = None,
        topic: str | None = None,
        headers: dict[str, str | bytes] | None = None,
    ) -> MemoryMessage:
        """Put a typed event on a topic (default: its schema's full name)."""
        return self.send_raw(
            topic or event.kit_schema().full_name,
            self.codec.encode(event),
            key=key,
            headers=headers,
        )

    def send_raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: str | bytes | None = None,
        headers: dict[str, str | bytes] | Iterable[tuple[str, bytes | None]] | None = None,
        partition: int | None = None,
    ) -> MemoryMessage:
        """Put raw bytes on a topic (to test bad input, or feed a recording)."""
        items = headers.items() if isinstance(headers, dict) else headers or ()
        hdrs = [(k, v.encode() if isinstance(v, str) else (v or b"")) for k, v in items]
        return self.broker.append(
            topic,
            value,
            key.encode() if isinstance(key, str) else key,
            hdrs,
            partition=partition,
            producer="input",
        )

    def feed_recording(self, path: Path | str, topics: Iterable[str] | None = None) -> int:
        """Feed the records of a recording file (only `topics`, if given); returns the count."""
        from kit.replay.file import RecordingReader

        with RecordingReader(path) as reader:
            records = [rec for _index, rec in reader]
            return self.feed_records(records, reader.schemas, topics)

    def feed_records(
        self,
        records: Iterable[Record],
        schemas: Mapping[bytes, Schema],
        topics: Iterable[str] | None = None,
    ) -> int:
        """Feed recorded records (only `topics`, if given), decodable with their writer
        `schemas` (writer key -> schema as a recording holds them, registry ids included:
        decoded with no registry); returns the count."""
        self._extra_schemas.update(schemas)
        for key, schema in schemas.items():
            self.codec.add_writer(key, schema)
        wanted = set(topics) if topics is not None else None
        count = 0
        for rec in records:
            if wanted is not None and rec.topic not in wanted:
                continue
            self.send_raw(
                rec.topic, rec.value, key=rec.key, headers=rec.headers, partition=rec.partition
            )
            count += 1
        return count

    def save_recording(self, path: Path | str) -> int:
        """Write every record on the memory topics to a recording file; returns the count."""
        from kit.replay.file import Record, RecordingWriter
        from kit.replay.schemas import public_url

        registry_url = public_url(self.settings.schema_registry_url or "")

        topics = {name: len(parts) for name, parts in self.broker.topics.items()}
        with RecordingWriter(path, topics=topics, source="kit harness") as writer:
            for m in self.broker.log:
                value = m.value()
                key = _writer_key(value)
                schema = self.codec.writer_schema(key) if key else None
                schema_id = registry_id(key) if key else None
                if schema is not None and schema_id is not None:
                    writer.add_schema_id(schema_id, schema, registry_url)
                elif schema is not None and not writer.has_schema(schema.fingerprint):
                    writer.add_schema(schema)
                stamp, headers = m.timestamp()[1], tuple(m.headers() or ())
                record = Record(
                    m.topic(), m.partition(), m.offset(), stamp, 1, m.key(), headers, value
                )
                writer.write(record)
        return len(self.broker.log)

    # --- running -----------------------------------------------------------------------

    async def run(self, max_rounds: int = 1000) -> int:
        """Turn the services' loops until no service has anything left; returns the number
        of records handled.

        In each round every service, in the order given, handles what was waiting for it
        when its turn came; what it emits waits for the next round. More than `max_rounds`
        rounds means services feeding each other for ever: RuntimeError.
        """
        await self.start()
        total = 0
        for _ in range(max_rounds):
            progressed = 0
            for name, runtime in self.runtimes.items():
                waiting = self.transports[name].consumer.pending()
                while waiting > 0 and (fetched := await runtime.step()):
                    waiting -= fetched
                    progressed += fetched
            total += progressed
            if not progressed:
                return total
        raise RuntimeError(f"services still busy after {max_rounds} rounds (a loop of events?)")

    async def _request(
        self,
        target: str | Endpoint[Any, Any],  # Any: either form of request()
        event: Event,
        reply: type[Event] | None,
        timeout: float | None,
        key: str | bytes | None,
    ) -> Event:
        """See `request()` (kit.service.Caller): answered by the harness's responders."""
        return await self._requester_obj.call(target, event, reply, timeout, key)

    async def _requester(self) -> BaseRequester:
        return self._requester_obj

    # --- output ------------------------------------------------------------------------

    @property
    def outputs(self) -> list[Emitted]:
        """Every record the services produced, in order."""
        return [Emitted(m.producer, m) for m in self.broker.log if m.producer not in ("input", "")]

    def emitted(
        self, event_type: type[E], *, topic: str | None = None, service: str | None = None
    ) -> list[E]:
        """The events of one type the services published (not replies), decoded, in order."""
        name = event_type.kit_schema().full_name
        out = []
        for item in self.outputs:
            if item.topic.startswith(REPLY_TOPIC_PREFIX) or item.topic.endswith(
                self.settings.dead_letter_suffix
            ):
                continue
            if (topic and item.topic != topic) or (service and item.service != service):
                continue
            if topic is None and item.topic != name and not _is_type(item, name, self.codec):
                continue
            try:
                out.append(self.codec.decode(item.value, event_type))
            except DecodeError:
                continue
        return out

    def replies(self, service: str | None = None) -> list[Emitted]:
        """The replies responders gave, in order."""
        return [
            o
            for o in self.outputs
            if o.topic.startswith(REPLY_TOPIC_PREFIX) and (service is None or o.service == service)
        ]

    def dead_letters(self, topic: str | None = None) -> list[Emitted]:
        """The dead-lettered records, in order: all of them, or those of one source topic or
        one dead-letter topic (`dead_letters("orders.OrderPlaced")` and
        `dead_letters("orders.OrderPlaced.dlt")` give the same)."""
        targets = {
            self._dead_letter_topic(h): h.topic for svc in self.services for h in svc.handlers
        }
        suffix = self.settings.dead_letter_suffix
        return [
            o
            for o in self.outputs
            if (o.topic in targets or o.topic.endswith(suffix))
            and (
                topic is None
                or topic in (o.topic, targets.get(o.topic))
                or o.topic == topic + suffix
            )
        ]

    def _dead_letter_topic(self, handler: Handler) -> str:
        return dead_letter_topic(handler, self.settings.dead_letter_suffix)


def _writer_key(value: bytes | None) -> bytes | None:
    """The writer key of a value (fingerprint or registry header), None if it has none."""
    try:
        return writer_key(value) if value else None
    except DecodeError:
        return None


def _is_type(item: Emitted, full_name: str, codec: Codec) -> bool:
    key = _writer_key(item.value)
    schema = codec.writer_schema(key) if key else None
    return schema is not None and schema.full_name == full_name


class _MemoryRequester(BaseRequester):
    """Requests put on the memory topics and answered at once by the harness's responders."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.codec = harness.codec
        self.pending: dict[str, Any] = {}  # Any: always empty; Requester.pending's counterpart
        self.late_replies = 0

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
    ) -> Any:  # Any: a memory record, as BaseRequester.request_raw's
        """Put the request on its topic, turn the responder's loop on that topic until it
        handled the request, and return the reply. NotInHarness (a ServiceUnavailable)
        when no service in the harness answers it; RequestTimeout when its responder gave
        no reply (it skipped the request as expired)."""
        h = self.harness
        began = time.monotonic()
        await h.start()
        wait = h.settings.request_timeout if timeout is None else timeout
        h._requests += 1
        corr = f"harness-{h._requests}"
        target = topic or f"{service}.{method}"
        deadline_ms = int((time.time() + wait) * 1000)
        headers = request_headers(corr, REPLY_TOPIC, deadline_ms, service, method)
        headers = tracer().outgoing(target, key, headers, None) or headers  # as Requester's
        h.broker.create_topic(REPLY_TOPIC)
        msg = h.broker.append(target, value, key, headers, producer="request")
        for name, runtime in h.runtimes.items():
            if isinstance(runtime.dispatcher.by_topic.get(target), Responder):
                await _turn_until_handled(runtime, h.transports[name].consumer, msg)
                for reply in reversed(h.broker.topics[REPLY_TOPIC][0]):
                    if header(reply, CORRELATION_ID) == corr.encode():
                        return check_reply(reply, service, method, corr)
                raise RequestTimeout(service, method, corr, time.monotonic() - began)
        raise NotInHarness(service, target)


class NotInHarness(ServiceUnavailable):
    """A request to a responder that no service in the harness has."""

    def __init__(self, service: str, topic: str) -> None:
        super().__init__(service)
        self.args = (f"no service in the harness answers {topic}: add {service!r} to the Harness",)


async def _turn_until_handled(
    runtime: Runtime, consumer: MemoryConsumer, msg: MemoryMessage
) -> None:
    """Turn `runtime`'s loop on `msg`'s topic alone until `msg` was fetched and handled."""
    slot = (msg.topic(), msg.partition())
    previous, consumer.only = consumer.only, {msg.topic()}
    try:
        while consumer.positions.get(slot, 0) <= msg.offset() and await runtime.step():
            pass
    finally:
        consumer.only = previous
