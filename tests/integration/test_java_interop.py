"""A Java service of a Kafka shop reads and writes kit's events (issue 13, point 3).

tests/interop/java/KitInterop.java uses nothing but kafka-clients and Apache Avro, as such a
service would: single-object values decoded by BinaryMessageDecoder with writer schemas
from `_kit_schemas`, and encoded by BinaryMessageEncoder with a schema published there as kit
does. Every Avro type is checked field for field (tests/fixtures/interop.py: AllTypes). With
a schema registry (marker `schema_registry` too), Java reads what a kit service writes in the
Confluent wire format as Confluent's deserializer does.

Java 17+ and Maven are needed (marker `java`): without them these tests fail, saying how to
deselect them; they are never skipped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kit import Client, Context, Service, Settings
from kit.jsonavro import from_json, to_json
from kit.testing.wait import wait_until_async
from tests.fixtures.interop import AllTypes, samples
from tests.integration.helpers import running
from tests.interop.jvm import JavaMissing, ensure_libs, run_interop, tools

pytestmark = [pytest.mark.integration, pytest.mark.java]

NEWER = Path(__file__).resolve().parents[1] / "interop" / "newer" / "AllTypes.avsc"
"""The next version of interop.AllTypes, which only the Java producer knows."""


@pytest.fixture
def settings(kit_settings: Settings, unique_name: Callable[[str], str]) -> Settings:
    """kit_settings with a schema topic of this test's own: a writer schema is found there
    only if this test's writer put it there (not a run before it)."""
    return kit_settings.model_copy(update={"schema_topic": unique_name("schemas")})


@pytest.fixture(scope="module")
def java_libs() -> tuple[str, Path]:
    """(java, the folder of KitInterop's jars), resolved by Maven on first use."""
    try:
        java, _mvn = tools()
    except JavaMissing as exc:
        pytest.fail(f"{exc}; deselect the Java interop tests with -m 'not java'")
    return java, ensure_libs()


def differences(java_value: dict[str, Any], event: AllTypes) -> list[str]:
    """The fields where Java's JSON, read back in kit.jsonavro's conventions, differs from
    the event: an empty list when they agree field for field."""
    got = from_json(AllTypes.kit_schema().parsed, java_value)
    want = event.model_dump()
    out = [f"{k}: java {got.get(k)!r} != kit {v!r}" for k, v in want.items() if got.get(k) != v]
    # decimals compare by value: the scale must agree too
    if str(got["price"]) != str(want["price"]):
        out.append(f"price: java {got['price']} != kit {want['price']} (scale)")
    return out + [f"{k}: only in java" for k in set(got) - set(want)]


