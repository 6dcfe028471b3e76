"""The Kafka `Transport` of a runtime: admin, topics, producer and sinks, schema topic, consumer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from kit.config import Settings
from kit.schema import Schema
from kit.service import Handler, Service
from kit.transport.consumer import KafkaConsumer
from kit.transport.kafka import admin_client, make_producer
from kit.transport.schema_topic import SchemaTopic
from kit.transport.sink import KafkaSink
from kit.transport.topics import ServiceTopics, setup_service_topics

__all__ = ["KafkaTransport"]


class KafkaTransport:
    """A runtime's clients on a Kafka cluster (see kit.transport.base.Transport).

    `open` checks the cluster, creates or checks the service's topics and dead-letter
    topics (off the loop), and makes one idempotent producer, one admin client, the
    schema topic and the consumer. The attributes below exist once `open` returned.
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
        self.admin = admin = admin_client(settings)
        self.topics = await asyncio.to_thread(
            setup_service_topics, admin, settings, service.handlers, dead_letter_topic
        )
        self.producer = make_producer(
            settings,
            low_latency=bool(service.responders()),
            message_max_bytes=self.topics.producer_limit,
        )
        self.reply_sink = self.sink_for(self.producer)
        self.sink = self.reply_sink
        self.schema_topic = SchemaTopic(settings, admin)
        overrides: dict[str, object] = {} if auto_commit else {"enable.auto.commit": False}
        self.consumer = KafkaConsumer(settings, group, instance_id, **overrides)
        self._opened = True

    def sink_for(self, producer: Producer) -> KafkaSink:
        """A sink on `producer` that knows the service's topics and their limits."""
        assert self.settings is not None
        topics = self.topics
        sink = KafkaSink(producer, self.admin, self.settings, producer_limit=topics.producer_limit)
        sink.known_topics.update(topics.partitions)
        sink.partitions.update(topics.partitions)
        sink.limits.update(topics.limits)
        return sink

    def poll(self, timeout: float) -> int:
        """Serve the plain producer's delivery reports."""
        return self.producer.poll(timeout)

    async def lookup(self, fingerprint: bytes) -> Schema | None:
        """Read an unknown writer schema from the schema topic (off the loop)."""
        return await self.schema_topic.lookup_async(fingerprint)

    async def publish_schemas(self, schemas: Iterable[Schema]) -> None:
        """Publish writer schemas to the schema topic (off the loop)."""
        await asyncio.to_thread(self.schema_topic.publish, list(schemas))

    async def close(self) -> None:
        """Close the schema topic's clients (the consumer closed before)."""
        if self._opened:
            await asyncio.to_thread(self.schema_topic.close)
