"""The recording file format, time parsing and replay ordering, with no broker."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import fastavro
import pytest
from fastavro import schemaless_writer

from kit.cli import main as kit_main
from kit.replay import (
    Record,
    RecordingError,
    RecordingReader,
    RecordingWriter,
    merge_by_time,
    parse_time,
    read_schemas,
)
from kit.replay.format import FILE_SCHEMA
from kit.schema import Schema

ROOT = Path(__file__).resolve().parents[2]
READING = Schema.from_json((ROOT / "schemas" / "bench" / "Reading.avsc").read_text())


def reading_value(n: int) -> bytes:
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + READING.fingerprint)
    reading = {"id": n, "sensor": f"s-{n}", "site": "lab", "value": n / 2, "unit": "C"}
    schemaless_writer(buf, READING.parsed, {**reading, "taken_at": 1_000 + n, "ok": True})
    return buf.getvalue()


def sample(n: int) -> Record:
    """A varied record: every third has no key, every fifth is a tombstone."""
    return Record(
        topic="orders" if n % 2 else "payments",
        partition=n % 3,
        offset=n,
        timestamp=1_700_000_000_000 + n,
        timestamp_type=1,
        key=None if n % 3 == 0 else f"key-{n}".encode(),
        headers=(("kit-type", b"bench.Reading"), ("trace", None), ("bin", bytes([n % 256, 0]))),
        value=None if n % 5 == 0 else reading_value(n),
    )


TOPICS = {"orders": 3, "payments": 3}


def write_file(path: Path, count: int, *, codec: str = "deflate", every: int = 0) -> list[Record]:
    """A recording of `count` sample records; `every` > 0 flushes a block every so many."""
    records = [sample(n) for n in range(count)]
    with RecordingWriter(path, topics=TOPICS, source="test:9092", codec=codec) as writer:
        writer.add_schema(READING)
        for n, rec in enumerate(records, 1):
            writer.write(rec)
            if every and n % every == 0:
                writer.flush()
    return records


@pytest.mark.parametrize("codec", ["deflate", "null"])
def test_round_trip_keeps_every_field(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "r.kitrec"
    written = write_file(path, 500, codec=codec)
    with RecordingReader(path, verify_values=True) as reader:
        read = list(reader)
        assert reader.info.format_version == "1"
        assert reader.info.source == "test:9092"
        assert reader.info.topics == TOPICS
        assert reader.info.codec == codec
        assert datetime.fromisoformat(reader.info.created_at).tzinfo is not None
        assert list(reader.schemas) == [READING.fingerprint]
        assert reader.schemas[READING.fingerprint].canonical == READING.canonical
    assert [i for i, _ in read] == list(range(500))
    assert [r for _, r in read] == written
    assert read_schemas(path)[READING.fingerprint].full_name == "bench.Reading"


def test_the_file_is_a_plain_avro_container(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    write_file(path, 10)
    with path.open("rb") as fo:
        rows = list(fastavro.reader(fo))
    assert len(rows) == 11  # one writer schema entry, then ten records
    assert rows[0]["fingerprint"] == READING.fingerprint
    assert rows[1]["topic"] == "payments" and rows[1]["offset"] == 0


def test_a_writer_schema_is_written_once(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    with RecordingWriter(path, topics=TOPICS) as writer:
        writer.add_schema(READING)
        writer.add_schema(READING)
        assert writer.has_schema(READING.fingerprint)
    with path.open("rb") as fo:
        assert len(list(fastavro.reader(fo))) == 1


def test_a_record_of_an_undeclared_topic_is_refused(tmp_path: Path) -> None:
    with RecordingWriter(tmp_path / "r.kitrec", topics={"orders": 1}) as writer:
        with pytest.raises(RecordingError, match=r"orders\[2\] is not among the declared"):
            writer.write(Record("orders", 2, 0, 0))


def test_records_written_before_an_abandoned_writer_flushed_are_readable(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    writer = RecordingWriter(path, topics=TOPICS, flush_interval=3600)
    for n in range(100):
        writer.write(sample(n))
    writer.flush()
    for n in range(100, 150):
        writer.write(sample(n))  # still in memory: lost if the process dies now
    assert [i for i, _ in RecordingReader(path)] == list(range(100))
    writer.close()
    assert len(list(RecordingReader(path))) == 150


def test_keyboard_interrupt_inside_the_writer_leaves_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    with pytest.raises(KeyboardInterrupt), RecordingWriter(path, topics=TOPICS) as writer:
        for n in range(1000):
            writer.write(sample(n))
            if n == 700:
                raise KeyboardInterrupt
    assert len(list(RecordingReader(path))) == 701


WRITER_SCRIPT = """
import sys, threading
from kit.replay.file import Record, RecordingWriter
from kit.replay.terminal import stop_on_sigint
stop = threading.Event()
count = 0
with RecordingWriter(sys.argv[1], topics={"t": 1}, flush_interval=0.05) as writer, \\
        stop_on_sigint(stop):
    while not stop.is_set():
        writer.write(Record("t", 0, count, count, 1, b"k", (("h", b"v"),), b"x" * 50))
        count += 1
        if count == 1000:
            print("ready", flush=True)
