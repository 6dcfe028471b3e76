"""The registry without a broker: the Registration schema, endpoints, the view, config, CLI."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from kit import Codec, ConfigError, Context, Service, load_settings
from kit.registry import (
    Announcer,
    Registration,
    RegistryView,
    endpoints_of,
    load_registry_config,
    registry_topic_spec,
)
from kit.registry.model import REPOSITORY, from_ms
from kit.registry.table import format_table
from tests.fixtures.events import InvoiceIssued, OrderPlaced

NOW = 1_800_000_000.0


def shop() -> Service:
    svc = Service("shop", version="2.1.0", metadata={"team": "web"})

    @svc.handler(topic="orders")
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        pass

    @svc.responder()
    async def quote(event: OrderPlaced) -> InvoiceIssued:
        raise NotImplementedError

    return svc


def reg(instance: str, heartbeat: float, service: str = "shop", **changes: object) -> Registration:
    values: dict[str, object] = {
        "service": service,
        "version": "1.0.0",
        "instance_id": instance,
        "host": "h1",
        "pid": 42,
        "started_at": from_ms(int((NOW - 100) * 1000)),
        "last_heartbeat": from_ms(int(heartbeat * 1000)),
        "endpoints": endpoints_of(shop()),
        **changes,
    }
    return Registration.model_validate(values)


def test_registration_schema_round_trip() -> None:
    codec = Codec(REPOSITORY)
    original = reg("shop-1", NOW, reply_address="shop.replies", metadata={"zone": "a"})
    data = codec.encode(original)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == Registration.kit_schema().fingerprint
    assert codec.decode(data, Registration) == original
    assert Registration.kit_schema().full_name == "kit.Registration"


def test_endpoints_come_from_the_declaration() -> None:
    eps = endpoints_of(shop())
    assert [(e.kind, e.name, e.topic, e.event_schema, e.reply_schema) for e in eps] == [
        ("handler", "on_order", "orders", "shop.OrderPlaced", None),
        ("responder", "quote", "shop.quote", "shop.OrderPlaced", "billing.InvoiceIssued"),
    ]


def test_announcer_registration_carries_identity_and_metadata() -> None:
    settings = load_settings(bootstrap_servers="127.0.0.1:1")
    ann = Announcer(
        shop(), settings, "shop-x", reply_address="r", metadata={"zone": "b"}, topic="reg"
    )
    r = ann.registration()
    assert (r.service, r.version, r.instance_id, r.reply_address) == (
        "shop",
        "2.1.0",
        "shop-x",
        "r",
    )
    assert r.metadata == {"team": "web", "zone": "b"}
    assert r.last_heartbeat >= r.started_at
    assert r.last_heartbeat.tzinfo is not None
    assert ann.topic == "reg"
    with pytest.raises(Exception, match="prepare"):
        ann.announce()


def test_topic_is_compacted_single_partition_with_configured_replication() -> None:
    settings = load_settings(bootstrap_servers="x:1", topic_replication=3)
    spec = registry_topic_spec(settings, "_kit_registry", [("segment.ms", "100")])
    config = dict(spec.config)
    assert (spec.name, spec.partitions, spec.replication) == ("_kit_registry", 1, 3)
    assert config["cleanup.policy"] == "compact"
    assert config["segment.ms"] == "100"


def test_config_from_environment_and_errors_name_the_variable() -> None:
    env = {"KIT_REGISTRY_TOPIC": "reg", "KIT_REGISTRY_TTL": "4", "KIT_REGISTRY_HEARTBEAT": "1"}
    config = load_registry_config(env)
    assert (config.topic, config.ttl, config.heartbeat, config.clean_limit) == ("reg", 4, 1, 12)
    assert load_registry_config(env, ttl=9).ttl == 9
    assert load_registry_config({}).topic == "_kit_registry"
    with pytest.raises(ConfigError, match="KIT_REGISTRY_TTL"):
        load_registry_config({"KIT_REGISTRY_TTL": "soon"})
    with pytest.raises(ConfigError, match="KIT_REGISTRY_HEARTBEAT"):
        load_registry_config({"KIT_REGISTRY_HEARTBEAT": "0"})


def test_view_up_heartbeat_changed_down() -> None:
    view = RegistryView(ttl=5)
    up = view.put(reg("a", NOW), NOW)
    assert up is not None and (up.kind, up.reason, up.instance_id) == ("up", "announced", "a")
    assert view.put(reg("a", NOW + 1), NOW + 1) is None  # a heartbeat is not a change
    changed = view.put(reg("a", NOW + 2, metadata={"k": "v"}), NOW + 2)
    assert changed is not None and changed.kind == "changed"
    assert [r.instance_id for r in view.live(NOW + 2, "shop")] == ["a"]
    down = view.remove("a", "stopped")
    assert down is not None and (down.kind, down.reason) == ("down", "stopped")
    assert view.live(NOW + 2, "shop") == [] and not view.has_live("shop", NOW + 2)
    assert view.remove("a") is None


def test_view_liveness_comes_from_the_heartbeat_not_from_arrival() -> None:
    view = RegistryView(ttl=5)
    # A reader (re)starting now reads a crashed instance's last record: not live, no event.
    assert view.put(reg("dead", NOW - 30), NOW) is None
    assert view.live(NOW) == [] and not view.has_live("shop", NOW)
    assert view.get("dead") is not None
    # A live one expires by the clock alone (lookups), and the sweep reports it once.
    view.put(reg("b", NOW), NOW)
    assert view.has_live("shop", NOW + 5)
    assert not view.has_live("shop", NOW + 5.01)
    assert view.sweep(NOW + 4) == []
    (down,) = view.sweep(NOW + 6)
    assert (down.kind, down.reason, down.instance_id) == ("down", "expired", "b")
    assert view.sweep(NOW + 7) == []
    # A heartbeat brings it back.
    back = view.put(reg("b", NOW + 8), NOW + 8)
    assert back is not None and (back.kind, back.reason) == ("up", "heartbeat")


def test_view_indexes_by_service() -> None:
    view = RegistryView(ttl=5)
    for iid, svc in [("a1", "a"), ("a2", "a"), ("b1", "b")]:
        view.put(reg(iid, NOW, service=svc), NOW)
    assert sorted(r.instance_id for r in view.live(NOW, "a")) == ["a1", "a2"]
    assert [r.instance_id for r in view.live(NOW, "b")] == ["b1"]
    assert view.live(NOW, "c") == []
    assert len(view.live(NOW)) == 3


def test_cleaner_tombstone_is_ignored_when_a_newer_heartbeat_was_seen() -> None:
    view = RegistryView(ttl=5)
    old_ms = int((NOW - 60) * 1000)
    view.put(reg("a", NOW - 60), NOW)
    view.put(reg("a", NOW), NOW)  # the instance came back after the cleaner decided
    assert view.remove("a", "expired", judged_heartbeat_ms=old_ms) is None
    assert view.has_live("shop", NOW)
    view.put(reg("z", NOW - 60), NOW)
    assert view.older_than(NOW, 30) == [("z", old_ms)]
    assert view.remove("z", "expired", judged_heartbeat_ms=old_ms) is None  # was not live
    assert view.get("z") is None


def test_table_lists_instances_with_endpoints() -> None:
    regs = [reg("shop-1", NOW - 1, reply_address="shop.replies"), reg("x-1", NOW, service="x")]
    text = format_table(regs, NOW, "_kit_registry", 6)
    lines = text.splitlines()
    assert lines[0].split() == [
        "SERVICE", "VERSION", "INSTANCE", "HOST", "AGE", "LAST", "HEARTBEAT", "ENDPOINTS"
    ]  # fmt: skip
    assert "shop-1" in lines[1] and "h1:42" in lines[1] and "1m40s" in lines[1]
    assert "(1.0s ago)" in lines[1]
    assert "handler on_order @ orders (shop.OrderPlaced)" in lines[1]
    assert "responder quote @ shop.quote (shop.OrderPlaced -> billing.InvoiceIssued)" in text
    assert "replies @ shop.replies" in text
    assert lines[-1] == "2 live instance(s) of 2 service(s) on _kit_registry (TTL 6s)"
    assert format_table([], NOW, "t", 6) == "no live service instances on t (TTL 6s)"


def test_announcer_stop_before_start_is_harmless() -> None:
    ann = Announcer(shop(), load_settings(bootstrap_servers="127.0.0.1:1"), topic="reg")
    asyncio.run(ann.stop())
    with pytest.raises(Exception, match="stopped"):
        asyncio.run(ann.start())


def test_registration_times_keep_millisecond_precision() -> None:
    r = reg("a", NOW + 0.123)
    assert r.last_heartbeat == datetime.fromtimestamp(NOW + 0.123, UTC).replace(microsecond=123000)


def test_watch_delivers_in_order_and_ends() -> None:
    from kit.errors import BrokerError
    from kit.registry import RegistryEvent, Watch

    unsubscribed: list[Watch] = []

    async def scenario() -> None:
        watch = Watch(unsubscribed.append)
        events = [RegistryEvent("up", reg("a", NOW)), RegistryEvent("down", reg("a", NOW))]
        for event in events:
            watch.push(event)
        watch.push(None)
        assert [e async for e in watch] == events
        assert unsubscribed == [watch]
        failing = Watch(unsubscribed.append)
        failing.push(RuntimeError("broker gone"))
        with pytest.raises(BrokerError, match="broker gone"):
            await anext(failing)
        async with Watch(unsubscribed.append) as early:
            pass
        assert unsubscribed[-1] is early
        assert [e async for e in early] == []

    asyncio.run(scenario())


def test_close_ends_an_iteration_that_waits_for_the_next_event() -> None:
    from kit.registry import Watch

    async def scenario() -> list[object]:
        watch = Watch(lambda _w: None)
        waiting = asyncio.ensure_future(anext(watch, "ended"))
        await asyncio.sleep(0)  # let it wait on the empty queue
        assert not waiting.done()
        watch.close()
        return [await asyncio.wait_for(waiting, 5)]

    assert asyncio.run(scenario()) == ["ended"]


def test_require_refuses_only_once_the_view_is_ready() -> None:
    from kit import ServiceUnavailable
    from kit.registry import Registry

    registry = Registry(load_settings(bootstrap_servers="127.0.0.1:1"), topic="reg")
    registry.require("shop")  # not started: unknown, so not refused
    registry.ready.set()
    with pytest.raises(ServiceUnavailable, match="shop"):
        registry.require("shop")
    assert not registry.has_live("shop") and registry.lookup("shop") == []


class HeldProducer:
    """A producer whose delivery reports come only when flushed, as from a slow broker."""

    def __init__(self) -> None:
        self.held: list[tuple[bytes | None, Any]] = []

    def produce(self, _topic: str, value: bytes | None, _key: bytes, on_delivery: Any) -> None:
        self.held.append((value, on_delivery))

    def poll(self, _timeout: float) -> int:
        return 0  # the broker has not answered yet

    def flush(self, _timeout: float) -> int:
        held, self.held = self.held, []
        for value, report in held:
            report(None, HeldRecord(value))
        return 0


class HeldRecord:
    def __init__(self, value: bytes | None) -> None:
        self._value = value

    def value(self) -> bytes | None:
        return self._value


def offline_announcer(monkeypatch: pytest.MonkeyPatch, producer: HeldProducer) -> Announcer:
    """An Announcer of shop-x on topic "reg" whose producer is `producer`, with no broker."""
    import kit.registry.announcer as announcer_module

    monkeypatch.setattr(announcer_module, "make_producer", lambda *_a, **_k: producer)
    monkeypatch.setattr(announcer_module, "admin_client", lambda *_a, **_k: object())
    monkeypatch.setattr(announcer_module, "ensure_topics", lambda *_a, **_k: None)
    return Announcer(shop(), load_settings(bootstrap_servers="127.0.0.1:1"), "shop-x", topic="reg")


def test_the_announced_line_is_logged_once_the_broker_has_the_registration(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A test or an operator waiting for this line calls the service next: a fail-fast
    # caller must find the instance then, so the line waits for the delivery report.
    producer = HeldProducer()
    ann = offline_announcer(monkeypatch, producer)
    caplog.set_level("INFO", logger="kit.registry")

    async def scenario() -> None:
        await ann.prepare()
        ann.announce()
        assert ann.announced.is_set() and not ann.delivered
        assert "announced shop-x" not in caplog.text  # produced, not on the broker yet
        assert await ann.confirmed(5.0)
        ann.announce()  # a heartbeat: logged once only
        producer.flush(0)

    asyncio.run(scenario())
    assert ann.delivered
    assert caplog.text.count("announced shop-x (shop) on reg") == 1, caplog.text


class SilentProducer(HeldProducer):
    """A producer whose broker never answers within the wait."""

    def flush(self, _timeout: float) -> int:
        return len(self.held)


def test_a_registration_not_confirmed_in_time_is_said_once_in_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # kit run and the Faust bridge still say ready then: the warning is what tells why a
    # caller may not find the instance yet.
    ann = offline_announcer(monkeypatch, SilentProducer())
    caplog.set_level("INFO", logger="kit.registry")

    async def scenario() -> bool:
        await ann.prepare()
        ann.announce()
        return await ann.confirmed(0.5)

    assert asyncio.run(scenario()) is False and not ann.delivered
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "registration of shop-x not on reg within 0.5s: callers that fail fast may not find it yet"
    ], warnings
    assert "announced shop-x" not in caplog.text


def test_kit_run_says_ready_without_announced_when_the_announce_never_came(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The announce task failed (its error is logged): the ready line must still come, after
    # KIT_CONNECT_TIMEOUT, and must not claim an announcement; it must not wait forever.
    from types import SimpleNamespace

    from kit.app import _say_ready

    settings = load_settings(bootstrap_servers="127.0.0.1:1", connect_timeout=0.3)
    ann = Announcer(shop(), settings, "shop-x", topic="reg")  # never started
    said: list[str] = []

    async def scenario() -> None:
        ready = asyncio.Event()
        ready.set()
        runtime = SimpleNamespace(
            ready=ready,
            announcer=ann,
            settings=settings,
            service=ann.service,
            instance_id="shop-x",
            assignment=[("orders", 0)],
        )
        await asyncio.wait_for(_say_ready(runtime, said.append), 5)  # type: ignore[arg-type]

    caplog.set_level("WARNING", logger="kit.registry")
    asyncio.run(scenario())
    assert said == ["shop ready: instance shop-x, 1 partition assigned, not announced"], said
    assert "registration of shop-x not on reg within 0.3s" in caplog.text
