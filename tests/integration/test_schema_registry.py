"""The Confluent wire format against a real schema registry (kit's local Apicurio Registry,
through the ``kit_schema_registry`` fixture) and a real broker.

Each test uses its own topics and subjects, so they share one registry.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import fastavro
import pytest

from kit.cli import main as kit_main
from kit.codec import Codec, registry_header, registry_id
from kit.config import Settings, load_settings
from kit.replay import RecordingReader, replay
from kit.schema import Schema, SchemaRepository
from kit.transport.admin import TopicSpec, ensure_topics
from kit.transport.kafka import admin_client
from kit.transport.registry_format import RegistryFormat, forget_client
from tests.integration.helpers import produce_raw, read_raw

pytestmark = [pytest.mark.integration, pytest.mark.schema_registry]

ROOT = Path(__file__).resolve().parents[2]


def reading(namespace: str) -> Schema:
    """bench.Reading under a namespace of the test's own (so its subjects are new)."""
    definition = json.loads((ROOT / "schemas" / "bench" / "Reading.avsc").read_text())
    return Schema.from_json({**definition, "namespace": namespace})


def datum(n: int) -> dict[str, object]:
    return {"id": n, "sensor": f"s-{n}", "site": "lab", "value": n / 2, "unit": "C",
            "taken_at": 1_000 + n, "ok": True}  # fmt: skip


def registry_settings(url: str, **more: object) -> Settings:
    return load_settings(None, bootstrap_servers="memory", schema_registry_url=url, **more)


def test_record_and_replay_of_registry_framed_values_carry_their_schemas(
    kit_settings: Settings,
    kafka_bootstrap: str,
    kit_schema_registry: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, copy, again = unique_name("readings"), unique_name("copy"), unique_name("again")
    schema = reading(f"rr{uuid.uuid4().hex[:8]}")
    header = RegistryFormat(registry_settings(kit_schema_registry)).register(schema, source)
    framing = Codec(headers={schema.fingerprint: header})
    values = [framing.encode_datum(schema, datum(n)) for n in range(5)]
    single = Codec().encode_datum(schema, datum(5))  # kit's own format, in the same topic
    rows = [{"value": v, "key": f"k-{n}".encode()} for n, v in enumerate([*values, single])]
    ensure_topics(admin_client(kit_settings), [TopicSpec(source, 1, 1)])  # one order
    produce_raw(kafka_bootstrap, source, [*rows, {"value": None, "key": b"gone"}])

    path = tmp_path / "framed.kitrec"
    argv = ["record", source, "-o", str(path), "-q", "--registry", kit_schema_registry]
    assert kit_main([*argv, "--bootstrap", kafka_bootstrap]) == 0
    source_id = registry_id(header)
    with path.open("rb") as fo:
        kinds = [n for n, _d in fastavro.reader(fo, return_record_name=True)]
    assert kinds[:3] == ["kit.replay.WriterSchema", "kit.replay.SchemaId", "kit.replay.Record"]
    with RecordingReader(path, verify_values=True) as reader:
        recorded = [r.value for _i, r in reader]
        assert reader.info.format_version == "2"
        assert reader.schema_ids == {source_id: schema.fingerprint}
        decoding = Codec()  # no registry: the file's schemas decode every value
        for key, found in reader.schemas.items():
            decoding.add_writer(key, found)
    assert recorded == [*values, single, None]
    assert [decoding.decode_any(v)["id"] for v in recorded if v] == list(range(6))

    # into a registry whose ids differ: the values get the target's id, bodies unchanged
    target_url = f"mock://target-{uuid.uuid4().hex[:8]}"
    try:
        target = RegistryFormat(registry_settings(target_url))
        for n in range(source_id or 0):  # the mock counts ids from 1: now they differ
            target.register(reading(f"other{n}"), "elsewhere")
        done = replay(path, settings=kit_settings, topic_map={source: copy}, registry=target_url)
        target_id = target.client.get_latest_version(f"{copy}-value").schema_id
    finally:
        forget_client(target_url)
    assert target_id != source_id
    assert (done.published, done.reframed, done.schema_ids) == (7, 5, {source_id: target_id})
    published = [m.value() for m in read_raw(kafka_bootstrap, copy, 7)]
    assert published == [registry_header(target_id) + v[5:] for v in values] + [single, None]

    # into the real registry, with the command: the schema is registered under the new subject
    argv = [
        "replay",
        str(path),
        "-q",
        "--into",
        kafka_bootstrap,
        "--topic-map",
        f"{source}={again}",
    ]
    assert kit_main([*argv, "--registry", kit_schema_registry]) == 0
    assert "5 registry-framed value(s) given the target registry's schema ids" in (
        capsys.readouterr().err
    )
    real = RegistryFormat(registry_settings(kit_schema_registry)).client
    real_id = real.get_latest_version(f"{again}-value").schema_id
    published = [m.value() for m in read_raw(kafka_bootstrap, again, 7)]
    assert published[:5] == [registry_header(real_id) + v[5:] for v in values]


def write_schema(folder: Path, schema: dict[str, object]) -> Path:
    path = folder / "schemas" / f"{schema['name']}.avsc"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema))
    return path.parent


