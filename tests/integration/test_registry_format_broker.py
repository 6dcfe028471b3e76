"""The schema registry wire format on a real Kafka broker, with confluent-kafka's mock://
registry (in-process, shared by every runtime and Client of the test's process).

tests/integration/test_schema_registry.py runs the same format against a real registry.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from kit import Client, ConfigError, Context, Event, SchemaRepository, Service, Settings
from kit.codec import registry_id
from kit.errors import SchemaRefused
from kit.testing.wait import wait_until_async
from kit.transport.registry_format import forget_client, registry_client
from tests.fixtures import SCHEMAS
from tests.fixtures.events import CheckStock, InvoiceIssued, OrderPlaced, StockLevel
from tests.integration.helpers import order, read_raw, running

pytestmark = pytest.mark.integration


@pytest.fixture
def registry_settings(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> Iterator[Settings]:
    """kit_settings with a mock:// registry and a schema topic of the test's own."""
    url = f"mock://broker-{uuid.uuid4().hex[:8]}"
    yield kit_settings.model_copy(
        update={"schema_registry_url": url, "schema_topic": unique_name("schemas")}
    )
    forget_client(url)


def topic_exists(settings: Settings, topic: str) -> bool:
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers or ""})
    return topic in admin.list_topics(timeout=10).topics


def invoicing(name: str, source: str, target: str, seen: list[str]) -> Service:
    service = Service(name, group_id=f"{name}-group")

    @service.handler(topic=source)
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        seen.append(event.order_id)
        invoice = InvoiceIssued(
            invoice_id=f"inv-{event.order_id}",
            order_id=event.order_id,
            total_cents=1,
            issued_at=event.placed_at,
        )
        ctx.publish(invoice, topic=target, key=event.order_id)

    return service


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_a_service_round_trips_in_the_registry_format_without_the_schema_topic(
    registry_settings: Settings, unique_name: Callable[[str], str], exactly_once: bool
) -> None:
    source, target = unique_name("orders"), unique_name("invoices")
    seen: list[str] = []
    service = invoicing(unique_name("svc"), source, target, seen)
    service_settings = registry_settings.model_copy(update={"exactly_once": exactly_once})

    async def scenario() -> None:
        async with Client(registry_settings) as client:
            for n in range(3):
                await client.publish(order(n), topic=source, key=f"o-{n}")
        async with running(service, service_settings):
            await wait_until_async(lambda: len(seen) == 3, timeout=30, what="3 orders handled")

    asyncio.run(scenario())
    client = registry_client(registry_settings)
    for topic, schema in ((source, "shop.OrderPlaced"), (target, "billing.InvoiceIssued")):
        latest = client.get_latest_version(f"{topic}-value")  # TopicNameStrategy
        assert (
            latest.schema.schema_str is not None
            and schema.split(".")[1] in latest.schema.schema_str
        )
        for msg in read_raw(registry_settings.bootstrap_servers or "", topic, 3):
            value = msg.value() or b""
            assert value[:1] == b"\x00"
            schema_id = registry_id(value[:5])
            assert schema_id is not None
            assert client.get_schema(schema_id).schema_str is not None
    ctx = SerializationContext(target, MessageField.VALUE)
    invoices = read_raw(registry_settings.bootstrap_servers or "", target, 3)
    read = sorted(AvroDeserializer(client)(m.value(), ctx)["order_id"] for m in invoices)
    assert read == ["o-0", "o-1", "o-2"]
    assert not topic_exists(registry_settings, registry_settings.schema_topic)


