"""The Confluent Schema Registry wire format over confluent-kafka's mock:// registry.

No broker and no registry server: `mock://` is confluent-kafka's in-process registry, one
store per URL (kit shares the client per URL in a process). A real registry is exercised
by tests/integration.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka.schema_registry import (
    SchemaRegistryClient,
    record_subject_name_strategy,
    topic_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from kit import Codec, ConfigError, DecodeError, EncodeError
from kit.codec import UnknownWriterSchema, registry_header, registry_id, writer_key
from kit.config import Settings, known_variables, load_settings, registry_client_config
from kit.errors import SchemaRefused
from kit.requests import BaseRequester
from kit.schema import Schema
from kit.testing.harness import Harness
from kit.transport.memory import MemoryBroker, MemoryMessage
from kit.transport.registry_format import (
    RegistryFormat,
    TopicRegistrar,
    forget_client,
    registry_client,
)
from tests.fixtures import billing
from tests.fixtures.events import CheckStock, InvoiceIssued, OrderLine, OrderPlaced, StockLevel

TOPIC = "shop.OrderPlaced"


def order(order_id: str = "o-1") -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        customer="ada",
        lines=[OrderLine(sku="tea", quantity=2, unit_price_cents=350)],
        placed_at=datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC),
    )


@pytest.fixture
def url() -> Iterator[str]:
    """A mock:// registry of this test's own."""
    name = f"mock://kit-test-{uuid.uuid4().hex[:8]}"
    yield name
    forget_client(name)


def settings_for(url: str, **overrides: Any) -> Settings:  # Any: Settings field values
    return load_settings(
        env={}, bootstrap_servers="unused:9092", schema_registry_url=url, **overrides
    )


def registry_codec(fmt: RegistryFormat, *schemas: Schema, topic: str = TOPIC) -> Codec:
    """A codec writing the registry format for `schemas`, reading ids through `fmt`."""
    headers = {s.fingerprint: fmt.register(s, topic) for s in schemas}
    return Codec(OrderPlaced.__kit_repository__, resolver=fmt.lookup, headers=headers)


# --- 1. the framing ----------------------------------------------------------------------


def test_a_registry_value_is_00_id_and_the_single_object_body(url: str) -> None:
    fmt = RegistryFormat(settings_for(url))
    schema = OrderPlaced.kit_schema()
    header = fmt.register(schema, TOPIC)
    schema_id = fmt.client.get_latest_version(f"{TOPIC}-value").schema_id
    assert header == b"\x00" + (schema_id or 0).to_bytes(4, "big")
    single = Codec(OrderPlaced.__kit_repository__).encode(order())
    framed = registry_codec(fmt, schema).encode(order())
    assert framed == header + single[10:]
    assert registry_id(framed[:5]) == schema_id
    assert registry_header(schema_id or 0) == header


# --- 2. interop with confluent's own serializer and deserializer -------------------------


def test_confluents_deserializer_reads_kit_and_kit_reads_confluents_serializer(url: str) -> None:
    fmt = RegistryFormat(settings_for(url))
    schema = OrderPlaced.kit_schema()
    codec = registry_codec(fmt, schema)
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    confluent_reads = AvroDeserializer(fmt.client)(codec.encode(order()), ctx)
    assert confluent_reads == Codec(OrderPlaced.__kit_repository__).decode_any(
        Codec(OrderPlaced.__kit_repository__).encode(order())
    )
    # the serializer registers its own text of the schema: kit finds it by id
    serializer = AvroSerializer(fmt.client, schema.text)
    written = serializer(order().model_dump(by_alias=True), ctx)
    assert written is not None and written[:1] == b"\x00"
    reader = Codec(OrderPlaced.__kit_repository__, resolver=fmt.lookup, registry=True)
    assert reader.decode(written, OrderPlaced) == order()


# --- 3. first-byte dispatch --------------------------------------------------------------


def test_the_first_byte_tells_the_formats_apart(url: str) -> None:
    fmt = RegistryFormat(settings_for(url))
    schema = OrderPlaced.kit_schema()
    framed = registry_codec(fmt, schema).encode(order())
    single = Codec(OrderPlaced.__kit_repository__).encode(order())
    reader = Codec(OrderPlaced.__kit_repository__, resolver=fmt.lookup, registry=True)
    assert reader.decode(framed, OrderPlaced) == reader.decode(single, OrderPlaced) == order()
    assert writer_key(single) == schema.fingerprint
    assert writer_key(framed) == framed[:5]
    with pytest.raises(DecodeError, match=r"GUID framing \(magic 1\) is not supported"):
        reader.decode(b"\x01" + bytes(16) + framed[5:], OrderPlaced)
    with pytest.raises(DecodeError, match=r"expected magic c3 01 .* or 00"):
        reader.decode(b"\x07junk", OrderPlaced)