print(count, flush=True)
"""


def test_ctrl_c_to_a_writing_process_leaves_a_complete_file(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER_SCRIPT), str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    written = int(out.strip())
    records = [r for _, r in RecordingReader(path)]
    assert len(records) == written >= 1000
    assert [r.offset for r in records] == list(range(written))


def test_truncated_file_names_file_and_record(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    write_file(path, 1000, every=100)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    seen = []
    with pytest.raises(RecordingError) as caught:
        for index, _ in RecordingReader(path):
            seen.append(index)
    err = caught.value
    assert err.path == str(path) and err.index == len(seen)
    assert err.index % 100 == 0 and 0 < err.index < 1000  # the first record of the cut block
    assert str(path) in str(err) and f"record {err.index}" in str(err)
    assert "truncated" in str(err)


def test_losing_the_last_bytes_is_reported_at_the_last_block(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    write_file(path, 250, every=100)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(RecordingError, match=r"record 200: corrupt or truncated"):
        list(RecordingReader(path))


def test_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    write_file(path, 3)
    path.write_bytes(b"PK\x03\x04" + path.read_bytes()[4:])
    with pytest.raises(RecordingError, match="not an Avro object container file") as caught:
        RecordingReader(path)
    assert caught.value.index is None and str(path) in str(caught.value)


def test_an_avro_file_that_is_no_recording(tmp_path: Path) -> None:
    path = tmp_path / "other.avro"
    with path.open("wb") as fo:
        fastavro.writer(fo, {"type": "record", "name": "X", "fields": []}, [{}])
    with pytest.raises(RecordingError, match="not a kit recording"):
        RecordingReader(path)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="cannot open"):
        RecordingReader(tmp_path / "nope.kitrec")
    (tmp_path / "empty.kitrec").write_bytes(b"")
    with pytest.raises(RecordingError, match="magic empty"):
        RecordingReader(tmp_path / "empty.kitrec")


def append_raw_block(path: Path, count: int, data: bytes) -> None:
    """Append a block of `count` entries whose bytes are `data`, with the right sync marker."""
    with path.open("rb") as fo:
        sync = fastavro.block_reader(fo)._header["sync"]
    body = io.BytesIO()
    schemaless_writer(body, {"type": "long"}, count)
    schemaless_writer(body, {"type": "long"}, len(data))
    with path.open("ab") as fo:
        fo.write(body.getvalue() + data + sync)


def test_a_record_not_matching_the_file_schema(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    write_file(path, 5, codec="null")
    bad = io.BytesIO()
    schemaless_writer(bad, {"type": "long"}, 0)  # union branch: kit.replay.Record
    schemaless_writer(bad, {"type": "string"}, "orders")
    bad.write(b"\x01")  # a partition, then nothing: the record stops short
    append_raw_block(path, 1, bad.getvalue())
    with pytest.raises(RecordingError, match=r"record 5: does not match the recording schema"):
        list(RecordingReader(path))


def test_a_value_not_matching_its_writer_schema(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    with RecordingWriter(path, topics=TOPICS) as writer:
        writer.add_schema(READING)
        writer.write(sample(1))
        garbage = b"\xc3\x01" + READING.fingerprint + b"\x02\x7f"
        writer.write(Record("orders", 1, 7, 0, 1, b"k", (), garbage))
    assert len(list(RecordingReader(path))) == 2  # values are not checked unless asked
    with pytest.raises(RecordingError) as caught:
        list(RecordingReader(path, verify_values=True))
    assert caught.value.index == 1
    assert "value of orders[1]@7 does not match its schema bench.Reading" in str(caught.value)


def test_a_writer_schema_with_the_wrong_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    with RecordingWriter(path, topics=TOPICS) as writer:
        writer._writer.write(
            ("kit.replay.WriterSchema", {"fingerprint": b"\0" * 8, "schema": READING.text})
        )
    with pytest.raises(RecordingError, match="has fingerprint"):
        list(RecordingReader(path))


def test_trailing_garbage_in_a_block(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    write_file(path, 2, codec="null")
    good = io.BytesIO()
    with RecordingWriter(tmp_path / "one.kitrec", topics=TOPICS, codec="null") as one:
        one.write(sample(1))
    with (tmp_path / "one.kitrec").open("rb") as fo:
        block = next(iter(fastavro.block_reader(fo)))
        good.write(block.bytes_.getvalue())
    append_raw_block(path, 1, good.getvalue() + b"\0\0\0")
    with pytest.raises(RecordingError, match=r"record 2: the block of records 2\.\.2 ends with 3"):
        list(RecordingReader(path))


def test_the_schema_constant_is_what_the_file_declares(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    write_file(path, 1)
    with path.open("rb") as fo:
        declared = json.loads(fastavro.reader(fo).metadata["avro.schema"])
    assert [s["name"] for s in declared] == [
        "kit.replay.Record",
        "kit.replay.WriterSchema",
        "kit.replay.SchemaId",
    ]
    names = [f["name"] for f in declared[0]["fields"]]
    assert names == [f["name"] for f in FILE_SCHEMA[0]["fields"]]
    assert names == [
        "topic",
        "partition",
        "offset",
        "timestamp",
        "timestamp_type",
        "key",
        "headers",
        "value",
    ]


def test_cli_replay_of_a_corrupt_file_fails_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.kitrec"
    path.write_bytes(b"nope" * 10)
    assert kit_main(["replay", str(path), "--into", "127.0.0.1:1", "-q"]) == 1
    assert f"kit replay: {path}: not an Avro object container file" in capsys.readouterr().err


def test_cli_replay_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        kit_main(["replay", "f", "--speed", "0"])
    with pytest.raises(SystemExit):
        kit_main(["replay", "f", "--topic-map", "nonsense"])
    err = capsys.readouterr().err
    assert "must be positive" in err and "expected OLD=NEW" in err


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(minutes=90)),
        ("1.5h", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
    ],
)
def test_durations_mean_now_minus(text: str, ago: timedelta) -> None:
    assert parse_time(text, now=NOW) == NOW - ago


def test_iso_times() -> None:
    assert parse_time("2026-01-31T12:00:00Z") == datetime(2026, 1, 31, 12, tzinfo=UTC)
    plus2 = timezone(timedelta(hours=2))
    assert parse_time("2026-01-31T12:00:00+02:00") == datetime(2026, 1, 31, 12, tzinfo=plus2)
    local = parse_time("2026-01-31T12:00")
    assert local.tzinfo is not None and local.replace(tzinfo=None) == datetime(2026, 1, 31, 12)
    assert parse_time("2026-01-31") == datetime(2026, 1, 31).astimezone()


@pytest.mark.parametrize("text", ["", "10", "yesterday", "10 parsecs", "5m ago", "2026-13-01"])
def test_bad_times(text: str) -> None:
    with pytest.raises(ValueError, match="neither an ISO-8601 time"):
        parse_time(text, now=NOW)


def test_merge_by_time_interleaves_partitions_but_keeps_each_in_order() -> None:
    # Partition 0 came first in the file, then partition 1; partition 1 has a late record.
    p0 = [Record("t", 0, n, ts) for n, ts in enumerate([10, 20, 30, 40])]
    p1 = [Record("t", 1, n, ts) for n, ts in enumerate([15, 5, 35])]
    items = list(enumerate(p0 + p1))
    merged = [r for _, r in merge_by_time(iter(items))]
    assert [(r.partition, r.timestamp) for r in merged] == [
        (0, 10),
        (1, 15),
        (1, 5),
        (0, 20),
        (0, 30),
        (1, 35),
        (0, 40),
    ]
    tiny = [r for _, r in merge_by_time(iter(items), window=1)]
    assert [r for r in tiny if r.partition == 0] == p0
    assert [r for r in tiny if r.partition == 1] == p1


def test_merge_by_time_yields_what_it_read_before_a_corrupt_record() -> None:
    def items():
        yield 0, Record("t", 0, 0, 10)
        yield 1, Record("t", 1, 0, 5)
        raise RecordingError("f.kitrec", 2, "truncated")

    got = []
    with pytest.raises(RecordingError, match="record 2"):
        for _, rec in merge_by_time(items()):
            got.append(rec.timestamp)
    assert got == [5, 10]


def test_stop_on_sigint_outside_the_main_thread_is_a_no_op() -> None:
    from kit.replay.terminal import stop_on_sigint

    stop = threading.Event()
    before = signal.getsignal(signal.SIGINT)
    result = []

    def run() -> None:
        with stop_on_sigint(stop):
            result.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert result == [before] and signal.getsignal(signal.SIGINT) == before