def test_a_registry_mode_consumer_reads_a_topic_holding_both_formats(
    registry_settings: Settings, kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    source = unique_name("orders")
    seen: list[str] = []
    plain_seen: list[str] = []
    reader = invoicing(unique_name("reader"), source, unique_name("out"), seen)
    plain = kit_settings.model_copy(update={"schema_topic": registry_settings.schema_topic})
    plain_reader = invoicing(unique_name("plain"), source, unique_name("plain-out"), plain_seen)

    async def scenario() -> None:
        async with Client(plain) as client:  # single-object, its schema on the schema topic
            await client.publish(order(1), topic=source, key="single")
        async with Client(registry_settings) as client:
            await client.publish(order(2), topic=source, key="framed")
        async with running(reader, registry_settings), running(plain_reader, plain):
            await wait_until_async(
                lambda: len(seen) == 2 and plain_seen, timeout=30, what="both read"
            )
            # the plain reader dead-letters the framed record after handling o-1: wait for it
            letters.extend(await asyncio.to_thread(read_raw, bootstrap, f"{source}.dlt", 1))

    bootstrap = plain.bootstrap_servers or ""
    letters: list[Message] = []
    asyncio.run(scenario())
    values = [m.value() or b"" for m in read_raw(plain.bootstrap_servers or "", source, 2)]
    assert sorted(v[:1] for v in values) == [b"\x00", b"\xc3"]
    assert sorted(seen) == ["o-1", "o-2"]
    assert plain_seen == ["o-1"]  # a reader with no registry dead-letters the framed one
    (letter,) = letters
    reason = dict(letter.headers() or [])["kit-dlt-exception-message"]
    assert b"KIT_SCHEMA_REGISTRY_URL is not set" in reason


def test_a_refused_schema_fails_the_start_with_the_registrys_reason(
    registry_settings: Settings, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = registry_client(registry_settings)  # the one every runtime of the process uses

    def refuse(*_args: object) -> int:
        raise SchemaRegistryError(409, 409, "Schema being registered is incompatible")

    monkeypatch.setattr(client, "register_schema", refuse)
    monkeypatch.setattr(client, "get_compatibility", lambda subject=None: "BACKWARD")
    service = invoicing(unique_name("svc"), unique_name("orders"), unique_name("out"), [])

    async def scenario() -> None:
        async with running(service, registry_settings):
            pass

    with pytest.raises(SchemaRefused, match=r"compatibility BACKWARD.*registry said: Schema being"):
        asyncio.run(scenario())
    # the failed start released what it had made: no consumer thread of the instance is left
    assert [t.name for t in threading.enumerate() if t.name.startswith("kit-consumer-")] == []


def test_an_unreachable_registry_fails_the_start_within_the_connect_timeout(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = kit_settings.model_copy(update={"schema_registry_url": url, "connect_timeout": 3.0})
    service = invoicing(unique_name("svc"), unique_name("orders"), unique_name("out"), [])

    async def scenario() -> None:
        async with running(service, settings):
            pass

    started = time.monotonic()
    try:
        with pytest.raises(ConfigError, match=f"KIT_SCHEMA_REGISTRY_URL: schema registry {url}"):
            asyncio.run(scenario())
    finally:
        forget_client(url)
    assert time.monotonic() - started < 6


# --- request-reply with both sides in the registry format ----------------------------------


def stock_service(name: str) -> Service:
    """A responder at `<name>.check`, replying in the registry format (registry_settings)."""
    service = Service(name)

    @service.responder()
    async def check(request: CheckStock) -> StockLevel:
        return StockLevel(sku=request.sku, available=10, enough=request.quantity <= 10)

    return service


def desk_service(
    name: str,
    source: str,
    check: Any,  # Any: a responder function (what ctx.request takes)
    got: list[str],
    failed: list[str],
) -> Service:
    """On each order, `ctx.request` the stock check: the reply is registry-framed."""
    service = Service(name, group_id=f"{name}-group")

    @service.handler(topic=source)
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        try:
            level = await ctx.request(check, CheckStock(sku=event.order_id, quantity=3))
        except Exception as exc:
            failed.append(f"{type(exc).__name__}: {exc}")
            raise
        got.append(f"{level.sku}:{level.available}")

    return service


def dead_letters(settings: Settings, topic: str) -> list[Message]:
    if not topic_exists(settings, topic):
        return []
    return read_raw(settings.bootstrap_servers or "", topic, 0, timeout=10)


def test_request_reply_with_both_sides_writing_the_registry_format(
    registry_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    """A handler's ctx.request and a Client.request to a responder, all three writing the
    registry format: each reply decodes (the caller's own registered schema, or an id
    resolved off the loop), nothing is retried or dead-lettered."""
    stock = stock_service(unique_name("stock"))
    check = stock.handlers[0].func
    source = unique_name("orders")
    got: list[str] = []
    failed: list[str] = []
    desk = desk_service(unique_name("desk"), source, check, got, failed)
    reply_values: list[bytes] = []

    async def scenario() -> None:
        async with running(stock, registry_settings), running(desk, registry_settings):
            async with Client(registry_settings) as client:
                level = await client.request(check, CheckStock(sku="tea", quantity=30))
                assert level == StockLevel(sku="tea", available=10, enough=False)
                await client.publish(order(1), topic=source, key="o-1")
                await wait_until_async(lambda: got or failed, timeout=30, what="o-1 handled")
                replies = client.requester.reply_topic  # deleted when the client closes
                msgs = await asyncio.to_thread(read_raw, bootstrap, replies, 1)
                reply_values.extend(m.value() or b"" for m in msgs)

    bootstrap = registry_settings.bootstrap_servers or ""
    asyncio.run(scenario())
    assert failed == [] and got == ["o-1:10"]
    replies = [v for v in reply_values if v]  # not the requester's empty marker record
    assert [v[:1] for v in replies] == [b"\x00"]  # the reply was registry-framed
    assert dead_letters(registry_settings, f"{source}.dlt") == []


def test_a_caller_with_a_newer_reply_schema_reads_a_registry_framed_reply(
    registry_settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """The caller knows a newer StockLevel (a field added with a default): the reply's id
    is resolved from the registry, then read through Avro schema resolution."""
    parsed = json.loads((SCHEMAS / "inventory" / "StockLevel.avsc").read_text())
    parsed["fields"].append({"name": "warehouse", "type": "string", "default": "main"})
    (tmp_path / "StockLevel.avsc").write_text(json.dumps(parsed))
    newer = SchemaRepository(tmp_path)

    class StockLevelV2(Event, schema="inventory.StockLevel", repository=newer):
        sku: str
        available: int
        enough: bool
        request_id: str | None = None
        served_by: str | None = None
        warehouse: str = "main"

    stock = stock_service(unique_name("stock"))

    async def scenario() -> StockLevelV2:
        async with running(stock, registry_settings), Client(registry_settings) as client:
            return await client.request(
                f"{stock.name}.check", CheckStock(sku="tea", quantity=1), reply=StockLevelV2
            )

    level = asyncio.run(scenario())
    assert level == StockLevelV2(sku="tea", available=10, enough=True, warehouse="main")
