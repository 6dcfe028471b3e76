"""SchemaTopic reads to the end offset on a miss, coalesces async lookups, bounds garbage.

The Kafka consumer is replaced by a fake partition (`FakePartition`), so these tests run the
real SchemaTopic code: one long-lived reader, reads from where the last one stopped, one
end-offset query per read, and the async side's single owned thread. Issue 8, defect 3.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from kit import Codec, DecodeError
from kit.codec import UnknownWriterSchema
from kit.config import load_settings
from kit.errors import BrokerError, KitError
from kit.schema import Schema
from kit.transport.schema_topic import SchemaTopic


def version(n: int) -> Schema:
    extra = [{"name": f"f{i}", "type": "int", "default": i} for i in range(n)]
    return Schema.from_json(
        {
            "type": "record",
            "name": "Thing",
            "namespace": "unit",
            "fields": [{"name": "id", "type": "string"}, *extra],
        }
    )


def fingerprints(found: list[Schema | None]) -> list[bytes | None]:
    return [None if s is None else s.fingerprint for s in found]


class FakeMessage:
    def __init__(self, offset: int, value: bytes | None, error: Any = None) -> None:
        self._offset, self._value, self._error = offset, value, error

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> Any:
        return self._error


class FakePartition:
    """Partition 0 of the schema topic, behind the few Consumer calls SchemaTopic makes.

    `gate` (if set) holds each end-offset query after its answer is decided, as a broker
    round trip in flight. Using it from two threads at once fails the test.
    """

    def __init__(self) -> None:
        self.values: list[bytes | None] = []
        self.low = 0
        self.position = -1
        self.end_offset_queries = 0
        self.polls = 0
        self.gate: threading.Event | None = None
        self.querying = threading.Event()
        self.closed = False
        self.stall = False
        self._busy = threading.Lock()

    def append(self, *schemas: Schema) -> None:
        self.values += [s.text.encode() for s in schemas]

    def _enter(self) -> None:
        assert self._busy.acquire(blocking=False), "consumer used from two threads at once"

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float, cached: bool = False
    ) -> tuple[int, int]:
        self._enter()
        try:
            assert not cached and tp.partition == 0
            self.end_offset_queries += 1
            answer = (self.low, len(self.values))
            if self.gate is not None:
                self.querying.set()
                assert self.gate.wait(10)
            return answer
        finally:
            self._busy.release()

    def assign(self, tps: list[TopicPartition]) -> None:
        (tp,) = tps
        self.position = tp.offset

    def unassign(self) -> None:
        self.position = -1

    def poll(self, timeout: float) -> FakeMessage | None:
        self.polls += 1
        batch = self.consume(1, 0)
        if not batch:
            time.sleep(min(timeout, 0.01))
            return None
        return batch[0]

    def consume(self, n: int, timeout: float) -> list[FakeMessage]:
        assert self.position >= 0, "read while not assigned"
        if self.stall:
            return []
        end = min(len(self.values), self.position + n)
        out = [FakeMessage(i, self.values[i]) for i in range(self.position, end)]
        self.position = end
        return out

    def close(self) -> None:
        self.closed = True


class FakeTopic(SchemaTopic):
    def __init__(self, partition: FakePartition, **options: Any) -> None:
        super().__init__(load_settings(bootstrap_servers="fake:9092"), None, **options)  # type: ignore[arg-type]
        self.partition = partition

    def _ensure(self) -> None:
        pass

    def _make_consumer(self) -> Any:
        partition = self.partition

        class Consumer:
            def __getattr__(self, name: str) -> Any:
                return getattr(partition, name)

            def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
                return [TopicPartition(tps[0].topic, 0, partition.position)]

        return Consumer()


@pytest.fixture
def partition() -> FakePartition:
    return FakePartition()


@pytest.fixture
def topic(partition: FakePartition) -> Any:
    t = FakeTopic(partition)
    yield t
    t.close()


def test_a_schema_written_right_after_a_miss_is_found(
    topic: FakeTopic, partition: FakePartition
) -> None:
    partition.append(version(0))
    assert topic.lookup(os.urandom(8)) is None  # a miss: read to the end
    partition.append(version(1))  # the producer's confirmed write, then its record
    found = topic.lookup(version(1).fingerprint)  # no time window: read again at once
    assert found is not None and found.fingerprint == version(1).fingerprint
    assert topic.records_read == 2  # each record read once


def test_garbage_costs_one_end_offset_query_and_no_reread(
    topic: FakeTopic, partition: FakePartition
) -> None:
    partition.append(*(version(n) for n in range(50)))
    assert topic.lookup(version(7).fingerprint) is not None
    polls, queries = partition.polls, partition.end_offset_queries
    for _ in range(20):
        assert topic.lookup(os.urandom(8)) is None
    assert partition.end_offset_queries - queries == 20
    assert partition.polls == polls  # nothing read: the end was already reached
    assert topic.records_read == 50


def test_concurrent_async_lookups_coalesce_on_a_read_that_started_after_them(
    topic: FakeTopic, partition: FakePartition
) -> None:
    early, late = version(1), version(2)
    partition.append(early)

    async def scenario() -> None:
        partition.gate = threading.Event()
        first = asyncio.ensure_future(topic.lookup_async(early.fingerprint))
        # read 1 is in flight: its end offset is decided, its answer not back yet
        assert await asyncio.to_thread(partition.querying.wait, 5)
        partition.append(late)  # written after read 1's end offset was taken
        waiting = [asyncio.ensure_future(topic.lookup_async(late.fingerprint)) for _ in range(30)]
        garbage = [asyncio.ensure_future(topic.lookup_async(os.urandom(8))) for _ in range(30)]
        await asyncio.sleep(0.05)
        partition.gate.set()
        assert fingerprints([await first]) == [early.fingerprint]
        # each waited for a read that started after it arrived (read 2), and shared it
        assert fingerprints(await asyncio.gather(*waiting)) == [late.fingerprint] * 30
        assert await asyncio.gather(*garbage) == [None] * 30

    asyncio.run(scenario())
    assert partition.end_offset_queries == 2
    assert topic.records_read == 2


def test_lookup_async_does_not_block_the_loop(topic: FakeTopic, partition: FakePartition) -> None:
    partition.append(version(3))

    async def scenario() -> None:
        partition.gate = threading.Event()
        lookup = asyncio.ensure_future(topic.lookup_async(version(3).fingerprint))
        assert await asyncio.to_thread(partition.querying.wait, 5)
        ticks = 0
        for _ in range(5):  # the loop runs while the read waits on the "broker"
            await asyncio.sleep(0)
            ticks += 1
        assert not lookup.done() and ticks == 5
        partition.gate.set()
        assert (await lookup) is not None

    asyncio.run(scenario())
    reader_threads = [t.name for t in threading.enumerate() if t.name.startswith("kit-schema")]
    assert len(reader_threads) == 1


def test_a_cancelled_lookup_does_not_cancel_the_shared_read(
    topic: FakeTopic, partition: FakePartition
) -> None:
    partition.append(version(4))

    async def scenario() -> None:
        partition.gate = threading.Event()
        a = asyncio.ensure_future(topic.lookup_async(version(4).fingerprint))
        b = asyncio.ensure_future(topic.lookup_async(version(4).fingerprint))
        assert await asyncio.to_thread(partition.querying.wait, 5)
        a.cancel()
        partition.gate.set()
        assert (await b) is not None
        assert a.cancelled()

    asyncio.run(scenario())


def test_sync_lookups_from_many_threads(topic: FakeTopic, partition: FakePartition) -> None:
    schemas = [version(n) for n in range(40)]
    errors: list[BaseException] = []
    found: list[Schema | None] = []

    def writer() -> None:
        for schema in schemas:
            partition.append(schema)
            time.sleep(0.001)

    def reader() -> None:
        try:
            for schema in schemas:
                wanted = schema.fingerprint
                deadline = time.monotonic() + 5
                while (got := topic.lookup(wanted)) is None and time.monotonic() < deadline:
                    pass
                found.append(got)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer)]
    threads += [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []  # FakePartition fails if two threads use the consumer at once
    assert len(found) == 8 * 40 and all(f is not None for f in found)
    assert topic.records_read == 40  # every record read exactly once


def test_a_read_that_cannot_reach_the_end_raises(partition: FakePartition) -> None:
    partition.append(version(5))
    partition.stall = True
    topic = FakeTopic(partition, timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(BrokerError, match="not read to its end offset 1"):
            topic.lookup(version(5).fingerprint)
        assert time.monotonic() - started < 2
    finally:
        topic.close()


def test_tombstones_bad_values_and_errors_are_skipped(
    topic: FakeTopic, partition: FakePartition
) -> None:
    partition.values += [None, b"not json", b'{"type": "nope"}']
    partition.append(version(6))
    assert topic.lookup(version(6).fingerprint) is not None
    assert topic.records_read == 4
    eof = KafkaError(KafkaError._PARTITION_EOF)
    topic._take(FakeMessage(4, None, eof))  # an end-of-partition event is not a record
    assert topic.records_read == 4


def test_a_topic_made_again_is_read_from_its_start(
    topic: FakeTopic, partition: FakePartition
) -> None:
    partition.append(version(8), version(9))
    assert topic.lookup(version(9).fingerprint) is not None
    partition.values = []
    partition.append(version(10))  # deleted and made again: now ends before our position
    assert topic.lookup(version(10).fingerprint) is not None


def test_close_stops_the_thread_and_consumer(partition: FakePartition) -> None:
    topic = FakeTopic(partition)
    partition.append(version(11))
    assert asyncio.run(topic.lookup_async(version(11).fingerprint)) is not None
    topic.close()
    assert partition.closed
    assert not [t for t in threading.enumerate() if t.name.startswith("kit-schema-topic")]
    with pytest.raises(KitError, match="closed"):
        topic.lookup(os.urandom(8))
    with pytest.raises(KitError, match="closed"):
        asyncio.run(topic.lookup_async(os.urandom(8)))
    # known schemas are still answered from memory
    assert topic.lookup(version(11).fingerprint) is not None
    topic.close()  # twice is fine


def test_the_owners_producer_is_ignored(partition: FakePartition) -> None:
    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"SchemaTopic used the owner's producer: {name}")

    topic = SchemaTopic(load_settings(bootstrap_servers="fake:9092"), None, Untouchable())  # type: ignore[arg-type]
    assert topic._producer is None
    topic.close()


# --- Codec: UnknownWriterSchema, resolve(), and the async resolver ---------------------


def test_unknown_writer_schema_names_the_fingerprint() -> None:
    schema = version(12)
    data = Codec().encode_datum(schema, {"id": "x"})
    with pytest.raises(UnknownWriterSchema) as caught:
        Codec().decode_any(data)
    assert caught.value.fingerprint == schema.fingerprint
    assert str(caught.value) == f"unknown writer schema (fingerprint {schema.fingerprint.hex()})"
    assert isinstance(caught.value, DecodeError)
    with pytest.raises(UnknownWriterSchema, match=r"\) for unit.Thing$") as caught:
        Codec().decode_dict(data, version(13))
    assert caught.value.fingerprint == schema.fingerprint


def test_a_codec_with_an_async_resolver_never_blocks_and_resolves_on_request() -> None:
    writer, reader = version(14), version(15)
    calls: list[bytes] = []

    async def lookup(fp: bytes) -> Schema | None:
        calls.append(fp)
        await asyncio.sleep(0)
        return writer if fp == writer.fingerprint else None

    codec = Codec(async_resolver=lookup)
    data = Codec().encode_datum(writer, {"id": "x"})

    async def scenario() -> None:
        with pytest.raises(UnknownWriterSchema) as caught:
            codec.decode_dict(data, reader)
        assert calls == []  # decode did not call (or block on) the resolver
        assert await codec.resolve(caught.value.fingerprint)
        assert codec.decode_dict(data, reader) == {"id": "x", **{f"f{i}": i for i in range(15)}}
        assert await codec.resolve(writer.fingerprint)  # cached: no second call
        assert calls == [writer.fingerprint]
        assert not await codec.resolve(b"\x00" * 8)
        with pytest.raises(UnknownWriterSchema):
            codec.decode_any(Codec().encode_datum(version(16), {"id": "y"}))

    asyncio.run(scenario())


def test_resolve_with_only_a_sync_resolver_runs_it_off_the_loop() -> None:
    writer = version(17)
    threads: list[str] = []

    def lookup(fp: bytes) -> Schema | None:
        threads.append(threading.current_thread().name)
        return writer if fp == writer.fingerprint else None

    codec = Codec(resolver=lookup)

    async def scenario() -> None:
        assert await codec.resolve(writer.fingerprint)

    asyncio.run(scenario())
    assert threads and threads[0] != threading.main_thread().name
    assert not asyncio.run(Codec().resolve(writer.fingerprint))  # no resolver at all


def test_copies_of_a_schema_are_parsed_once(
    topic: FakeTopic, partition: FakePartition, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every start writes its schemas again: a reader must not parse each copy (24k records
    of a CI run's _kit_schemas took over 10 s to read, parsing each)."""
    partition.append(*[version(1)] * 500, version(2), *[version(1)] * 500)
    wanted = version(2).fingerprint
    parsed: list[str] = []
    real = Schema.from_json

    def counting(text: str, **kwargs: Any) -> Schema:
        parsed.append(text)
        return real(text, **kwargs)

    monkeypatch.setattr(Schema, "from_json", staticmethod(counting))
    found = topic.lookup(wanted)
    assert found is not None and found.fingerprint == wanted
    assert topic.records_read == 1001 and len(parsed) == 2
