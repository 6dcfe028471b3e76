"""Schema evolution through the schema topic: old and new readers and writers on Kafka."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from kit import Client, Event, SchemaRepository, Service, Settings
from kit.testing.wait import wait_until_async
from tests.integration.helpers import running

pytestmark = pytest.mark.integration


def repos(tmp_path: Path, name: str) -> tuple[SchemaRepository, SchemaRepository]:
    keep = {"name": "id", "type": "string"}
    v1 = {
        "type": "record",
        "name": name,
        "namespace": "evo",
        "fields": [keep, {"name": "legacy", "type": "int", "default": 0}],
    }
    v2 = {
        "type": "record",
        "name": name,
        "namespace": "evo",
        "fields": [keep, {"name": "color", "type": "string", "default": "red"}],
    }
    out = []
    for version, schema in (("v1", v1), ("v2", v2)):
        (tmp_path / version).mkdir()
        (tmp_path / version / f"{name}.avsc").write_text(json.dumps(schema))
        out.append(SchemaRepository(tmp_path / version))
    return out[0], out[1]


def test_old_and_new_versions_read_each_other(
    tmp_path: Path, kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    # A unique record name per run, so the writer schemas are new to the schema topic.
    name = "Thing" + unique_name("x").rsplit("-", 1)[1]
    r1, r2 = repos(tmp_path, name)

    class ThingV1(Event, schema=f"evo.{name}", repository=r1):
        id: str
        legacy: int = 0

    class ThingV2(Event, schema=f"evo.{name}", repository=r2):
        id: str
        color: str = "red"

    topic_old_to_new, topic_new_to_old = unique_name("o2n"), unique_name("n2o")
    got_v2: list[ThingV2] = []
    got_v1: list[ThingV1] = []
    new_reader = Service("new-reader", group_id=unique_name("g1"))
    old_reader = Service("old-reader", group_id=unique_name("g2"))

    @new_reader.handler(topic=topic_old_to_new)
    async def on_new(event: ThingV2) -> None:
        got_v2.append(event)

    @old_reader.handler(topic=topic_new_to_old)
    async def on_old(event: ThingV1) -> None:
        got_v1.append(event)

    async def scenario() -> None:
        # Each side only knows its own version; writer schemas travel via the schema topic.
        async with Client(kit_settings, repository=r1) as old_client:
            await old_client.publish(ThingV1(id="a", legacy=5), topic=topic_old_to_new)
        async with Client(kit_settings, repository=r2) as new_client:
            await new_client.publish(ThingV2(id="b", color="blue"), topic=topic_new_to_old)
        async with running(new_reader, kit_settings), running(old_reader, kit_settings):
            await wait_until_async(lambda: got_v1 and got_v2, timeout=30, what="both decoded")

    asyncio.run(scenario())
    # field added with a default: the old writer's record reads with the default
    assert got_v2 == [ThingV2(id="a", color="red")]
    # field removed (and one added): the old reader drops color and defaults legacy
    assert got_v1 == [ThingV1(id="b", legacy=0)]