def test_a_registry_framed_value_without_a_registry_names_the_setting(url: str) -> None:
    fmt = RegistryFormat(settings_for(url))
    framed = registry_codec(fmt, OrderPlaced.kit_schema()).encode(order())
    schema_id = registry_id(framed[:5])
    plain = Codec(OrderPlaced.__kit_repository__)
    with pytest.raises(DecodeError, match=f"schema id {schema_id}.*KIT_SCHEMA_REGISTRY_URL"):
        plain.decode(framed, OrderPlaced)


async def test_an_unknown_id_is_not_resolved_and_names_the_id(url: str) -> None:
    fmt = RegistryFormat(settings_for(url))
    codec = Codec(OrderPlaced.__kit_repository__, resolver=fmt.lookup, registry=True)
    value = registry_header(4242) + b"\x00"
    with pytest.raises(UnknownWriterSchema, match="schema id 4242") as caught:
        codec.decode_any(value)
    assert await codec.resolve(caught.value.fingerprint) is False


def test_encoding_a_schema_that_is_not_registered_is_refused(url: str) -> None:
    codec = Codec(OrderPlaced.__kit_repository__, headers={})
    with pytest.raises(EncodeError, match=r"shop\.OrderPlaced is not registered"):
        codec.encode(order())


# --- 4, 5. subjects and caching ------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["topic", "record"])
def test_subjects_match_confluents_strategies(url: str, strategy: str) -> None:
    fmt = RegistryFormat(settings_for(url, schema_registry_subject_strategy=strategy))
    schema = OrderPlaced.kit_schema()
    ctx = SerializationContext("orders", MessageField.VALUE)
    function = topic_subject_name_strategy if strategy == "topic" else record_subject_name_strategy
    assert fmt.subject("orders", schema) == function(ctx, schema.full_name)
    fmt.register(schema, "orders")
    assert fmt.client.get_subjects() == [function(ctx, schema.full_name)]


def counting(client: SchemaRegistryClient, name: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Count calls of the client's method `name` (Any: its arguments)."""
    calls: list[Any] = []  # Any: the arguments of each call
    original = getattr(client, name)

    def counted(*args: Any) -> Any:  # Any: the method's own arguments and result
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(client, name, counted)
    return calls


def test_ids_are_cached(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fmt = RegistryFormat(settings_for(url))
    registers = counting(fmt.client, "register_schema", monkeypatch)
    schema = OrderPlaced.kit_schema()
    header = fmt.register(schema, TOPIC)
    assert fmt.register(schema, TOPIC) == header
    fmt.register(schema, "other")
    assert len(registers) == 2  # one per subject
    reader = RegistryFormat(settings_for(url))  # another service in the same process
    gets = counting(reader.client, "get_schema", monkeypatch)
    found = reader.lookup(header)
    assert found is not None and found.fingerprint == schema.fingerprint
    assert reader.lookup(header) is found
    assert reader.schema_by_id(9999) is None
    assert [args[0] for args in gets] == [registry_id(header), 9999]


# --- 6. settings ---------------------------------------------------------------------------


def test_settings_are_passed_to_the_client() -> None:
    settings = load_settings(
        env={
            "KIT_SCHEMA_REGISTRY_URL": "https://registry:8081",
            "KIT_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "me:secret",
            "KIT_SCHEMA_REGISTRY_SSL_CA_LOCATION": "/ca.pem",
            "KIT_SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION": "/cert.pem",
            "KIT_SCHEMA_REGISTRY_SSL_KEY_LOCATION": "/key.pem",
            "KIT_SCHEMA_REGISTRY_SSL_KEY_PASSWORD": "pw",
            "KIT_SCHEMA_REGISTRY_CONFIG": '{"proxy": "http://proxy:3128", "max.retries": 5}',
            "KIT_CONNECT_TIMEOUT": "4",
        }
    )
    assert registry_client_config(settings) == {
        "url": "https://registry:8081",
        "basic.auth.user.info": "me:secret",
        "ssl.ca.location": "/ca.pem",
        "ssl.certificate.location": "/cert.pem",
        "ssl.key.location": "/key.pem",
        "ssl.key.password": "pw",
        "proxy": "http://proxy:3128",
        "timeout": 4.0,
        "max.retries": 5,
        "retries.wait.ms": 200,
    }
    names = {f"KIT_SCHEMA_REGISTRY_{n}" for n in ("URL", "WRITE", "SUBJECT_STRATEGY", "CONFIG")}
    assert names <= known_variables()


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"KIT_SCHEMA_REGISTRY_URL": "registry:8081"}, "KIT_SCHEMA_REGISTRY_URL"),
        ({"KIT_SCHEMA_REGISTRY_SUBJECT_STRATEGY": "topic_record"}, "KIT_SCHEMA_REGISTRY_SUBJECT_"),
        ({"KIT_SCHEMA_REGISTRY_URL": "mock://x", "KIT_SCHEMA_REGISTRY_CONFIG": "[1]"}, "_CONFIG"),
        (
            {"KIT_SCHEMA_REGISTRY_URL": "mock://x", "KIT_SCHEMA_REGISTRY_CONFIG": '{"nope": 1}'},
            "_CONFIG",
        ),
    ],
)
def test_bad_registry_settings_name_their_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        RegistryFormat(load_settings(env=env))


