"""The Kafka `Transport` of a runtime: admin, topics, producer and sinks, schema topic or
schema registry, consumer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from kit.config import Settings
from kit.schema import Schema
from kit.service import Handler, Service
from kit.transport.consumer import KafkaConsumer
from kit.transport.kafka import admin_client, make_producer
from kit.transport.registry_format import RegistryFormat, TopicRegistrar
from kit.transport.schema_topic import SchemaTopic
from kit.transport.sink import KafkaSink
from kit.transport.topics import ServiceTopics, setup_service_topics

__all__ = ["KafkaTransport"]


class KafkaTransport:
    """A runtime's clients on a Kafka cluster (see kit.transport.base.Transport).

    `open` checks the cluster, creates or checks the service's topics and dead-letter
    topics (off the loop), and makes one idempotent producer, one admin client, the
    schema topic and the consumer. The attributes below exist once `open` returned.

    With KIT_SCHEMA_REGISTRY_URL, `open` also checks the registry, values of both wire
    formats are read (writer schemas by id from the registry, by fingerprint from the
    schema topic, which is then only read, never created), and unless
    KIT_SCHEMA_REGISTRY_WRITE is false, `publish_schemas` registers the writer schemas
    instead of writing them to the schema topic.
    """

    consumer: KafkaConsumer
    sink: KafkaSink
    reply_sink: KafkaSink
    producer: Producer
    """The plain producer: replies, requests, and events unless exactly-once."""
    admin: AdminClient
    schema_topic: SchemaTopic
    topics: ServiceTopics

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.registry: RegistryFormat | None = None
        """The schema registry, when KIT_SCHEMA_REGISTRY_URL is set."""
        self.registrar: TopicRegistrar | None = None
        """Registers schemas under other topics' subjects (registry format, topic strategy)."""
        self._opened = False

    async def open(
        self,
        service: Service,
        settings: Settings,
        *,
        group: str,
        instance_id: str,
        dead_letter_topic: Callable[[Handler], str],
        auto_commit: bool = True,
    ) -> None:
        """Connect and prepare topics (in a worker thread); make the clients."""
        self.settings = settings
        self._dead_letter_topics = {dead_letter_topic(h) for h in service.handlers}
        if settings.schema_registry_url:
            self.registry = RegistryFormat(settings)
            await asyncio.to_thread(self.registry.check)
        self.admin = admin = admin_client(settings)
        self.schema_topic = SchemaTopic(settings, admin)
        if not (self.registry is not None and settings.schema_registry_write):
            self.schema_topic.open_writer()  # made ahead of publish_schemas: see open_writer
        try:  # a failure from here on closes what was made (close() runs once opened)
            self.topics = await asyncio.to_thread(
                setup_service_topics, admin, settings, service.handlers, dead_letter_topic
            )
            self.schema_topic.use_listing(self.topics.listed)
            self.producer = make_producer(
                settings,
                low_latency=bool(service.responders()),
                message_max_bytes=self.topics.producer_limit,
            )
            self.reply_sink = self.sink_for(self.producer, events=False)
            self.sink = self.reply_sink
            overrides: dict[str, object] = {} if auto_commit else {"enable.auto.commit": False}
            self.consumer = KafkaConsumer(settings, group, instance_id, **overrides)
        except BaseException:
            await asyncio.to_thread(self.schema_topic.close)
            raise
        self._opened = True

    def sink_for(self, producer: Producer, *, events: bool = True) -> KafkaSink:
        """A sink on `producer` that knows the service's topics and their limits (and, for
        `events`, registers schemas under the subjects of the topics they go to)."""
        assert self.settings is not None
        topics = self.topics
        sink = KafkaSink(producer, self.admin, self.settings, producer_limit=topics.producer_limit)
        sink.known_topics.update(topics.partitions)
        sink.partitions.update(topics.partitions)
        sink.limits.update(topics.limits)
        if events:
            sink.registrar = self.registrar
        return sink

    def poll(self, timeout: float) -> int:
        """Serve the plain producer's delivery reports."""
        return self.producer.poll(timeout)

    async def lookup(self, fingerprint: bytes) -> Schema | None:
        """An unknown writer schema (off the loop): by 8-byte fingerprint from the schema
        topic, by 5-byte registry header from the schema registry."""
        if len(fingerprint) == 8:
            return await self.schema_topic.lookup_async(fingerprint)
        if self.registry is None:
            return None
        return await asyncio.to_thread(self.registry.lookup, fingerprint)

    async def publish_schemas(self, schemas: Iterable[Schema]) -> Mapping[bytes, bytes] | None:
        """Make writer schemas known to readers (off the loop): publish them to the schema
        topic, or register them with the schema registry under their default topic's
        subject and return their headers (fingerprint -> 5 bytes) for the codec.

        SchemaRefused if the registry refuses one; ConfigError if it cannot be reached.
        """
        todo = list(schemas)
        registry, settings = self.registry, self.settings
        if registry is None or settings is None or not settings.schema_registry_write:
            await asyncio.to_thread(self.schema_topic.publish, todo)
            return None

        headers = await asyncio.to_thread(registry.register_all, todo)
        if registry.strategy == "topic":
            own = {headers[s.fingerprint]: s for s in todo if s.fingerprint in headers}
            self.registrar = TopicRegistrar(registry, own, self._dead_letter_topics)
            self.sink = self.sink_for(self.producer)  # replies and requests: not registered
        return headers

    async def close(self) -> None:
        """Close the schema topic's clients (the consumer closed before)."""
        if self._opened:
            await asyncio.to_thread(self.schema_topic.close)
        if self.registry is not None:
            self.registry.close()
