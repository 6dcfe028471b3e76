"""Run services in-process on the memory transport: feed events, get back what they emitted."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kit.codec import Codec, fingerprint_of
from kit.config import Settings, load_settings
from kit.context import header
from kit.dispatch import Dispatcher, Ticket
from kit.errors import DecodeError, RequestTimeout
from kit.event import Event
from kit.requests import (
    CORRELATION_ID,
    REPLY_TOPIC_PREFIX,
    BaseRequester,
    check_reply,
    reply_topic_name,
    request_headers,
)
from kit.schema import Schema, SchemaRepository, repository_for
from kit.service import Responder, Service
from kit.transport.memory import MemoryBroker, MemoryMessage

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


class Harness:
    """Services wired to in-memory topics, with Kafka's record flow and no broker.

    Each service is its own consumer group: `run()` hands every record of a subscribed
    topic to it, partition by partition in order, through the same dispatcher as on Kafka
    (decode, retries, dead letters, replies). `ctx.request` from a handler, and
    `harness.request`, are answered at once by the responders in the harness. The
    memory transport has a logical clock and no threads, so the same input gives the same
    output, in the same order.
    """

    def __init__(
        self,
        *services: Service,
        settings: Settings | None = None,
        partitions: int = 1,
        repository: SchemaRepository | None = None,
    ) -> None:
        self.settings = settings or load_settings(
            bootstrap_servers="memory", retry_backoff=0.0, retry_backoff_max=0.0
        )
        self.broker = MemoryBroker(partitions)
        self.repository = repository or _repository(services, self.settings)
        self._extra_schemas: dict[bytes, Schema] = {}
        self.codec = Codec(self.repository, resolver=self._extra_schemas.get)
        self.services = list(services)
        self.dispatchers: dict[str, Dispatcher] = {}
        self._positions: dict[str, dict[tuple[str, int], int]] = {}
        self._direct: set[tuple[str, str, int, int]] = set()
        """(service, topic, partition, offset) of requests a responder already answered."""
        self._requests = 0
        for svc in services:
            d = Dispatcher(svc, self.codec, self.settings, self.broker.sink(svc.name))
            d.requester = self._requester
            self.dispatchers[svc.name] = d
            self._positions[svc.name] = {}
            for handler in svc.handlers:
                self.broker.create_topic(handler.topic, handler.partitions)
        self._requester_obj = _MemoryRequester(self)

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
        `schemas` (fingerprint -> schema, as a recording holds them); returns the count."""
        self._extra_schemas.update(schemas)
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

        topics = {name: len(parts) for name, parts in self.broker.topics.items()}
        with RecordingWriter(path, topics=topics, source="kit harness") as writer:
            for m in self.broker.log:
                value = m.value()
                fp = fingerprint_of(value) if value else None
                schema = self.codec.writer_schema(fp) if fp else None
                if schema is not None and not writer.has_schema(schema.fingerprint):
                    writer.add_schema(schema)
                writer.write(
                    Record(
                        m.topic(),
                        m.partition(),
                        m.offset(),
                        m.timestamp()[1],
                        1,
                        m.key(),
                        tuple(m.headers() or ()),
                        m.value(),
                    )
                )
        return len(self.broker.log)

    # --- running -----------------------------------------------------------------------

    async def run(self, max_rounds: int = 1000) -> int:
        """Deliver records to services until no service has anything left; returns the count."""
        total = 0
        for _ in range(max_rounds):
            progressed = 0
            for svc in self.services:
                progressed += await self._deliver(svc)
            total += progressed
            if not progressed:
                return total
        raise RuntimeError(f"services still busy after {max_rounds} rounds (a loop of events?)")

    async def _deliver(self, svc: Service) -> int:
        dispatcher = self.dispatchers[svc.name]
        positions = self._positions[svc.name]
        count = 0
        for handler in svc.handlers:
            for partition, records in enumerate(self.broker.topics.get(handler.topic, [])):
                start = positions.get((handler.topic, partition), 0)
                batch = [
                    m
                    for m in records[start:]
                    if (svc.name, m.topic(), m.partition(), m.offset()) not in self._direct
                ]
                positions[(handler.topic, partition)] = len(records)
                if batch:
                    await dispatcher.handle_batch(batch, Ticket())
                    count += len(batch)
        return count

    async def request(
        self,
        target: str | Callable[..., Any],
        event: Event,
        *,
        reply: type[E] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Call a responder in the harness and return its typed reply."""
        requester: Any = self._requester_obj
        return await requester.request(target, event, reply=reply, timeout=timeout)

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
        """The dead-lettered records (of `topic`'s DLT, if given), in order."""
        suffix = self.settings.dead_letter_suffix
        return [
            o
            for o in self.outputs
            if o.topic.endswith(suffix) and (topic is None or o.topic == f"{topic}{suffix}")
        ]


def _is_type(item: Emitted, full_name: str, codec: Codec) -> bool:
    fp = fingerprint_of(item.value) if item.value else None
    schema = codec.writer_schema(fp) if fp else None
    return schema is not None and schema.full_name == full_name


class _MemoryRequester(BaseRequester):
    """Requests answered synchronously by the harness's responders."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.codec = harness.codec
        self.pending: dict[str, Any] = {}
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
    ) -> Any:
        """Put the request on its topic, let the responder handle it now, return its reply."""
        h = self.harness
        wait = h.settings.request_timeout if timeout is None else timeout
        h._requests += 1
        corr = f"harness-{h._requests}"
        target = topic or f"{service}.{method}"
        deadline_ms = int((time.time() + wait) * 1000)
        headers = request_headers(corr, REPLY_TOPIC, deadline_ms, service, method)
        msg = h.broker.append(target, value, key, headers, producer="request")
        h.broker.create_topic(REPLY_TOPIC)
        for svc in h.services:
            handler = h.dispatchers[svc.name].by_topic.get(target)
            if isinstance(handler, Responder):
                h._direct.add((svc.name, msg.topic(), msg.partition(), msg.offset()))
                await h.dispatchers[svc.name].handle(msg, Ticket())
                for reply in reversed(h.broker.topics[REPLY_TOPIC][0]):
                    if header(reply, CORRELATION_ID) == corr.encode():
                        return check_reply(reply, service, method, corr)  # type: ignore[arg-type]
                break
        raise RequestTimeout(service, method, corr, wait)


def _repository(services: Iterable[Service], settings: Settings) -> SchemaRepository:
    """The repositories the services' event types are bound to (`repository_for`), merged.

    With one repository (the usual case), it is that one: the same object the runtime uses.
    """
    repos: list[SchemaRepository] = []
    if settings.schemas_dir:
        repos.append(repository_for(settings=settings))
    for svc in services:
        for handler in svc.handlers:
            repo = getattr(handler.event_type, "__kit_repository__", None)
            if isinstance(repo, SchemaRepository) and all(repo is not r for r in repos):
                repos.append(repo)
    if not repos:
        return repository_for(settings=settings)
    if len(repos) == 1:
        return repos[0]
    merged = SchemaRepository()
    for repo in repos:
        for schema in repo:
            merged.add(schema)
    return merged