def test_a_missing_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "confluent_kafka.schema_registry", None)
    with pytest.raises(
        ConfigError, match=r"KIT_SCHEMA_REGISTRY_URL.*pip install 'kit\[schema-registry\]'"
    ):
        registry_client(settings_for("mock://no-extra"))


# --- 7. errors -----------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_registry_fails_within_the_connect_timeout() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    fmt = RegistryFormat(settings_for(url, connect_timeout=3))
    started = time.monotonic()
    try:
        with pytest.raises(
            ConfigError, match=f"KIT_SCHEMA_REGISTRY_URL: schema registry {url} unreachable"
        ):
            fmt.check()
        with pytest.raises(ConfigError, match="unreachable"):
            fmt.register(OrderPlaced.kit_schema(), TOPIC)
    finally:
        forget_client(url)
    assert time.monotonic() - started < 2 * 3


def test_refused_credentials_name_the_auth_setting(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fmt = RegistryFormat(settings_for(url))

    def unauthorized(*_args: object) -> None:
        raise SchemaRegistryError(401, 40101, "Unauthorized")

    monkeypatch.setattr(fmt.client, "get_subjects", unauthorized)
    with pytest.raises(ConfigError, match="KIT_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"):
        fmt.check()


def coupon_version() -> Schema:
    """shop.OrderPlaced with a new field `coupon` that has no default: not BACKWARD."""
    definition = OrderPlaced.kit_schema().definition
    definition["fields"].append({"name": "coupon", "type": "string"})
    return Schema.from_json(definition)


APICURIO_409 = (
    "io.apicurio.registry.rules.violation.RuleViolationException: Incompatible artifact: "
    "shop.OrderPlaced-value [AVRO], num of incompatible diffs: {1}, list of diff types: "
    "[READER_FIELD_MISSING_DEFAULT_VALUE at /fields/5]"
)
CONFLUENT_409 = (
    'Schema being registered is incompatible with an earlier schema for subject "'
    "shop.OrderPlaced-value\", details: [{errorType:'READER_FIELD_MISSING_DEFAULT_VALUE', "
    "description:'The field 'coupon' at path '/fields/5' in the new schema has no default "
    "value and is missing in the old schema', additionalInfo:'coupon'}]"
)


@pytest.mark.parametrize("said", [APICURIO_409, CONFLUENT_409])
def test_a_compatibility_refusal_names_subject_rule_and_incompatibility(
    url: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fmt = RegistryFormat(settings_for(url))
    fmt.register(OrderPlaced.kit_schema(), TOPIC)  # version 1, in the mock's store

    def refuse(*_args: object) -> int:
        raise SchemaRegistryError(409, 409, said)

    def rule(subject: str | None = None) -> str:
        if subject is not None:  # as Confluent: no rule of the subject's own
            raise SchemaRegistryError(404, 40408, "Subject does not have subject-level config")
        return "BACKWARD"

    monkeypatch.setattr(fmt.client, "register_schema", refuse)
    monkeypatch.setattr(fmt.client, "get_compatibility", rule)
    with pytest.raises(SchemaRefused) as caught:
        fmt.register(coupon_version(), TOPIC)
    refused = caught.value
    assert (refused.subject, refused.rule) == (f"{TOPIC}-value", "BACKWARD")
    assert refused.incompatibilities == [
        "cannot read version 1: reader_field_missing_default_value at /fields/5 (coupon)"
    ]
    assert str(refused) == (
        'schema registry refused shop.OrderPlaced for subject "shop.OrderPlaced-value" '
        "(compatibility BACKWARD): cannot read version 1: reader_field_missing_default_value "
        f"at /fields/5 (coupon); registry said: {said}"
    )


# --- 9. a service in the registry format, in the harness -----------------------------------


def harness_settings(url: str | None, **overrides: Any) -> Settings:  # Any: Settings values
    return load_settings(
        env={},
        bootstrap_servers="memory",
        schema_registry_url=url,
        retry_backoff=0.0,
        retry_backoff_max=0.0,
        transient_timeout=0.0,
        **overrides,
    )


def headers_of(item: Any) -> dict[str, bytes]:  # Any: a harness Emitted record
    return {k: v for k, v in item.message.headers() or []}


async def test_a_service_reads_both_formats_and_writes_the_registry_one(url: str) -> None:
    h = Harness(billing.service, settings=harness_settings(url))
    fmt = RegistryFormat(settings_for(url))
    sent = h.send(order("framed"))  # the harness's codec writes the registry format
    single = Codec(OrderPlaced.__kit_repository__).encode(order("single"))
    h.send_raw(TOPIC, single)
    h.send_raw(TOPIC, registry_header(4242) + b"\x02", key="unknown-id")
    await h.run()
    assert (sent.value() or b"")[:5] == fmt.register(OrderPlaced.kit_schema(), TOPIC)
    invoices = [o for o in h.outputs if o.topic == "billing.InvoiceIssued"]
    assert [o.key for o in invoices] == [b"framed", b"single"]
    latest = fmt.client.get_latest_version("billing.InvoiceIssued-value")
    ctx = SerializationContext("billing.InvoiceIssued", MessageField.VALUE)
    for item in invoices:
        assert item.value is not None and registry_id(item.value[:5]) == latest.schema_id
        assert AvroDeserializer(fmt.client)(item.value, ctx)["order_id"] == item.key.decode()
    (letter,) = h.dead_letters(TOPIC)
    assert letter.key == b"unknown-id"
    assert headers_of(letter)["kit-dlt-exception-message"].startswith(
        b"unknown writer schema (schema id 4242)"
    )


async def test_with_registry_write_off_a_service_writes_single_object_and_reads_both(
    url: str,
) -> None:
    h = Harness(billing.service, settings=harness_settings(url, schema_registry_write=False))
    framed = registry_codec(RegistryFormat(settings_for(url)), OrderPlaced.kit_schema())
    h.send_raw(TOPIC, framed.encode(order("framed")))
    h.send(order("single"))
    await h.run()
    invoices = [o for o in h.outputs if o.topic == "billing.InvoiceIssued"]
    assert [o.key for o in invoices] == [b"framed", b"single"]
    assert all(o.value is not None and o.value[:2] == b"\xc3\x01" for o in invoices)
    assert len(h.emitted(InvoiceIssued)) == 2


async def test_without_a_registry_url_registry_framed_records_are_dead_lettered(url: str) -> None:
    framed = registry_codec(RegistryFormat(settings_for(url)), OrderPlaced.kit_schema())
    h = Harness(billing.service, settings=harness_settings(None))
    h.send_raw(TOPIC, framed.encode(order()), key="framed")
    await h.run()
    (letter,) = h.dead_letters(TOPIC)
    assert headers_of(letter)["kit-dlt-reason"] == b"decode"
    assert b"KIT_SCHEMA_REGISTRY_URL is not set" in headers_of(letter)["kit-dlt-exception-message"]


def test_a_schema_is_registered_under_another_topics_subject_before_its_first_record(
    url: str,
) -> None:
    fmt = RegistryFormat(settings_for(url))
    schema = OrderPlaced.kit_schema()
    header = fmt.register(schema, schema.full_name)
    registrar = TopicRegistrar(fmt, {header: schema})
    value = header + b"body"
    assert not registrar.needs(schema.full_name, value)  # its default topic: done at start
    assert not registrar.needs("elsewhere", registry_header(4242) + b"x")  # not ours
    assert not registrar.needs("elsewhere", b"\xc3\x01" + schema.fingerprint)
    assert registrar.needs("elsewhere", value) and registrar.pending("elsewhere")
    registrar.register("elsewhere")
    assert not registrar.needs("elsewhere", value) and not registrar.pending("elsewhere")
    assert sorted(fmt.client.get_subjects()) == ["elsewhere-value", f"{TOPIC}-value"]


# --- 10. request-reply in the registry format ----------------------------------------------


def test_a_codec_decodes_its_own_registry_framed_values_with_no_resolver(url: str) -> None:
    fmt = RegistryFormat(settings_for(url))
    schema = OrderPlaced.kit_schema()
    headers = {schema.fingerprint: fmt.register(schema, TOPIC)}
    codec = Codec(OrderPlaced.__kit_repository__, headers=headers)  # no resolver at all
    assert codec.decode(codec.encode(order()), OrderPlaced) == order()
    later = Codec(OrderPlaced.__kit_repository__, registry=True)  # a shared codec, headers later
    later.set_headers(headers)
    assert later.headers is headers  # a plain attribute: encode reads it as it is
    assert later.decode(later.encode(order("o-2")), OrderPlaced) == order("o-2")


async def test_a_runtimes_codec_decodes_what_it_writes(url: str) -> None:
    """Runtime._make_codec: only an async resolver (the transport's), yet its own
    registered schemas are known writers (the bug: UnknownWriterSchema schema id 1)."""
    from kit.runtime import Runtime
    from kit.transport.memory import MemoryTransport
    from tests.fixtures import stockroom

    settings = harness_settings(url)
    transport = MemoryTransport(MemoryBroker(), "stockroom", None, None)
    runtime = Runtime(stockroom.service, settings, transport=transport, extensions=[])
    fmt = RegistryFormat(settings)
    headers = fmt.register_all(list(runtime.repository))
    codec = runtime._make_codec(headers)
    level = StockLevel(sku="tea", available=3, enough=True)
    assert codec.decode(codec.encode(level), StockLevel) == level


class FramedReplies(BaseRequester):
    """A caller whose replies come from another process's codec: registry-framed values
    whose ids the caller's codec resolves only asynchronously (as a runtime's does)."""

    def __init__(self, fmt: RegistryFormat, reply: bytes) -> None:
        self.lookups: list[bytes] = []

        async def lookup(key: bytes) -> Schema | None:
            self.lookups.append(key)
            return await asyncio.to_thread(fmt.lookup, key)

        self.codec = Codec(StockLevel.__kit_repository__, async_resolver=lookup, registry=True)
        self.reply = reply

    async def request_raw(
        self, service, method, value, *, topic=None, key=None, timeout=None, started=None
    ) -> MemoryMessage:
        return MemoryBroker().append("_kit.replies.me", self.reply, None, [])


async def ask(caller: BaseRequester) -> object:
    return await caller.request(
        "stockroom.check_stock", CheckStock(sku="tea", quantity=1), reply=StockLevel
    )


async def test_a_registry_framed_reply_is_resolved_then_decoded(url: str) -> None:
    fmt = RegistryFormat(settings_for(url))
    responder = registry_codec(fmt, StockLevel.kit_schema(), topic="_kit.replies.me")
    level = StockLevel(sku="tea", available=3, enough=True)
    caller = FramedReplies(fmt, responder.encode(level))
    answer = await ask(caller)
    assert answer == level
    assert caller.lookups == [caller.reply[:5]]  # resolved once, then cached
    assert await ask(caller) == level
    assert len(caller.lookups) == 1


async def test_a_reply_with_an_id_no_registry_knows_is_a_decode_error(url: str) -> None:
    caller = FramedReplies(RegistryFormat(settings_for(url)), registry_header(4242) + b"\x00")
    with pytest.raises(UnknownWriterSchema, match=r"schema id 4242\).*for inventory\.StockLevel"):
        await ask(caller)
    assert caller.lookups == [registry_header(4242)]


async def test_a_clients_replies_resolve_registry_ids_off_the_event_loop(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kit import Client

    fmt = RegistryFormat(settings_for(url))
    level = StockLevel(sku="tea", available=3, enough=True)
    framed = registry_codec(fmt, StockLevel.kit_schema(), topic="_kit.replies.me").encode(level)
    threads: list[int] = []
    lookup = RegistryFormat.lookup

    def recording(self: RegistryFormat, key: bytes) -> Schema | None:
        threads.append(threading.get_ident())
        return lookup(self, key)

    monkeypatch.setattr(RegistryFormat, "lookup", recording)
    client = Client(settings_for(url), repository=StockLevel.__kit_repository__)
    try:
        assert await client.requester.decode_reply(framed, StockLevel) == level
        assert len(threads) == 1 and threads[0] != threading.get_ident()
        # client.codec, off the loop (kit request's decode_any in a worker thread), still
        # resolves an id it does not know yet, there
        check = registry_codec(fmt, CheckStock.kit_schema(), topic="elsewhere")
        request = check.encode(CheckStock(sku="cake", quantity=2))
        answer = await asyncio.to_thread(client.codec.decode_any, request)
        assert answer["sku"] == "cake" and len(threads) == 2
        assert threads[1] != threading.get_ident()
    finally:
        await client.close()
