"""The schema topic on a real broker: a schema published just after a miss is found at once.

Issue 8, defect 3: a consumer-side SchemaTopic that had just missed a fingerprint answered
"unknown" for 1 s, so records written with a schema version published in that second were
dead-lettered (71 of 120 right after a miss). A lookup now reads `_kit_schemas` to its end
offsets, queried after the record arrived; the producer's schema write is confirmed first.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from kit import Codec, SchemaRepository, Settings
from kit.codec import UnknownWriterSchema, fingerprint_of
from kit.schema import Schema
from kit.transport.admin import TopicSpec, ensure_topics
from kit.transport.kafka import admin_client
from kit.transport.schema_topic import SchemaTopic
from tests.unit.test_named_twice import folder

pytestmark = pytest.mark.integration

ROUNDS = 5


def version(n: int) -> Schema:
    """Version n of one record type: n optional fields added to the first version's."""
    extra = [{"name": f"f{i}", "type": "int", "default": i} for i in range(n)]
    return Schema.from_json(
        {
            "type": "record",
            "name": "Thing",
            "namespace": "fresh",
            "fields": [{"name": "id", "type": "string"}, *extra],
        }
    )


@pytest.fixture
def settings(kit_settings: Settings, unique_name: Callable[[str], str]) -> Settings:
    """The test broker's settings with a schema topic of this test's own."""
    return kit_settings.model_copy(update={"schema_topic": unique_name("schemas")})


@pytest.fixture
def data_topic(settings: Settings, unique_name: Callable[[str], str]) -> Iterator[str]:
    name = unique_name("data")
    ensure_topics(admin_client(settings), [TopicSpec(name, 1, 1)])
    yield name


class Wire:
    """The producer's record path and the consumer's: send one record, receive it."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": topic, "enable.auto.commit": False}
        )
        self.consumer.assign([TopicPartition(topic, 0, 0)])

    def send(self, value: bytes) -> None:
        self.producer.produce(self.topic, value)
        assert self.producer.flush(10) == 0

    def receive(self, timeout: float = 10.0) -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                return msg
        raise AssertionError(f"no record on {self.topic} within {timeout}s")

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def wire(kafka_bootstrap: str, data_topic: str) -> Iterator[Wire]:
    w = Wire(kafka_bootstrap, data_topic)
    yield w
    w.close()


@pytest.mark.parametrize("mode", ["lookup", "lookup_async"])
def test_a_schema_published_right_after_a_miss_is_found(
    settings: Settings, wire: Wire, mode: str
) -> None:
    reader = SchemaTopic(settings, admin_client(settings))
    writer = SchemaTopic(settings, admin_client(settings))
    codec = Codec()

    async def lookup(fp: bytes) -> Schema | None:
        if mode == "lookup":
            return reader.lookup(fp)
        return await reader.lookup_async(fp)

    async def scenario() -> int:
        misses = 0
        for n in range(ROUNDS):
            schema = version(n)
            # the consumer side has just missed a fingerprint (0 s after a miss)
            assert await lookup(os.urandom(8)) is None
            # the producer publishes a new version (confirmed), then sends at once
            writer.publish([schema])
            wire.send(codec.encode_datum(schema, {"id": f"r{n}"}))
            fp = fingerprint_of(wire.receive().value())
            assert fp == schema.fingerprint
            found = await lookup(fp)
            if found is None:
                misses += 1
            else:
                assert found.fingerprint == schema.fingerprint
        return misses

    try:
        assert asyncio.run(scenario()) == 0
    finally:
        reader.close()
        writer.close()


def test_async_codec_resolves_without_blocking_and_coalesces(
    settings: Settings, wire: Wire
) -> None:
    reader = SchemaTopic(settings, admin_client(settings))
    writer = SchemaTopic(settings, admin_client(settings))
    codec = Codec(async_resolver=reader.lookup_async)
    schema = version(7)

    async def scenario() -> None:
        assert await reader.lookup_async(os.urandom(8)) is None  # reads the (empty) topic
        writer.publish([schema])
        wire.send(Codec().encode_datum(schema, {"id": "a"}))
        value = wire.receive().value()
        # no sync resolver: decode never blocks, it names the fingerprint to resolve
        with pytest.raises(UnknownWriterSchema) as caught:
            codec.decode_any(value)
        assert caught.value.fingerprint == schema.fingerprint
        assert "unknown writer schema (fingerprint " in str(caught.value)
        queries = reader.end_offset_queries
        # many partitions missing the same fingerprint at once: one read serves them all
        results = await asyncio.gather(*(codec.resolve(schema.fingerprint) for _ in range(20)))
        assert all(results)
        assert reader.end_offset_queries - queries <= 2
        assert codec.decode_any(value)["id"] == "a"
        # a known fingerprint costs nothing more
        assert await codec.resolve(schema.fingerprint)
        assert reader.end_offset_queries - queries <= 2

    try:
        asyncio.run(scenario())
    finally:
        reader.close()
        writer.close()


def test_garbage_costs_one_end_offset_query_and_no_reread(settings: Settings) -> None:
    writer = SchemaTopic(settings, admin_client(settings))
    reader = SchemaTopic(settings, admin_client(settings))
    try:
        writer.publish([version(n) for n in range(30)])
        assert reader.lookup(version(3).fingerprint) is not None
        read, queries = reader.records_read, reader.end_offset_queries
        assert read == 30
        for _ in range(10):
            assert reader.lookup(os.urandom(8)) is None
        assert reader.end_offset_queries - queries == 10
        assert reader.records_read == read  # nothing read again

        async def garbage() -> None:
            found = await asyncio.gather(*(reader.lookup_async(os.urandom(8)) for _ in range(50)))
            assert found == [None] * 50

        queries = reader.end_offset_queries
        asyncio.run(garbage())
        assert reader.end_offset_queries - queries <= 2
        assert reader.records_read == read
    finally:
        reader.close()
        writer.close()


def test_a_named_type_used_twice_reads_back_from_the_topic(
    settings: Settings, tmp_path: Path
) -> None:
    v1 = SchemaRepository(folder(tmp_path, "v1"))
    email = {"name": "email", "type": ["null", "string"], "default": None}
    v2 = SchemaRepository(folder(tmp_path, "v2", [email]))
    old, new = v1.get("twice.Customer"), v2.get("twice.Customer")
    # The producer side has an unused third argument (the runtime passes its producer):
    # the schema topic makes its own producer and never touches the owner's.
    writer = SchemaTopic(settings, admin_client(settings), object())  # type: ignore[arg-type]
    reader = SchemaTopic(settings, admin_client(settings))
    try:
        writer.publish([old])
        read_back = reader.lookup(old.fingerprint)
        assert read_back is not None
        assert read_back.fingerprint == old.fingerprint
        assert read_back.canonical == old.canonical
        assert json.loads(read_back.text) == json.loads(old.text)
        record = {
            "id": "c-1",
            "address": {"street": "1 Main St", "city": "Springfield"},
            "billing_address": {"street": "PO Box 7", "city": "Shelbyville"},
            "previous": [],
            "by_label": {},
            "kind": "HOME",
            "other_kind": None,
            "phone": {"number": "555"},
            "fax": None,
        }
        data = Codec(v1).encode_datum(old, record)
        newer = Codec(v2, resolver=reader.lookup)
        assert newer.decode_dict(data, new) == {**record, "email": None}
    finally:
        reader.close()
        writer.close()
