"""kit.faust without a broker: the codec, the topic schema's writer look-up, and replies."""

from __future__ import annotations

import asyncio
import copy
import socket
import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.exceptions import ValueDecodeError
from faust.types.tuples import Message

from kit import Codec, Service
from kit.codec import UnknownWriterSchema, registry_header
from kit.config import load_settings
from kit.errors import BrokerError, ConfigError, DecodeError, EncodeError, SchemaRefused
from kit.faust import KitBridge, KitCodec, KitSchema, KitTopic, _Record, broker_url
from kit.protocol import CORRELATION_ID, DEADLINE, ERROR_MESSAGE, ERROR_TYPE, REPLY_TO
from kit.schema import Schema
from kit.transport.registry_format import RegistryFormat
from services.customer_stats import api
from services.customer_stats.events import CustomerStats, GetStats
from services.orders.events import OrderConfirmed

CONFIRMED = OrderConfirmed(
    order_id="o-1", customer="ada", total_cents=1250, confirmed_at=datetime(2026, 1, 2, tzinfo=UTC)
)


def newer_writer() -> Schema:
    """orders.OrderConfirmed with one more field, as a newer producer would write it."""
    definition = copy.deepcopy(OrderConfirmed.kit_schema().definition)
    definition["fields"].append({"name": "channel", "type": "string", "default": "web"})
    return Schema.from_json(definition)


def newer_bytes(writer: Schema) -> bytes:
    datum = {**CONFIRMED.model_dump(), "channel": "shop"}
    return Codec().encode_datum(writer, datum)


