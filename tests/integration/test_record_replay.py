"""kit record / kit replay against a real broker: fidelity, ordering, time windows, bad files."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from kit import Client, Codec, SchemaRepository, Settings
from kit.cli import main as kit_main
from kit.replay import (
    Progress,
    Record,
    RecordingError,
    RecordingReader,
    RecordingWriter,
    read_schemas,
    record,
    replay,
)
from kit.transport.admin import TopicSpec, ensure_topics
from kit.transport.kafka import admin_client
from tests.fixtures.events import OrderPlaced
from tests.integration.helpers import order, produce_raw, read_raw

pytestmark = pytest.mark.integration


def by_partition(messages: list[Message]) -> dict[int, list[tuple[Any, ...]]]:
    """Each partition's records as (key, headers, value), in offset order."""
    out: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for m in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        out[m.partition()].append((m.key(), m.headers() or [], m.value()))
    return dict(out)


def make_topic(settings: Settings, name: str, partitions: int) -> None:
    ensure_topics(admin_client(settings), [TopicSpec(name, partitions, 1)])


def end_offset(bootstrap: str, topic: str) -> int:
    """The sum of the topic's high watermarks: how many records were ever written to it."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{topic}"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        )
    finally:
        consumer.close()


def test_record_then_replay_keeps_keys_headers_values_and_partition_order(
    kit_settings: Settings,
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    source, target = unique_name("orders"), unique_name("copy")

    async def publish() -> None:
        async with Client(kit_settings) as client:
            for n in range(90):
                headers = {"seq": str(n), "kit-test": b"\x00\xff"}
                await client.publish(order(n), key=f"c-{n % 30}", topic=source, headers=headers)

    asyncio.run(publish())
    produce_raw(
        kafka_bootstrap,
        source,
        [
            {"value": None, "key": b"c-1", "headers": [("gone", None)]},  # a tombstone
            {"value": b"not avro", "key": None, "partition": 2},
        ],
    )
    path = tmp_path / "orders.kitrec"
    assert kit_main(["record", source, "-o", str(path), "--bootstrap", kafka_bootstrap, "-q"]) == 0
    recorded = [r for _, r in RecordingReader(path, verify_values=True)]
    assert len(recorded) == 92

    mapping = f"{source}={target}"
    assert (
        kit_main(["replay", str(path), "--into", kafka_bootstrap, "--topic-map", mapping, "-q"])
        == 0
    )

    original = by_partition(read_raw(kafka_bootstrap, source, 92))
    copy = by_partition(read_raw(kafka_bootstrap, target, 92))
    assert len(original) == 3, {p: len(v) for p, v in original.items()}
    assert copy == original
    # Records of different partitions interleave in the file: find them by content.
    tombstone = next(r for r in recorded if r.value is None)
    assert tombstone.key == b"c-1"
    assert (b"c-1", [("gone", None)], None) in original[tombstone.partition]
    assert (None, [], b"not avro") in original[2]

    # The recording carries the writer schema: it decodes with no broker and no schemas/.
    schemas = read_schemas(path)
    repo = SchemaRepository()
    for schema in schemas.values():
        repo.add(schema)
    first = next(r for r in recorded if r.value and r.value.startswith(b"\xc3\x01"))
    event = Codec(repo).decode(first.value, OrderPlaced)
    assert event.order_id.startswith("o-") and first.fingerprint in schemas

    # With no local schemas, the writer schema comes from the cluster's schema topic.
    bare = kit_settings.model_copy(update={"schemas_dir": str(tmp_path)})
    again = record([source], tmp_path / "again.kitrec", settings=bare, max_records=5)
    assert again.schemas == 1 and again.unknown_fingerprints == ()
    assert read_schemas(tmp_path / "again.kitrec").keys() == schemas.keys()


def test_from_to_and_max_select_by_timestamp(
    kit_settings: Settings, kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic = unique_name("readings")
    make_topic(kit_settings, topic, 2)
    now = datetime.now(UTC)
    old_ms = int((now - timedelta(hours=1)).timestamp() * 1000)
    new_ms = int((now - timedelta(minutes=1)).timestamp() * 1000)
    rows = [
        {"value": f"old-{n}".encode(), "partition": n % 2, "timestamp": old_ms + n}
        for n in range(10)
    ] + [
        {"value": f"new-{n}".encode(), "partition": n % 2, "timestamp": new_ms + n}
        for n in range(10)
    ]
    produce_raw(kafka_bootstrap, topic, rows)

    def values(result_path: Path) -> list[bytes]:
        return sorted(r.value or b"" for _, r in RecordingReader(result_path))

    recent = record(
        [topic], tmp_path / "a", settings=kit_settings, start=now - timedelta(minutes=30)
    )
    assert recent.stopped_by == "end" and recent.records == 10
    assert values(tmp_path / "a") == sorted(f"new-{n}".encode() for n in range(10))

    early = record([topic], tmp_path / "b", settings=kit_settings, end=now - timedelta(minutes=30))
    assert early.stopped_by == "to" and early.records == 10
    assert values(tmp_path / "b") == sorted(f"old-{n}".encode() for n in range(10))

    few = record([topic], tmp_path / "c", settings=kit_settings, max_records=4)
    assert few.stopped_by == "max" and few.records == 4

    after = record([topic], tmp_path / "d", settings=kit_settings, start=now + timedelta(hours=1))
    assert after.records == 0 and len(list(RecordingReader(tmp_path / "d"))) == 0


def test_live_recording_stops_at_to_or_when_asked(
    kit_settings: Settings, kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic = unique_name("live")
    make_topic(kit_settings, topic, 2)
    produce_raw(kafka_bootstrap, topic, [{"value": b"before", "key": b"k"}])
    during = threading.Thread(
        target=produce_raw, args=(kafka_bootstrap, topic, [{"value": b"during"}])
    )

    class ProduceOnceRecording(Progress):
        def update(self, count: int) -> None:
            if count >= 1 and not during.is_alive() and during.ident is None:
                during.start()  # "before" is in the file: the recording is live now

    end = datetime.now(UTC) + timedelta(seconds=8)
    try:
        result = record(
            [topic],
            tmp_path / "live",
            settings=kit_settings,
            end=end,
            progress=ProduceOnceRecording("test", io.StringIO()),
        )
    finally:
        if during.ident is not None:
            during.join()
    assert result.stopped_by == "to" and datetime.now(UTC) >= end
    assert sorted(r.value or b"" for _, r in RecordingReader(tmp_path / "live")) == [
        b"before",
        b"during",
    ]

    stop = threading.Event()

    class StopAfterTwo(Progress):
        def update(self, count: int) -> None:
            if count >= 2:
                stop.set()  # what the first Ctrl-C does

    end = datetime.now(UTC) + timedelta(minutes=5)
    watch = StopAfterTwo("test", io.StringIO())
    stopped = record(
        [topic], tmp_path / "stopped", settings=kit_settings, end=end, stop=stop, progress=watch
    )
    assert stopped.stopped_by == "interrupt" and stopped.records == 2
    assert len(list(RecordingReader(tmp_path / "stopped"))) == 2


def test_speed_keeps_the_original_gaps_scaled(
    kit_settings: Settings, kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    source = unique_name("paced")
    make_topic(kit_settings, source, 2)
    base = int(time.time() * 1000) - 10_000
    rows = [
        {"value": b"%d" % n, "partition": n % 2, "timestamp": base + 100 * n} for n in range(11)
    ]
    produce_raw(kafka_bootstrap, source, rows)
    path = tmp_path / "paced.kitrec"
    assert record([source], path, settings=kit_settings).records == 11

    def span_ms(target: str) -> int:
        stamps = [m.timestamp()[1] for m in read_raw(kafka_bootstrap, target, 11)]
        return max(stamps) - min(stamps)

    double = unique_name("double")
    replay(path, settings=kit_settings, topic_map={source: double}, speed=2)
    assert 400 <= span_ms(double) <= 950  # 1000 ms of original time at twice the speed

    fast = unique_name("fast")
    replay(path, settings=kit_settings, topic_map={source: fast})
    assert span_ms(fast) < 400

    kept = unique_name("kept")
    replay(path, settings=kit_settings, topic_map={source: kept}, speed=None, keep_timestamps=True)
    stamps = sorted(m.timestamp()[1] for m in read_raw(kafka_bootstrap, kept, 11))
    assert stamps == [base + 100 * n for n in range(11)]


def test_replay_into_a_topic_with_fewer_partitions_goes_by_key(
    kit_settings: Settings, kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    source, target = unique_name("wide"), unique_name("narrow")
    make_topic(kit_settings, source, 3)
    make_topic(kit_settings, target, 2)
    rows = [{"value": b"%d" % n, "key": b"k%d" % (n % 5), "partition": n % 3} for n in range(60)]
    produce_raw(kafka_bootstrap, source, rows)
    path = tmp_path / "wide.kitrec"
    record([source], path, settings=kit_settings)
    result = replay(path, settings=kit_settings, topic_map={source: target})
    assert result.by_key == (target,) and result.published == 60 and result.created == ()

    def per_key(messages: list[Message]) -> dict[bytes, list[bytes]]:
        out: dict[bytes, list[bytes]] = defaultdict(list)
        for m in sorted(messages, key=lambda m: (m.partition(), m.offset())):
            out[m.key()].append(m.value())
        return dict(out)

    copied = read_raw(kafka_bootstrap, target, 60)
    partitions_of: dict[bytes | None, set[int]] = defaultdict(set)
    for m in copied:
        partitions_of[m.key()].add(m.partition())
    assert all(len(p) == 1 for p in partitions_of.values()), partitions_of  # one per key
    recorded = [r for _, r in RecordingReader(path)]
    expected: dict[bytes, list[bytes]] = defaultdict(list)
    for r in recorded:
        assert r.key is not None and r.value is not None
        expected[r.key].append(r.value)
    assert per_key(copied) == dict(expected)


def test_replay_of_a_truncated_recording_reports_what_it_published(
    kit_settings: Settings,
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, target = unique_name("src"), unique_name("dst")
    path = tmp_path / "cut.kitrec"
    with RecordingWriter(path, topics={source: 3}) as writer:
        for n in range(1000):
            writer.write(Record(source, n % 3, n // 3, 1_000 + n, 1, b"k%d" % n, (), b"v%d" % n))
            if n % 100 == 99:
                writer.flush()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    rc = kit_main(
        ["replay", str(path), "--into", kafka_bootstrap, "--topic-map", f"{source}={target}"]
    )
    err = capsys.readouterr().err
    assert rc == 1
    with pytest.raises(RecordingError) as caught:
        list(RecordingReader(path))
    index = caught.value.index
    assert index is not None and 0 < index < 1000 and index % 100 == 0
    assert f"kit replay: {path}: record {index}: corrupt or truncated block" in err
    assert f"{index:,} record(s) were published before it" in err
    assert len(read_raw(kafka_bootstrap, target, index)) == index

    with pytest.raises(RecordingError) as again:
        replay(path, settings=kit_settings, topic_map={source: unique_name("dst2")}, speed=1000)
    assert again.value.index == index and again.value.published == index


def test_a_partial_topic_map_never_feeds_the_live_topics_again(
    kit_settings: Settings,
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 11.3: `--topic-map a=a.copy` alone used to publish b's records back into b."""
    a, b = unique_name("live-a"), unique_name("live-b")
    make_topic(kit_settings, a, 2)
    make_topic(kit_settings, b, 1)
    rows = [{"value": b"a%d" % n, "key": b"k%d" % n, "partition": n % 2} for n in range(6)]
    produce_raw(kafka_bootstrap, a, rows)
    produce_raw(kafka_bootstrap, b, [{"value": b"b%d" % n} for n in range(4)])
    path = tmp_path / "live.kitrec"
    assert kit_main(["record", a, b, "-o", str(path), "--bootstrap", kafka_bootstrap, "-q"]) == 0
    capsys.readouterr()
    copy = unique_name("a-copy")
    into = ["replay", str(path), "--into", kafka_bootstrap, "-q"]

    assert kit_main([*into, "--topic-map", f"{a}={copy}"]) == 2
    err = capsys.readouterr().err
    assert f"kit replay: configuration error: --into-original-topics: not given, so {b} " in err
    assert f"--only {a}" in err
    assert (end_offset(kafka_bootstrap, a), end_offset(kafka_bootstrap, b)) == (6, 4)
    assert copy not in admin_client(kit_settings).list_topics(timeout=10).topics

    assert kit_main([*into, "--only", a, "--topic-map", f"{a}={copy}"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert f"kit replay:   {copy}: 6 (from {a}; created)" in lines, lines
    assert "kit replay: 4 record(s) of other topics not replayed (--only)" in lines
    copied = by_partition(read_raw(kafka_bootstrap, copy, 6))
    assert copied == by_partition(read_raw(kafka_bootstrap, a, 6))
    assert end_offset(kafka_bootstrap, b) == 4

    again = unique_name("a-again")
    assert kit_main([*into, "--topic-map", f"{a}={again}", "--into-original-topics"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert f"kit replay:   {again}: 6 (from {a}; created)" in lines, lines
    assert f"kit replay:   {b}: 4 (from {b}, its original topic)" in lines, lines
    assert (end_offset(kafka_bootstrap, a), end_offset(kafka_bootstrap, b)) == (6, 8)
