"""KafkaTransport.open: what it made is closed again when a later step fails (the schema
topic's producer is made ahead of the topic set-up, see SchemaTopic.open_writer)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kit import Service
from kit.config import load_settings
from kit.errors import ConfigError
from kit.transport import kafka_transport
from kit.transport.topics import ServiceTopics
from tests.fixtures.events import OrderPlaced


class FakeSchemaTopic:
    made: list[FakeSchemaTopic] = []

    def __init__(self, settings: Any, admin: Any) -> None:
        self.writer = False
        self.closed = False
        FakeSchemaTopic.made.append(self)

    def open_writer(self) -> None:
        self.writer = True

    def use_listing(self, listed: Any) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _refused(*_args: Any, **_kwargs: Any) -> None:
    raise ConfigError("KIT_KAFKA_FETCH_MAX_BYTES", "out of range")


@pytest.mark.parametrize("failing", ["setup_service_topics", "KafkaConsumer"])
def test_a_failed_open_closes_the_schema_topic_it_made(
    failing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = Service("opening")

    @svc.handler(topic="opening.orders")
    async def on_order(event: OrderPlaced) -> None:
        pass

    FakeSchemaTopic.made.clear()
    monkeypatch.setattr(kafka_transport, "SchemaTopic", FakeSchemaTopic)
    monkeypatch.setattr(kafka_transport, "admin_client", lambda _s: object())
    monkeypatch.setattr(
        kafka_transport, "setup_service_topics", lambda *_a: ServiceTopics({}, {}, None)
    )
    monkeypatch.setattr(kafka_transport, "make_producer", lambda *_a, **_k: object())
    monkeypatch.setattr(kafka_transport, failing, _refused)
    transport = kafka_transport.KafkaTransport()
    settings = load_settings(bootstrap_servers="127.0.0.1:1")

    async def main() -> None:
        with pytest.raises(ConfigError, match="KIT_KAFKA_FETCH_MAX_BYTES"):
            await transport.open(
                svc, settings, group="g", instance_id="i", dead_letter_topic=lambda _h: "dlt"
            )

    asyncio.run(main())
    [topic] = FakeSchemaTopic.made
    assert topic.writer and topic.closed