def test_schemas_check_against_reports_what_the_registry_would_refuse(
    kit_schema_registry: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = f"chk{uuid.uuid4().hex[:8]}"
    fields = [{"name": "order_id", "type": "string"}, {"name": "total_cents", "type": "long"}]
    v1 = {"type": "record", "name": "OrderPlaced", "namespace": namespace, "fields": fields}
    coupon = {"name": "coupon", "type": "string"}
    v2 = {**v1, "fields": [*fields, coupon]}
    v2_ok = {**v1, "fields": [*fields, {**coupon, "default": ""}]}
    name = f"{namespace}.OrderPlaced"

    def check(schema: dict[str, object], *more: str) -> tuple[int, str]:
        folder = write_schema(tmp_path / uuid.uuid4().hex[:6], schema)
        code = kit_main(["schemas", "check", str(folder), "--against", kit_schema_registry, *more])
        return code, capsys.readouterr().out

    code, out = check(v1)
    assert code == 0 and f"new:     {name} -> {name}-value (BACKWARD)" in out
    v1_schema = SchemaRepository(write_schema(tmp_path / "v1", v1)).get(name)
    RegistryFormat(registry_settings(kit_schema_registry)).register(v1_schema, name)

    code, out = check(v2)
    assert code == 1, out
    assert f"refused: {name} -> {name}-value (BACKWARD): cannot read version 1: " in out
    assert "reader_field_missing_default_value at /fields/2 (coupon)" in out
    code, out = check(v2_ok)
    assert code == 0, out
    assert f"ok:      {name} -> {name}-value (BACKWARD): compatible with the latest version" in out
    code, out = check(v2, "--subject-strategy", "record")  # no version under that subject
    assert code == 0 and f"new:     {name} -> {name} (BACKWARD)" in out


def thing_folders(tmp_path: Path, name: str) -> dict[str, SchemaRepository]:
    """evo.<name> in three versions: v1, v2 (BACKWARD-compatible with v1: its new field has
    a default) and bad (a new field without one)."""
    keep = {"name": "id", "type": "string"}
    fields = {
        "v1": [keep, {"name": "legacy", "type": "int", "default": 0}],
        "v2": [keep, {"name": "color", "type": "string", "default": "red"}],
        "bad": [keep, {"name": "color", "type": "string"}],
    }
    out = {}
    for version, more in fields.items():
        schema = {"type": "record", "name": name, "namespace": "evo", "fields": more}
        (tmp_path / version).mkdir()
        (tmp_path / version / f"{name}.avsc").write_text(json.dumps(schema))
        out[version] = SchemaRepository(tmp_path / version)
    return out


def unique_record(unique_name: Callable[[str], str]) -> str:
    return "Thing" + unique_name("x").rsplit("-", 1)[1]


def test_two_versions_resolve_both_ways_through_the_registry(
    tmp_path: Path,
    kit_settings: Settings,
    kit_registry_settings: Settings,
    kafka_bootstrap: str,
    kit_schema_registry: str,
    unique_name: Callable[[str], str],
) -> None:
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from kit import Client, Context, Event, Service
    from kit.testing.wait import wait_until_async
    from tests.integration.helpers import running

    name = unique_record(unique_name)
    full, repos = f"evo.{name}", thing_folders(tmp_path, name)

    class ThingV1(Event, schema=full, repository=repos["v1"]):
        id: str
        legacy: int = 0

    class ThingV2(Event, schema=full, repository=repos["v2"]):
        id: str
        color: str = "red"

    inbox_v1, inbox_v2 = unique_name("in1"), unique_name("in2")
    got_v1: list[ThingV1] = []
    got_v2: list[ThingV2] = []
    writer_v1 = Service("writer-v1", group_id=unique_name("w1"))
    writer_v2 = Service("writer-v2", group_id=unique_name("w2"))
    reader_v1 = Service("reader-v1", group_id=unique_name("r1"))
    reader_v2 = Service("reader-v2", group_id=unique_name("r2"))

    @writer_v1.handler(topic=inbox_v1)
    async def relay_v1(event: ThingV1, ctx: Context) -> None:
        ctx.publish(event, key=event.id)  # to the default topic: the full name

    @writer_v2.handler(topic=inbox_v2)
    async def relay_v2(event: ThingV2, ctx: Context) -> None:
        ctx.publish(event, key=event.id)

    @reader_v1.handler(topic=full)
    async def read_v1(event: ThingV1) -> None:
        got_v1.append(event)

    @reader_v2.handler(topic=full)
    async def read_v2(event: ThingV2) -> None:
        got_v2.append(event)

    async def scenario() -> None:
        async with Client(kit_settings, repository=repos["v1"]) as client:  # kit's format
            await client.publish(ThingV1(id="old", legacy=5), topic=inbox_v1)
        async with Client(kit_settings, repository=repos["v2"]) as client:
            await client.publish(ThingV2(id="new", color="blue"), topic=inbox_v2)
        settings = kit_registry_settings
        async with running(writer_v1, settings, repository=repos["v1"]):
            async with running(reader_v2, settings, repository=repos["v2"]):
                await wait_until_async(lambda: got_v2, timeout=30, what="v2 reads v1")
        async with running(writer_v2, settings, repository=repos["v2"]):
            async with running(reader_v1, settings, repository=repos["v1"]):
                await wait_until_async(
                    lambda: [e for e in got_v1 if e.id == "new"], timeout=30, what="v1 reads v2"
                )

    asyncio.run(scenario())
    assert got_v2[0] == ThingV2(id="old", color="red")  # v1's data, v2's default
    assert ThingV1(id="new", legacy=0) in got_v1  # v2's data, v1's default

    client = RegistryFormat(registry_settings(kit_schema_registry)).client
    ids = [client.get_version(f"{full}-value", v).schema_id for v in (1, 2)]
    values = [m.value() for m in read_raw(kafka_bootstrap, full, 2)]
    assert [registry_id(v[:5]) for v in values] == ids  # v1's id, then v2's
    # Confluent's own deserializer reads what kit wrote
    deserialize = AvroDeserializer(client)
    ctx = SerializationContext(full, MessageField.VALUE)
    assert [deserialize(v, ctx) for v in values] == [
        {"id": "old", "legacy": 5},
        {"id": "new", "color": "blue"},
    ]


def test_a_refusal_under_backward_stops_the_service_at_start(
    tmp_path: Path,
    kit_registry_settings: Settings,
    kit_schema_registry: str,
    unique_name: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kit import Event, Runtime, Service
    from kit.errors import SchemaRefused

    name = unique_record(unique_name)
    full, repos = f"evo.{name}", thing_folders(tmp_path, name)
    subject = f"{full}-value"
    registry = RegistryFormat(registry_settings(kit_schema_registry))
    registry.register(repos["v1"].get(full), full)
    registry.client.set_compatibility(subject, "BACKWARD")

    class ThingBad(Event, schema=full, repository=repos["bad"]):
        id: str
        color: str

    svc = Service("refused", group_id=unique_name("g"))

    @svc.handler(topic=unique_name("in"))
    async def on_thing(event: ThingBad) -> None:
        pass

    async def start() -> None:
        await Runtime(svc, kit_registry_settings, repository=repos["bad"]).start()

    with pytest.raises(SchemaRefused) as caught:
        asyncio.run(start())
    refused = caught.value
    assert (refused.subject, refused.rule) == (subject, "BACKWARD")
    assert any("color" in i for i in refused.incompatibilities), refused.incompatibilities
    assert f'for subject "{subject}" (compatibility BACKWARD)' in str(refused)

    code = kit_main(["schemas", "check", str(tmp_path / "bad"), "--against", kit_schema_registry])
    assert code == 1
    assert f"refused: {full} -> {subject} (BACKWARD): cannot read version 1: " in (
        capsys.readouterr().out
    )


def test_one_topic_in_both_formats(
    tmp_path: Path,
    kit_settings: Settings,
    kit_registry_settings: Settings,
    kafka_bootstrap: str,
    kit_schema_registry: str,
    unique_name: Callable[[str], str],
) -> None:
    from kit import Event, Service
    from kit.testing.wait import wait_until_async
    from tests.integration.helpers import running

    name = unique_record(unique_name)
    full, repos = f"evo.{name}", thing_folders(tmp_path, name)
    schema = repos["v1"].get(full)

    class Thing(Event, schema=full, repository=repos["v1"]):
        id: str
        legacy: int = 0

    topic = unique_name("mixed")
    header = RegistryFormat(registry_settings(kit_schema_registry)).register(schema, topic)
    framed = Codec(headers={schema.fingerprint: header})
    rows = [
        {"value": Codec().encode_datum(schema, {"id": "a", "legacy": 1})},
        {"value": framed.encode_datum(schema, {"id": "b", "legacy": 2})},
        {"value": Codec().encode_datum(schema, {"id": "c", "legacy": 3})},
    ]
    ensure_topics(admin_client(kit_settings), [TopicSpec(topic, 1, 1)])
    produce_raw(kafka_bootstrap, topic, rows)
    both: list[str] = []
    single: list[str] = []
    reads_both = Service("reads-both", group_id=unique_name("g1"))
    reads_single = Service("reads-single", group_id=unique_name("g2"))

    @reads_both.handler(topic=topic)
    async def on_both(event: Thing) -> None:
        both.append(event.id)

    @reads_single.handler(topic=topic)
    async def on_single(event: Thing) -> None:
        single.append(event.id)

    async def scenario() -> None:
        async with running(reads_both, kit_registry_settings, repository=repos["v1"]):
            await wait_until_async(lambda: len(both) == 3, timeout=30, what="all three")
        async with running(reads_single, kit_settings, repository=repos["v1"]):
            await wait_until_async(lambda: len(single) == 2, timeout=30, what="the two")

    asyncio.run(scenario())
    assert (both, single) == (["a", "b", "c"], ["a", "c"])
    (dead,) = read_raw(kafka_bootstrap, f"{topic}{kit_settings.dead_letter_suffix}", 1)
    reason = dict(dead.headers() or [])["kit-dlt-exception-message"].decode()
    assert "schema id" in reason and "KIT_SCHEMA_REGISTRY_URL is not set" in reason


SERVICE_MODULE = """
from kit import Event, Service

class Thing(Event, schema="evo.{name}"):
    id: str
    color: str

service = Service("refused-run", group_id="{group}")

@service.handler(topic="{topic}")
async def on_thing(event: Thing) -> None:
    pass
"""


def test_kit_run_exits_at_start_naming_the_refusal_or_the_unreachable_registry(
    tmp_path: Path,
    kafka_bootstrap: str,
    kit_schema_registry: str,
    unique_name: Callable[[str], str],
) -> None:
    from kit.testing.process import spawn_python

    name = unique_record(unique_name)
    full, repos = f"evo.{name}", thing_folders(tmp_path, name)
    RegistryFormat(registry_settings(kit_schema_registry)).register(repos["v1"].get(full), full)
    module = SERVICE_MODULE.format(name=name, group=unique_name("g"), topic=unique_name("in"))
    (tmp_path / "refused_svc.py").write_text(module)
    env = {
        "PYTHONPATH": f"{tmp_path}:{ROOT}",
        "KIT_SCHEMAS_DIR": str(tmp_path / "bad"),
        "KIT_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KIT_REGISTRY_ENABLED": "false",
    }

    def kit_run(url: str) -> tuple[int, str]:
        argv = ["-m", "kit.cli", "run", "refused_svc:service"]
        proc = spawn_python(argv, env={**env, "KIT_SCHEMA_REGISTRY_URL": url}, cwd=tmp_path)
        output, _ = proc.communicate(timeout=90)
        return proc.returncode, output

    code, output = kit_run(kit_schema_registry)
    assert code == 1, output
    assert f'refused {full} for subject "{full}-value" (compatibility BACKWARD)' in output, output
    assert "color" in output, output

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    code, output = kit_run(closed)
    assert code == 2, output
    assert "configuration error: KIT_SCHEMA_REGISTRY_URL" in output, output