def message(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> Message:
    return Message("orders.OrderConfirmed", 0, 7, time.time(), 0, headers, b"o-1", value, None)


def bridge_of(*, name: str = "stats-test") -> KitBridge:
    return KitBridge(faust.App(name, broker="kafka://127.0.0.1:1"), api.service)


def test_the_codec_writes_kits_bytes_and_reads_them_back_typed() -> None:
    codec = KitCodec(OrderConfirmed)
    data = codec.dumps(CONFIRMED)
    assert data == Codec().encode(CONFIRMED)  # the same bytes as a kit producer's
    assert data[:2] == b"\xc3\x01" and data[2:10] == OrderConfirmed.kit_schema().fingerprint
    decoded = codec.loads(data)
    assert type(decoded) is OrderConfirmed and decoded == CONFIRMED


def test_the_codec_decodes_another_writer_version_through_schema_resolution() -> None:
    writer = newer_writer()
    kit_codec = Codec()
    kit_codec._writers[writer.fingerprint] = writer  # as if read from the schema topic
    assert KitCodec(OrderConfirmed, kit_codec).loads(newer_bytes(writer)) == CONFIRMED


def test_an_unknown_writer_schema_is_a_value_decode_error_in_faust() -> None:
    app = faust.App("codec-test", broker="kafka://127.0.0.1:1")
    data = newer_bytes(newer_writer())
    with pytest.raises(UnknownWriterSchema):
        KitCodec(OrderConfirmed).loads(data)
    with pytest.raises(ValueDecodeError, match="unknown writer schema"):
        app.serializers.loads_value(None, data, serializer=KitCodec(OrderConfirmed))


def test_the_codec_refuses_an_event_of_another_type_and_survives_faust_cloning() -> None:
    codec = KitCodec(OrderConfirmed)
    with pytest.raises(EncodeError, match="expected a OrderConfirmed, got CustomerStats"):
        codec.dumps(CustomerStats(customer="ada", orders=1, total_cents=1))
    clone = codec.clone()
    assert isinstance(clone, KitCodec) and clone.event_type is OrderConfirmed
    assert clone.codec is codec.codec


def test_a_topic_looks_an_unknown_writer_schema_up_once_off_the_loop_then_decodes() -> None:
    bridge = bridge_of()
    writer = newer_writer()
    asked: list[bytes] = []

    async def lookup(fp: bytes) -> Schema | None:
        asked.append(fp)
        return writer if fp == writer.fingerprint else None

    bridge.codec.async_resolver = lookup
    topic = bridge.topic(OrderConfirmed)
    assert isinstance(topic, KitTopic) and topic.get_topic_name() == "orders.OrderConfirmed"
    assert isinstance(topic.schema, KitSchema)

    async def decode_twice() -> list[Any]:  # Any: Faust's events
        decode = topic.schema.compile(bridge.app)
        return [await decode(message(newer_bytes(writer)), propagate=True) for _ in range(2)]

    events = asyncio.run(decode_twice())
    assert [e.value for e in events] == [CONFIRMED, CONFIRMED]
    assert [e.key for e in events] == ["o-1", "o-1"]  # str keys, as kit writes them
    assert asked == [writer.fingerprint]  # cached after the first look-up


def test_a_writer_schema_on_no_schema_topic_fails_the_decode() -> None:
    bridge = bridge_of()

    async def lookup(fp: bytes) -> Schema | None:
        return None

    bridge.codec.async_resolver = lookup
    decode = bridge.topic(OrderConfirmed).schema.compile(bridge.app)
    with pytest.raises(ValueDecodeError, match="unknown writer schema"):
        asyncio.run(decode(message(newer_bytes(newer_writer())), propagate=True))


def test_the_bridge_serves_only_responders_of_its_own_service() -> None:
    bridge = bridge_of()
    other = Service("other")

    @other.responder()
    async def get(request: GetStats) -> CustomerStats:
        raise NotImplementedError

    with pytest.raises(ConfigError, match="not a responder of the bridged service"):
        bridge.responder(get)


class Producer:
    """Records what the bridge sends: (topic, key, value, headers)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    async def send_and_wait(
        self, topic: str, key: Any, value: Any, _p: Any, _t: Any, headers: Any
    ) -> None:
        self.sent.append((topic, key, value, headers))


def answer(bridge: KitBridge, value: bytes | None, headers: list[tuple[str, bytes]]) -> Producer:
    producer = Producer()
    bridge.app = SimpleNamespace(producer=producer, conf=bridge.app.conf)  # type: ignore[assignment]
    bridge._reply_topics.add("_kit.replies.x")  # known to exist: no admin client here
    (declared,) = api.service.responders()

    async def serve(request: GetStats) -> CustomerStats:
        if request.customer == "boom":
            raise KeyError("no such customer")
        return CustomerStats(customer=request.customer, orders=2, total_cents=30)

    asyncio.run(bridge._answer(declared, serve, _Record(message(value, headers))))
    return producer


def request_headers(deadline_ms: int | None = None) -> list[tuple[str, bytes]]:
    deadline = deadline_ms if deadline_ms is not None else int(time.time() * 1000) + 10_000
    return [
        (CORRELATION_ID, b"c-1"),
        (REPLY_TO, b"_kit.replies.x"),
        (DEADLINE, str(deadline).encode()),
    ]


def test_a_request_is_answered_on_its_reply_topic_with_its_correlation_id() -> None:
    bridge = bridge_of()
    bridge._published.add(CustomerStats.kit_schema().fingerprint)  # no schema topic here
    producer = answer(bridge, Codec().encode(GetStats(customer="ada")), request_headers())
    ((topic, key, value, headers),) = producer.sent
    assert (topic, key, headers) == ("_kit.replies.x", None, [(CORRELATION_ID, b"c-1")])
    assert Codec().decode(value, CustomerStats) == CustomerStats(
        customer="ada", orders=2, total_cents=30
    )
    assert bridge.answered == 1


def test_a_failing_responder_sends_the_typed_error_back() -> None:
    bridge = bridge_of()
    producer = answer(bridge, Codec().encode(GetStats(customer="boom")), request_headers())
    ((topic, _key, value, headers),) = producer.sent
    assert topic == "_kit.replies.x" and value is None
    assert dict(headers)[ERROR_TYPE] == b"KeyError"
    assert b"no such customer" in dict(headers)[ERROR_MESSAGE]
    assert bridge.failed == 1


def test_an_undecodable_request_is_dead_lettered_and_its_caller_told() -> None:
    bridge = bridge_of()
    producer = answer(bridge, b"not avro", request_headers())
    (dead, reply) = producer.sent
    assert dead[0] == "customer_stats.get.dlt" and dead[2] == b"not avro"
    assert dict(dead[3])["kit-dlt-reason"] == b"decode"
    assert reply[0] == "_kit.replies.x" and dict(reply[3])[ERROR_TYPE] == b"DecodeError"


def test_an_expired_request_is_skipped() -> None:
    bridge = bridge_of()
    producer = answer(bridge, Codec().encode(GetStats(customer="ada")), request_headers(1))
    assert producer.sent == [] and bridge.expired == 1


def test_a_record_of_a_topic_that_does_not_decode_is_dead_lettered_not_thrown() -> None:
    bridge = bridge_of()
    topic = bridge.topic(OrderConfirmed)
    producer = Producer()
    bridge.app = SimpleNamespace(producer=producer, conf=bridge.app.conf)  # type: ignore[assignment]
    try:
        KitCodec(OrderConfirmed).loads(b"junk")
    except Exception as cause:
        error = ValueDecodeError(str(cause))
        error.__cause__ = cause
    asyncio.run(topic.on_value_decode_error(error, message(b"junk")))  # Faust's would throw
    asyncio.run(topic.on_value_decode_error(error, message(b"junk")))  # another channel's call
    ((dlt, key, value, headers),) = producer.sent
    assert (dlt, key, value) == ("orders.OrderConfirmed.dlt", b"o-1", b"junk")
    assert dict(headers)["kit-dlt-reason"] == b"decode"
    assert dict(headers)["kit-dlt-exception-type"] == b"DecodeError"
    assert dict(headers)["kit-dlt-original-offset"] == b"7"
    assert bridge.dead_lettered == 1


def test_a_reply_to_a_reply_topic_that_is_gone_is_dropped_at_once() -> None:
    bridge = bridge_of()
    producer = Producer()
    bridge.app = SimpleNamespace(producer=producer, conf=bridge.app.conf)  # type: ignore[assignment]

    asked: list[str] = []

    async def gone(topic: str) -> bool:
        asked.append(topic)
        return False

    bridge._topic_exists = gone  # type: ignore[method-assign]
    bridge._published.add(CustomerStats.kit_schema().fingerprint)  # no schema topic: no broker
    (declared,) = api.service.responders()

    async def serve(request: GetStats) -> CustomerStats:
        return CustomerStats(customer=request.customer, orders=0, total_cents=0)

    record = message(Codec().encode(GetStats(customer="ada")), request_headers())
    asyncio.run(bridge._answer(declared, serve, _Record(record)))
    # checked first, so Faust's producer (which waits minutes for a missing topic) is never asked
    assert len(asked) == 1 and producer.sent == []


def test_the_worker_start_creates_every_topic_the_app_reads_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = faust.App("init-test", broker="kafka://127.0.0.1:1", topic_partitions=4)
    app.Table("stats", default=None)
    bridge = KitBridge(app, api.service)
    bridge.topic(OrderConfirmed)

    @bridge.responder(api.get, route=lambda request: request.customer)
    async def get(request: GetStats) -> CustomerStats:
        raise NotImplementedError

    made: list[Any] = []  # Any: TopicSpec
    monkeypatch.setattr("kit.faust.admin_client", lambda settings: "admin")
    monkeypatch.setattr("kit.faust.ensure_topics", lambda admin, specs: made.extend(specs))
    bridge._on_worker_init(app)
    specs = {spec.name: spec for spec in made}
    assert set(specs) == {
        "orders.OrderConfirmed",
        "orders.OrderConfirmed.dlt",
        "customer_stats.get",
        "customer_stats.get.dlt",
        "init-test-customer_stats.get-routed",
        "init-test-stats-changelog",
    }
    changelog = specs["init-test-stats-changelog"]
    assert (changelog.partitions, changelog.config) == (4, (("cleanup.policy", "compact"),))


def test_broker_url_lists_every_bootstrap_server() -> None:
    from kit import load_settings

    settings = load_settings(bootstrap_servers="a:9092, b:9093")
    assert broker_url(settings) == "kafka://a:9092;kafka://b:9093"
    app = faust.App("url-test", broker=broker_url(settings))
    assert [str(u) for u in app.conf.broker] == ["kafka://a:9092", "kafka://b:9093"]


def unreadable_schema_topic(bridge: KitBridge) -> None:
    """The schema topic's look-up fails, as SchemaTopic's does when it cannot be read."""

    async def lookup(fp: bytes) -> Schema | None:
        raise BrokerError("cannot read the end offset of _kit_schemas: timed out")

    bridge.codec.async_resolver = lookup


def test_a_schema_topic_that_cannot_be_read_is_a_decode_error_of_the_topic_not_a_crash() -> None:
    bridge = bridge_of()
    unreadable_schema_topic(bridge)
    topic = bridge.topic(OrderConfirmed)
    producer = Producer()
    bridge.app = SimpleNamespace(producer=producer, conf=bridge.app.conf)  # type: ignore[assignment]
    data = newer_bytes(newer_writer())
    with pytest.raises(ValueDecodeError, match="could not be looked up") as raised:
        asyncio.run(topic.decode(message(data), propagate=True))  # as Faust's conductor asks
    assert isinstance(raised.value.__cause__, DecodeError)
    assert isinstance(raised.value.__cause__.__cause__, BrokerError)
    assert asyncio.run(topic.decode(message(data))) is None  # Faust's own error path
    ((dlt, _key, value, headers),) = producer.sent
    assert (dlt, value) == ("orders.OrderConfirmed.dlt", data)
    assert dict(headers)["kit-dlt-exception-type"] == b"WriterSchemaLookupFailed"
    assert b"BrokerError" in dict(headers)["kit-dlt-exception-message"]


def newer_request() -> bytes:
    """A GetStats request written with a writer schema the bridge does not know."""
    definition = copy.deepcopy(GetStats.kit_schema().definition)
    definition["fields"].append({"name": "channel", "type": "string", "default": "web"})
    return Codec().encode_datum(Schema.from_json(definition), {"customer": "ada", "channel": "x"})


def test_a_request_whose_writer_schema_cannot_be_looked_up_gets_an_error_reply() -> None:
    bridge = bridge_of()
    unreadable_schema_topic(bridge)
    producer = answer(bridge, newer_request(), request_headers())  # no exception escapes
    (dead, reply) = producer.sent
    assert dead[0] == "customer_stats.get.dlt" and dead[2] == newer_request()
    assert dict(reply[3])[ERROR_TYPE] == b"WriterSchemaLookupFailed"  # the caller's RemoteError
    assert b"BrokerError" in dict(reply[3])[ERROR_MESSAGE]


def test_failures_to_dead_letter_or_to_reply_are_logged_and_the_agent_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bridge = bridge_of()
    replies: list[BaseException | None] = []

    async def dead_letter_fails(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("producer closed")

    async def reply(msg: _Record, value: bytes | None, error: BaseException | None) -> None:
        replies.append(error)

    bridge.dead_letter = dead_letter_fails  # type: ignore[method-assign]
    bridge._reply = reply  # type: ignore[method-assign]
    answer(bridge, b"not avro", request_headers())
    assert len(replies) == 1 and isinstance(replies[0], DecodeError)  # told despite the dlt

    async def reply_fails(msg: _Record, value: bytes | None, error: BaseException | None) -> None:
        raise RuntimeError("no reply")

    bridge._reply = reply_fails  # type: ignore[method-assign]
    answer(bridge, b"not avro", request_headers())  # neither failure escapes
    answer(bridge, Codec().encode(GetStats(customer="boom")), [])  # dead-lettered: fails too
    assert "producer closed" in caplog.text and "no reply" in caplog.text


def test_a_dead_letter_the_producer_never_confirms_is_given_up_at_the_delivery_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bridge = KitBridge(
        faust.App("dlt-test", broker="kafka://127.0.0.1:1"),
        api.service,
        load_settings(delivery_timeout=0.2),
    )
    topic = bridge.topic(OrderConfirmed)

    class Stuck:
        async def send_and_wait(self, *args: Any) -> None:
            await asyncio.Event().wait()  # a topic with no leader: Faust waits minutes

    bridge.app = SimpleNamespace(producer=Stuck(), conf=bridge.app.conf)  # type: ignore[assignment]
    error = ValueDecodeError("junk")
    # returns (no crash) after KIT_DELIVERY_TIMEOUT (0.2 s); unbounded, the deadline fails it
    asyncio.run(asyncio.wait_for(topic.on_value_decode_error(error, message(b"junk")), 20))
    assert bridge.dead_lettered == 0 and bridge.dead_letters_lost == 1
    assert "NOT dead-lettered" in caplog.text and "orders.OrderConfirmed[0]@7" in caplog.text


# --- the schema registry format (KIT_SCHEMA_REGISTRY_URL), with a mock:// registry --------


def registry_bridge(url: str, **overrides: Any) -> KitBridge:  # Any: Settings field values
    settings = load_settings(
        env={}, bootstrap_servers="unused:9092", schema_registry_url=url, **overrides
    )
    return KitBridge(
        faust.App("stats-registry", broker="kafka://127.0.0.1:1"), api.service, settings
    )


def framed(url: str, event: Any, topic: str) -> bytes:  # Any: a kit Event
    """`event` as a kit service with the registry writes it to `topic`."""
    fmt = RegistryFormat(load_settings(env={}, schema_registry_url=url))
    schema = type(event).kit_schema()
    return Codec(headers={schema.fingerprint: fmt.register(schema, topic)}).encode(event)


def registry_reader(url: str) -> Codec:
    fmt = RegistryFormat(load_settings(env={}, schema_registry_url=url))
    return Codec(resolver=fmt.lookup, registry=True)


def test_with_a_registry_a_framed_request_is_answered_in_the_registry_format(
    mock_schema_registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up: list[str] = []
    lookup = RegistryFormat.lookup

    def lookup_where(fmt: RegistryFormat, key: bytes) -> Schema | None:
        looked_up.append(threading.current_thread().name)
        return lookup(fmt, key)

    monkeypatch.setattr(RegistryFormat, "lookup", lookup_where)
    bridge = registry_bridge(mock_schema_registry)
    request = framed(mock_schema_registry, GetStats(customer="ada"), "customer_stats.get")
    producer = answer(bridge, request, request_headers())
    ((topic, _key, value, headers),) = producer.sent
    assert topic == "_kit.replies.x" and ERROR_TYPE not in dict(headers)
    assert looked_up and threading.main_thread().name not in looked_up  # off the loop
    fmt = RegistryFormat(load_settings(env={}, schema_registry_url=mock_schema_registry))
    registered = fmt.register(CustomerStats.kit_schema(), "customer_stats.CustomerStats")
    assert value is not None and value[:5] == registered  # registered before encoding
    reply = registry_reader(mock_schema_registry).decode(value, CustomerStats)
    assert reply == CustomerStats(customer="ada", orders=2, total_cents=30)
    assert bridge._schema_topic is None  # nothing on _kit_schemas


def test_with_a_registry_a_topic_decodes_both_formats_and_a_newer_writer_by_id(
    mock_schema_registry: str,
) -> None:
    bridge = registry_bridge(mock_schema_registry)
    decode = bridge.topic(OrderConfirmed).schema.compile(bridge.app)
    writer = newer_writer()
    fmt = RegistryFormat(load_settings(env={}, schema_registry_url=mock_schema_registry))
    newer = Codec(headers={writer.fingerprint: fmt.register(writer, "orders.OrderConfirmed")})
    values = [
        framed(mock_schema_registry, CONFIRMED, "orders.OrderConfirmed"),
        newer.encode_datum(writer, {**CONFIRMED.model_dump(), "channel": "shop"}),
        Codec().encode(CONFIRMED),
    ]

    async def decode_all() -> list[Any]:  # Any: Faust's events
        return [await decode(message(v), propagate=True) for v in values]

    assert [e.value for e in asyncio.run(decode_all())] == [CONFIRMED] * 3


def test_with_registry_write_false_the_bridge_reads_framed_and_writes_kits_format(
    mock_schema_registry: str,
) -> None:
    bridge = registry_bridge(mock_schema_registry, schema_registry_write=False)
    bridge._published.add(CustomerStats.kit_schema().fingerprint)  # no schema topic here
    request = framed(mock_schema_registry, GetStats(customer="ada"), "customer_stats.get")
    ((_topic, _key, value, headers),) = answer(bridge, request, request_headers()).sent
    assert ERROR_TYPE not in dict(headers)
    assert value is not None and value[:2] == b"\xc3\x01"
    assert Codec().decode(value, CustomerStats).orders == 2


def test_with_a_registry_an_unknown_schema_id_is_dead_lettered_as_unknown(
    mock_schema_registry: str,
) -> None:
    bridge = registry_bridge(mock_schema_registry)
    request = registry_header(4242) + b"\x06ada"
    (dead, reply) = answer(bridge, request, request_headers()).sent
    assert dead[0] == "customer_stats.get.dlt" and dead[2] == request
    assert dict(reply[3])[ERROR_TYPE] == b"UnknownWriterSchema"
    message_of = dict(reply[3])[ERROR_MESSAGE]
    assert b"schema id 4242" in message_of and b"KIT_SCHEMA_REGISTRY_URL" not in message_of
    assert asyncio.run(bridge.codec.resolve(registry_header(4242))) is False


def started(bridge: KitBridge) -> list[str]:
    """Stub the announcer: what `_start` did after the schemas."""
    done: list[str] = []

    async def announce() -> None:
        done.append("announced")

    async def confirmed(_timeout: float) -> bool:
        done.append("confirmed")
        return True

    bridge.announcer.start = announce  # type: ignore[method-assign]
    bridge.announcer.confirmed = confirmed  # type: ignore[method-assign]
    return done


def test_the_start_registers_every_schema_and_the_codec_writes_their_ids(
    mock_schema_registry: str,
) -> None:
    bridge = registry_bridge(mock_schema_registry)
    bridge.topic(OrderConfirmed)
    done = started(bridge)
    asyncio.run(bridge._start())
    assert done == ["announced", "confirmed"] and bridge._schema_topic is None
    fmt = RegistryFormat(load_settings(env={}, schema_registry_url=mock_schema_registry))
    assert bridge.codec.encode(CONFIRMED)[:5] == fmt.register(
        OrderConfirmed.kit_schema(), "orders.OrderConfirmed"
    )


@pytest.mark.parametrize("failure", ["refused", "unreachable"])
def test_a_registry_that_refuses_or_cannot_be_reached_stops_the_start_loudly(
    failure: str, mock_schema_registry: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    def refuse(fmt: RegistryFormat, schemas: Any) -> dict[bytes, bytes]:  # Any: Schemas
        raise SchemaRefused("customer_stats.CustomerStats", "customer_stats.CustomerStats-value",
                            "BACKWARD", ["cannot read version 1: ..."])  # fmt: skip

    if failure == "refused":
        monkeypatch.setattr(RegistryFormat, "register_all", refuse)
        bridge, error = registry_bridge(mock_schema_registry), SchemaRefused
        bridge.topic(CustomerStats)
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        bridge, error = registry_bridge(f"http://127.0.0.1:{port}"), ConfigError
    done = started(bridge)
    with pytest.raises(error) as raised:
        asyncio.run(bridge._start())
    assert done == [] and bridge._schema_topic is None
    assert f"kit bridge: customer_stats cannot start: {raised.value}" in caplog.text


def test_a_topic_registers_its_schema_before_it_encodes_a_send(
    mock_schema_registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge = registry_bridge(mock_schema_registry)
    topic = bridge.topic(CustomerStats)
    sent: list[bytes] = []

    async def publish(self: Any, fut: Any, wait: bool = False) -> None:  # Any: Faust's
        sent.append(fut.message.value)

    monkeypatch.setattr(faust.Topic, "publish_message", publish)
    stats = CustomerStats(customer="ada", orders=1, total_cents=5)
    asyncio.run(topic.send(key="ada", value=stats))  # before the start registered it
    assert registry_reader(mock_schema_registry).decode(sent[0], CustomerStats) == stats
    assert sent[0][:1] == b"\x00"
