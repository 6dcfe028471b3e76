"""Recordings of registry-framed values (format 2), over confluent-kafka's mock:// registry.

A recording carries the schema of every registry id (a WriterSchema entry, then a SchemaId
entry naming it), so it is decoded with no registry at all, and replayed into another
registry whose ids differ. No broker: replay's re-framing is tested through Reframer, and
replay() stops before connecting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import fastavro
import pytest
from fastavro import schemaless_writer

from kit.cli import main as kit_main
from kit.codec import Codec, registry_header
from kit.config import Settings, load_settings
from kit.errors import ConfigError
from kit.replay import Record, RecordingError, RecordingReader, RecordingWriter, read_schemas
from kit.replay.format import RECORD_SCHEMA, SCHEMA_ENTRY_SCHEMA
from kit.replay.replay import replay
from kit.replay.schemas import Reframer, SchemaFinder, public_url, target_registry
from kit.replay.shadow import shadow
from kit.schema import Schema, SchemaRepository
from kit.testing.harness import Harness
from kit.transport.registry_format import RegistryFormat, forget_client
from tests.fixtures import billing
from tests.integration.helpers import order
from tests.unit.test_shadow import billing_v2

ROOT = Path(__file__).resolve().parents[2]
READING = Schema.from_json((ROOT / "schemas" / "bench" / "Reading.avsc").read_text())
OTHER = Schema.from_json(
    json.dumps({"type": "record", "name": "t.Other", "fields": [{"name": "n", "type": "long"}]})
)
TOPICS = {"readings": 2}


def body(n: int) -> bytes:
    buf = io.BytesIO()
    reading = {"id": n, "sensor": f"s-{n}", "site": "lab", "value": n / 2, "unit": "C"}
    schemaless_writer(buf, READING.parsed, {**reading, "taken_at": 1_000 + n, "ok": True})
    return buf.getvalue()


def framed(schema_id: int, n: int) -> bytes:
    return registry_header(schema_id) + body(n)


def rec(n: int, value: bytes | None) -> Record:
    return Record("readings", n % 2, n, 1_700_000_000_000 + n, 1, f"k-{n}".encode(), (), value)


@pytest.fixture
def registry() -> Iterator[Settings]:
    """Settings with a mock:// registry of this test's own."""
    url = f"mock://replay-{uuid.uuid4().hex[:8]}"
    yield load_settings({}, bootstrap_servers="memory", schema_registry_url=url)
    forget_client(url)


def entries(path: Path) -> list[str]:
    """The kind of each entry of a recording, in file order, read as a plain Avro file."""
    with path.open("rb") as fo:
        rows = list(fastavro.reader(fo, return_record_name=True))
    return [name.rpartition(".")[2] for name, _datum in rows]