def test_java_reads_kit_events_of_every_avro_type(
    java_libs: tuple[str, Path], settings: Settings, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("alltypes")
    events = samples()

    async def publish() -> None:
        async with Client(settings) as client:
            for event in events:
                await client.publish(event, topic=topic, key=event.id)

    asyncio.run(publish())
    java, libs = java_libs
    args = ["--bootstrap", settings.bootstrap_servers, "--topic", topic]
    args += ["--count", str(len(events)), "--schema-topic", settings.schema_topic]
    lines = run_interop(java, libs, "consume-single", *args)
    assert [line.get("error") for line in lines] == [None] * len(events)
    by_key = {line["key"]: line for line in lines}
    assert sorted(by_key) == sorted(e.id for e in events)
    for event in events:
        line = by_key[event.id]
        # the writer schema Java found on the schema topic is the one kit wrote with
        assert line["schema"] == "interop.AllTypes"
        assert line["fingerprint"] == AllTypes.kit_schema().fingerprint.hex()
        assert differences(line["value"], event) == [], event.id


def test_kit_service_handles_events_of_a_newer_java_producer(
    java_libs: tuple[str, Path],
    settings: Settings,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    topic = unique_name("from-java")
    events = samples()
    rows = []
    for event in events:
        value = to_json(event.model_dump())
        value["channel"] = f"app-{event.id}"  # fields only the newer version has
        value["home"]["country"] = "BE"
        rows.append(json.dumps({"key": event.id, "value": value}))
    (tmp_path / "input.jsonl").write_text("\n".join(rows) + "\n")
    handled: dict[str, AllTypes] = {}
    service = Service("interop-java-reader", group_id=unique_name("g"))

    @service.handler(topic=topic)
    async def on_event(event: AllTypes) -> None:
        handled[event.id] = event

    java, libs = java_libs
    args = ["--bootstrap", settings.bootstrap_servers, "--topic", topic]
    args += ["--schema", str(NEWER), "--input", str(tmp_path / "input.jsonl")]
    args += ["--schema-topic", settings.schema_topic]

    async def scenario() -> list[dict[str, Any]]:
        async with running(service, settings):
            sent = await asyncio.to_thread(run_interop, java, libs, "produce-single", *args)
            await wait_until_async(
                lambda: len(handled) == len(events), timeout=30, what="every event handled"
            )
        return sent

    sent = asyncio.run(scenario())
    assert len(sent) == len(events)
    # written with a schema kit's repository does not have: resolved from the schema topic
    (fingerprint,) = {line["fingerprint"] for line in sent}
    assert fingerprint != AllTypes.kit_schema().fingerprint.hex()
    repository = AllTypes.__kit_repository__
    assert repository is not None
    assert repository.by_fingerprint(bytes.fromhex(fingerprint)) is None
    # every event handled, every field equal; the newer fields are dropped
    assert sorted(handled) == sorted(e.id for e in events)
    for event in events:
        assert handled[event.id] == event


@pytest.mark.schema_registry
def test_java_reads_kit_events_in_the_registry_format(
    java_libs: tuple[str, Path],
    kit_settings: Settings,
    kit_registry_settings: Settings,
    kit_schema_registry: str,
    unique_name: Callable[[str], str],
) -> None:
    # A kit service with KIT_SCHEMA_REGISTRY_URL passes AllTypes events on: it reads them in
    # kit's format and writes the registry's. Java reads those as Confluent's deserializer
    # does: byte 0 is 0, a 4-byte big-endian id, the writer schema fetched from the
    # registry by id, then the plain Avro body.
    source, topic = unique_name("single"), unique_name("registry")
    events = samples()
    relay = Service("interop-registry-relay", group_id=unique_name("g"))

    @relay.handler(topic=source)
    async def pass_on(event: AllTypes, ctx: Context) -> None:
        ctx.publish(event, topic=topic, key=event.id)

    async def scenario() -> None:
        async with Client(kit_settings) as client:
            for event in events:
                await client.publish(event, topic=source, key=event.id)
        async with running(relay, kit_registry_settings):
            args = ["--bootstrap", kit_settings.bootstrap_servers, "--topic", topic]
            args += ["--count", str(len(events)), "--registry", kit_schema_registry]
            lines.extend(
                await asyncio.to_thread(run_interop, java, libs, "consume-registry", *args)
            )

    java, libs = java_libs
    lines: list[dict[str, Any]] = []
    asyncio.run(scenario())
    assert [line.get("error") for line in lines] == [None] * len(events)
    from confluent_kafka.schema_registry import SchemaRegistryClient  # the extra

    registered = SchemaRegistryClient({"url": kit_schema_registry})
    # TopicNameStrategy, kit's default: the subject is "<topic>-value"
    schema_id = registered.get_latest_version(f"{topic}-value").schema_id
    by_key = {line["key"]: line for line in lines}
    assert sorted(by_key) == sorted(e.id for e in events)
    for event in events:
        line = by_key[event.id]
        assert (line["schema_id"], line["schema"]) == (schema_id, "interop.AllTypes")
        assert differences(line["value"], event) == [], event.id
