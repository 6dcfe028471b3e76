"""Metadata requests in `Runtime.start`: one topic listing and one configuration read when
every topic exists (counted on a fake admin client, with no broker)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

import kit.registry.announcer
import kit.transport.kafka_transport
import kit.transport.schema_topic
import kit.transport.topics
from kit import Runtime, Settings
from kit.app import Announcing
from tests.fixtures.billing import service

# Any: the fakes stand in for confluent-kafka's clients, whose arguments are passed as given.


def _done(value: Any) -> concurrent.futures.Future[Any]:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    future.set_result(value)
    return future


class FakeAdmin:
    """An AdminClient that counts each request: topics with partitions, 1 MB limits."""

    def __init__(self, topics: dict[str, int]) -> None:
        self.topics = dict(topics)
        self.calls: Counter[str] = Counter()

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        self.calls["list_topics"] += 1
        names = [topic] if topic is not None else list(self.topics)
        return SimpleNamespace(
            topics={
                n: SimpleNamespace(
                    error=None,
                    partitions={i: SimpleNamespace(leader=1) for i in range(self.topics[n])},
                )
                for n in names
                if n in self.topics
            }
        )

    def describe_configs(self, resources: list[Any], **_kw: Any) -> dict[Any, Any]:
        self.calls["describe_configs"] += 1
        value = {"max.message.bytes": SimpleNamespace(value="1048588")}
        return {r: _done(value) for r in resources}

    def create_topics(self, new_topics: list[Any], **_kw: Any) -> dict[str, Any]:
        self.calls["create_topics"] += 1
        for spec in new_topics:
            self.topics[spec.topic] = spec.num_partitions
        return {spec.topic: _done(None) for spec in new_topics}

    def incremental_alter_configs(self, resources: list[Any], **_kw: Any) -> dict[Any, Any]:
        self.calls["incremental_alter_configs"] += 1
        return {r: _done(None) for r in resources}


class FakeProducer:
    def produce(self, *_a: Any, **_kw: Any) -> None: ...

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0

    def list_topics(self, *_a: Any, **_kw: Any) -> Any:
        return SimpleNamespace(topics={})


class FakeConsumer:
    def __init__(self, *_a: Any, **_kw: Any) -> None: ...

    async def subscribe(self, *_a: Any) -> None: ...

    async def close(self, *_a: Any) -> None: ...


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> FakeAdmin:
    fake = FakeAdmin({})
    monkeypatch.setattr(kit.transport.kafka_transport, "admin_client", lambda _s: fake)
    monkeypatch.setattr(kit.registry.announcer, "admin_client", lambda _s: fake)
    monkeypatch.setattr(kit.transport.topics, "check_reachable", lambda *_a: None)
    for module in (kit.transport.kafka_transport, kit.transport.schema_topic):
        monkeypatch.setattr(module, "make_producer", lambda *_a, **_kw: FakeProducer())
    monkeypatch.setattr(kit.registry.announcer, "make_producer", lambda *_a, **_kw: FakeProducer())
    monkeypatch.setattr(kit.transport.kafka_transport, "KafkaConsumer", FakeConsumer)
    return fake


def _start(extensions: list[Any]) -> None:
    async def scenario() -> None:
        settings = Settings(bootstrap_servers="127.0.0.1:1")
        runtime = Runtime(service, settings, extensions=extensions)
        await runtime.start()
        await runtime.transport.close()

    asyncio.run(scenario())


def _existing() -> dict[str, int]:
    settings = Settings(bootstrap_servers="127.0.0.1:1")
    topic = service.handlers[0].topic
    return {
        topic: 3,
        f"{topic}{settings.dead_letter_suffix}": 3,
        settings.schema_topic: 1,
        "_kit_registry": 1,
    }


def test_a_start_on_existing_topics_lists_them_once_and_reads_their_configs_once(
    admin: FakeAdmin,
) -> None:
    admin.topics.update(_existing())
    _start([])
    assert admin.calls == {"list_topics": 1, "describe_configs": 1}


def test_announcing_checks_the_registry_topic_against_the_same_listing(
    admin: FakeAdmin,
) -> None:
    # Announcer.prepare is given the runtime's start-up listing (kit.app.Announcing)
    admin.topics.update(_existing())
    _start([Announcing()])
    assert admin.calls == {"list_topics": 1, "describe_configs": 1}


def test_announcing_on_an_empty_cluster_creates_the_registry_topic_once(
    admin: FakeAdmin,
) -> None:
    _start([Announcing()])
    # as below, plus: create the registry topic and wait for it
    assert admin.calls == {"list_topics": 5, "describe_configs": 1, "create_topics": 4}
    assert set(admin.topics) == set(_existing())


def test_a_start_on_an_empty_cluster_creates_each_kind_of_topic_once(admin: FakeAdmin) -> None:
    _start([])
    # one listing; create the source and wait for it; read the limits; create the
    # dead-letter topic and wait; create the schema topic and wait
    assert admin.calls == {"list_topics": 4, "describe_configs": 1, "create_topics": 3}
    assert set(admin.topics) == set(_existing()) - {"_kit_registry"}