def test_a_recording_of_registry_ids_is_format_2_and_carries_their_schemas(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.kitrec"
    with RecordingWriter(path, topics=TOPICS) as writer:
        writer.write(rec(0, b"plain bytes"))
        assert writer.format_version == "1"
        writer.add_schema_id(42, READING, "http://registry:8081")
        writer.add_schema_id(42, READING, "http://registry:8081")  # once per id
        for n in range(1, 4):
            writer.write(rec(n, framed(42, n)))
    assert entries(path) == ["Record", "WriterSchema", "SchemaId", "Record", "Record", "Record"]
    with path.open("rb") as fo:
        assert fastavro.reader(fo).metadata["kit.replay.format"] == "2"
    with RecordingReader(path, verify_values=True) as reader:
        records = [r for _i, r in reader]
        assert reader.info.format_version == "2"
        assert reader.schema_ids == {42: READING.fingerprint}
        assert reader.schemas[registry_header(42)].canonical == READING.canonical
        assert reader.unverified == 0
    assert [r.schema_id for r in records] == [None, 42, 42, 42]
    assert set(read_schemas(path)) == {READING.fingerprint, registry_header(42)}


def test_the_files_schemas_decode_registry_framed_values_with_no_registry(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.kitrec"
    with RecordingWriter(path, topics=TOPICS) as writer:
        writer.add_schema_id(7, READING, "mock://src")
        writer.write(rec(3, framed(7, 3)))
    with RecordingReader(path) as reader:
        (_i, record), *_ = list(reader)
        codec = Codec()
        for key, schema in reader.schemas.items():
            codec.add_writer(key, schema)
    assert codec.decode_any(record.value)["sensor"] == "s-3"


def test_a_recording_without_ids_stays_format_1(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    with RecordingWriter(path, topics=TOPICS) as writer:
        writer.add_schema(READING)
        writer.write(rec(1, b"\xc3\x01" + READING.fingerprint + body(1)))
    with path.open("rb") as fo:
        assert fastavro.reader(fo).metadata["kit.replay.format"] == "1"


def write_old_format(path: Path, version: str) -> None:
    """A recording as kit wrote it before format 2: two entry types, format `version`."""
    rows = [
        ("kit.replay.WriterSchema", {"fingerprint": READING.fingerprint, "schema": READING.text}),
        (
            "kit.replay.Record",
            {
                "topic": "readings",
                "partition": 1,
                "offset": 5,
                "timestamp": 9,
                "timestamp_type": 1,
                "key": None,
                "headers": [],
                "value": b"\xc3\x01" + READING.fingerprint + body(5),
            },
        ),
    ]
    meta = {"kit.replay.format": version, "kit.replay.topics": json.dumps(TOPICS)}
    with path.open("wb") as fo:
        schema = fastavro.parse_schema([RECORD_SCHEMA, SCHEMA_ENTRY_SCHEMA])
        fastavro.writer(fo, schema, rows, metadata=meta)


def test_a_format_1_file_of_an_older_kit_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "old.kitrec"
    write_old_format(path, "1")
    with RecordingReader(path, verify_values=True) as reader:
        records = [r for _i, r in reader]
        assert reader.info.format_version == "1"
        assert list(reader.schemas) == [READING.fingerprint]
    assert [(r.offset, r.fingerprint) for r in records] == [(5, READING.fingerprint)]


def test_a_newer_format_is_refused_naming_the_versions_read(tmp_path: Path) -> None:
    path = tmp_path / "new.kitrec"
    write_old_format(path, "3")
    with pytest.raises(RecordingError, match=r"format 3 is not supported \(this kit reads 1 and 2"):
        RecordingReader(path)


def test_a_schema_id_whose_schema_is_not_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    with RecordingWriter(path, topics=TOPICS) as writer:
        writer.add_schema_id(1, READING)
        entry = {"id": 2, "registry": "", "fingerprint": OTHER.fingerprint}
        writer._writer.write(("kit.replay.SchemaId", entry))
    with pytest.raises(RecordingError, match=r"schema id 2 names fingerprint [0-9a-f]+, whose"):
        list(RecordingReader(path))


def test_one_id_given_two_schemas_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    with RecordingWriter(path, topics=TOPICS) as writer:
        writer.add_schema_id(1, READING)
        with pytest.raises(RecordingError, match="schema id 1 is fingerprint"):
            writer.add_schema_id(1, OTHER)
        writer.add_schema(OTHER)
        entry = {"id": 1, "registry": "", "fingerprint": OTHER.fingerprint}
        writer._writer.write(("kit.replay.SchemaId", entry))
    with pytest.raises(RecordingError, match="record 0: schema id 1 is fingerprint"):
        list(RecordingReader(path))


def test_verify_decodes_registry_framed_values_with_their_recorded_schema(tmp_path: Path) -> None:
    path = tmp_path / "r.kitrec"
    with RecordingWriter(path, topics=TOPICS) as writer:
        writer.add_schema_id(9, READING)
        writer.write(rec(0, framed(9, 0)))
        writer.write(rec(1, registry_header(9) + b"\x02\x7f"))
    with pytest.raises(RecordingError) as caught:
        list(RecordingReader(path, verify_values=True))
    assert caught.value.index == 1
    assert "does not match its schema bench.Reading" in str(caught.value)


def test_public_url_drops_credentials() -> None:
    assert public_url("https://u:secret@reg.example:8081/api") == "https://reg.example:8081/api"
    assert public_url("http://reg:8081") == "http://reg:8081"


def test_the_recorder_writes_each_ids_schema_before_its_first_value(
    tmp_path: Path, registry: Settings
) -> None:
    source = RegistryFormat(registry)
    header = source.register(READING, "readings")
    schema_id = int.from_bytes(header[1:], "big")
    path = tmp_path / "r.kitrec"
    with RecordingWriter(path, topics=TOPICS) as writer:
        finder = SchemaFinder(writer, SchemaRepository(), None, RegistryFormat(registry))
        for n in range(3):
            value = framed(schema_id, n)
            finder.see(value)
            writer.write(rec(n, value))
        finder.see(framed(schema_id + 1000, 9))  # an id the registry does not know
    assert finder.missing_ids == {schema_id + 1000}
    assert entries(path) == ["WriterSchema", "SchemaId", "Record", "Record", "Record"]
    with RecordingReader(path, verify_values=True) as reader:
        list(reader)
        assert reader.schema_ids == {schema_id: READING.fingerprint}
    with path.open("rb") as fo:
        ids = [d for d in fastavro.reader(fo) if "registry" in d]
    assert ids == [
        {
            "id": schema_id,
            "registry": registry.schema_registry_url,
            "fingerprint": READING.fingerprint,
        }
    ]


def test_the_recorder_refuses_registry_framed_values_without_a_registry(tmp_path: Path) -> None:
    with RecordingWriter(tmp_path / "r.kitrec", topics=TOPICS) as writer:
        finder = SchemaFinder(writer, SchemaRepository(), None, None)
        finder.see(b"\xc3\x01" + b"\x00" * 8 + b"x")  # single-object: no registry needed
        with pytest.raises(ConfigError) as caught:
            finder.see(framed(5, 1), "readings[1]@1")
    assert caught.value.setting == "KIT_SCHEMA_REGISTRY_URL"
    assert "readings[1]@1 is registry-framed (schema id 5)" in str(caught.value)


def test_replay_reframes_values_with_the_target_registrys_ids(registry: Settings) -> None:
    target = RegistryFormat(registry)
    target.register(OTHER, "elsewhere")  # the target's ids are not the recording's
    target.register(OTHER, "more")
    recorded = {registry_header(1): READING}
    reframer = Reframer(recorded, target)
    first = reframer.value("readings.copy", framed(1, 4))
    again = reframer.value("readings.copy", framed(1, 5))
    assert first is not None and again is not None
    latest = target.client.get_latest_version("readings.copy-value")
    assert latest.schema_id != 1
    assert first == registry_header(latest.schema_id) + body(4)
    assert again == registry_header(latest.schema_id) + body(5)
    assert reframer.reframed == 2 and reframer.ids == {1: latest.schema_id}
    # not a recorded id, a tombstone, a single-object value: published as recorded
    assert reframer.value("readings.copy", framed(2, 4)) == framed(2, 4)
    assert reframer.value("readings.copy", None) is None
    plain = b"\xc3\x01" + READING.fingerprint + body(1)
    assert reframer.value("readings.copy", plain) == plain
    assert reframer.reframed == 2


def test_replay_registers_under_the_record_strategys_subject(registry: Settings) -> None:
    target = RegistryFormat(
        registry.model_copy(update={"schema_registry_subject_strategy": "record"})
    )
    reframed = Reframer({registry_header(3): READING}, target).value("any.topic", framed(3, 1))
    latest = target.client.get_latest_version("bench.Reading")
    assert reframed == registry_header(latest.schema_id) + body(1)


def format_2_file(path: Path) -> Path:
    with RecordingWriter(path, topics=TOPICS) as writer:
        writer.add_schema_id(1, READING, "mock://src")
        writer.write(rec(0, framed(1, 0)))
    return path


def test_replay_of_format_2_without_a_target_registry_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KIT_SCHEMA_REGISTRY_URL", raising=False)
    path = format_2_file(tmp_path / "r.kitrec")
    settings = load_settings({}, bootstrap_servers="127.0.0.1:1")  # never reached
    with pytest.raises(ConfigError) as caught:
        replay(path, settings=settings, topic_map={"readings": "copy"})
    assert caught.value.setting == "KIT_SCHEMA_REGISTRY_URL"
    assert "registry-framed values (recording format 2)" in str(caught.value)
    with pytest.raises(ConfigError, match="KIT_SCHEMA_REGISTRY_URL"):
        target_registry(settings, None, path)
    assert target_registry(settings, "mock://given", path).url == "mock://given"
    forget_client("mock://given")


def test_cli_replay_of_format_2_without_a_registry_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KIT_SCHEMA_REGISTRY_URL", raising=False)
    path = format_2_file(tmp_path / "r.kitrec")
    code = kit_main(["replay", str(path), "--into", "127.0.0.1:1", "--topic-map", "readings=c"])
    assert code == 2
    assert "KIT_SCHEMA_REGISTRY_URL" in capsys.readouterr().err


def registry_framed_copy(source: Path, path: Path) -> dict[bytes, int]:
    """`source` rewritten as a registry would have framed it: ids 100, 101, ..."""
    ids: dict[bytes, int] = {}
    with RecordingReader(source) as reader:
        records = [r for _i, r in reader]
        schemas = reader.schemas
        with RecordingWriter(path, topics=reader.info.topics) as writer:
            for r in records:
                fp = r.fingerprint
                if fp is not None:
                    schema_id = ids.setdefault(fp, 100 + len(ids))
                    writer.add_schema_id(schema_id, schemas[fp], "mock://elsewhere")
                    assert r.value is not None
                    r = dataclasses.replace(r, value=registry_header(schema_id) + r.value[10:])
                writer.write(r)
    return ids


def test_shadow_replay_decodes_registry_framed_records_with_no_registry(tmp_path: Path) -> None:
    h = Harness(billing.service)
    for n in range(6):
        h.send(order(n, quantity=1 if n != 4 else 5), key=f"o-{n}")
    asyncio.run(h.run())
    h.save_recording(tmp_path / "live.kitrec")
    ids = registry_framed_copy(tmp_path / "live.kitrec", tmp_path / "framed.kitrec")
    assert len(ids) == 2  # OrderPlaced and InvoiceIssued
    same = asyncio.run(shadow(billing.service, tmp_path / "framed.kitrec"))
    assert same.ok, str(same)
    assert (same.inputs, same.recorded_outputs, same.shadow_outputs) == (6, 6, 6)
    changed = asyncio.run(shadow(billing_v2(), tmp_path / "framed.kitrec"))
    assert [c.path for d in changed.differences for c in d.changes] == ["total_cents"]


async def test_a_harness_in_registry_mode_saves_a_recording_another_harness_replays(
    registry: Settings, tmp_path: Path
) -> None:
    def harness(url: str | None) -> Harness:
        settings = load_settings(
            env={}, bootstrap_servers="memory", schema_registry_url=url, retry_backoff=0.0
        )
        return Harness(billing.service, settings=settings)

    source = harness(registry.schema_registry_url)
    source.send(order(1))
    await source.run()
    path = tmp_path / "framed.kitrec"
    source.save_recording(path)
    assert entries(path).count("SchemaId") == 2  # input and output: ids with their schemas

    target = harness(None)  # no registry: the file's schemas decode the framed records
    topic = order(1).kit_schema().full_name
    assert target.feed_recording(path, topics=[topic]) == 1
    await target.run()
    assert [i.order_id for i in target.emitted(billing.InvoiceIssued)] == ["o-1"]
    assert target.dead_letters(topic) == []


def test_the_recorder_keeps_values_of_non_avro_ids_as_bytes_with_one_warning(
    tmp_path: Path, registry: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from confluent_kafka.schema_registry import Schema as RegistrySchema

    source = RegistryFormat(registry)
    json_id = source.client.register_schema("j-value", RegistrySchema('{"type": "object"}', "JSON"))
    path = tmp_path / "r.kitrec"
    with RecordingWriter(path, topics=TOPICS) as writer:
        finder = SchemaFinder(writer, SchemaRepository(), None, RegistryFormat(registry))
        for n in range(3):
            value = registry_header(json_id) + b'{"n": %d}' % n
            finder.see(value, f"j[0]@{n}")
            writer.write(rec(n, value))
    assert finder.missing_ids == {json_id}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"schema id {json_id} cannot be recorded (schema id {json_id} is a JSON schema); "
        "its values are kept as bytes"
    ]
    assert entries(path) == ["Record", "Record", "Record"]
    with RecordingReader(path, verify_values=True) as reader:
        assert [r.value for _i, r in reader] == [
            b"\x00" + json_id.to_bytes(4, "big") + b'{"n": %d}' % n for n in range(3)
        ]
