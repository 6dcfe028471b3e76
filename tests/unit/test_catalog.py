"""kit catalog without a broker: the shop's graph from its modules, AsyncAPI validity,
Mermaid, the registration's new fields (old and new readers interoperate), --stats."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from kit import Codec, ConfigError, Context, Service, load_settings
from kit.catalog import (
    AVRO_FORMAT,
    Consumer,
    format_text,
    from_registrations,
    from_services,
    to_asyncapi,
    to_json,
    to_mermaid,
)
from kit.cli import main as kit_main
from kit.loading import load_service
from kit.registry import Announcer, Registration
from kit.registry.model import REPOSITORY, from_ms
from kit.registry.table import format_table
from kit.schema import Schema
from kit.telemetry import Stats
from tests.fixtures.events import InvoiceIssued, OrderPlaced

ASYNCAPI_SCHEMA = Path(__file__).resolve().parents[1] / "fixtures" / "asyncapi" / "3.0.0.json"
SHOP = [
    "services.orders:service",
    "services.payments:service",
    "services.inventory:service",
    "services.notifications:service",
]

# kit.Registration as kit wrote it before it carried publishes, calls and stats.
OLD_REGISTRATION = Schema.from_json(
    {
        "type": "record",
        "name": "Registration",
        "namespace": "kit",
        "fields": [
            {"name": "service", "type": "string"},
            {"name": "version", "type": "string"},
            {"name": "instance_id", "type": "string"},
            {"name": "host", "type": "string"},
            {"name": "pid", "type": "long"},
            {"name": "started_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "last_heartbeat", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {
                "name": "endpoints",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "Endpoint",
                        "namespace": "kit",
                        "fields": [
                            {"name": "kind", "type": "string"},
                            {"name": "name", "type": "string"},
                            {"name": "topic", "type": "string"},
                            {"name": "event_schema", "type": "string"},
                            {"name": "reply_schema", "type": ["null", "string"], "default": None},
                        ],
                    },
                },
                "default": [],
            },
            {"name": "reply_address", "type": ["null", "string"], "default": None},
            {"name": "metadata", "type": {"type": "map", "values": "string"}, "default": {}},
        ],
    }
)


def shop_catalog() -> Any:  # Any: a kit.catalog.Catalog
    return from_services([load_service(target) for target in SHOP])


def asyncapi_errors(doc: dict[str, Any]) -> list[str]:
    """Every violation of the AsyncAPI 3.0.0 JSON schema, and every $ref that points nowhere."""
    validator = jsonschema.Draft7Validator(json.loads(ASYNCAPI_SCHEMA.read_text()))
    found = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(doc)]
    return found + [f"dangling {ref}" for ref in _refs(doc) if not _resolves(doc, ref)]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolves(doc: dict[str, Any], ref: str) -> bool:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


# --- the offline catalog of the example shop ----------------------------------------------


def test_the_shops_graph_from_its_modules() -> None:
    catalog = shop_catalog()
    assert sorted(catalog.services) == ["inventory", "notifications", "orders", "payments"]
    topics = catalog.topics()
    placed = topics["orders.OrderPlaced"]
    assert placed.publishers == {"orders": {"orders.OrderPlaced"}}
    assert placed.consumers == [Consumer("payments", "on_order_placed", "orders.OrderPlaced")]
    assert topics["payments.PaymentFailed"].publishers == {"payments": {"payments.PaymentFailed"}}
    assert [c.service for c in topics["orders.OrderConfirmed"].consumers] == ["notifications"]
    assert topics["inventory.Restocked"].publishers == {}  # published from outside (the demo)
    answers = [
        (e.name, e.event_schema, e.reply_schema) for e in catalog.services["inventory"].responders
    ]
    assert answers == [
        ("release", "inventory.Release", "inventory.Released"),
        ("reserve", "inventory.Reserve", "inventory.Reservation"),
    ]
    assert "inventory.reserve" not in topics, "a request topic is a call target, not a stream"
    assert catalog.calls() == []  # calls are seen only live
    assert catalog.services["orders"].instances == 0 and catalog.live is False


def test_cli_from_modules_prints_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert kit_main(["catalog", "--from", *SHOP]) == 0
    out = capsys.readouterr().out
    assert "orders  2.0.0" in out
    assert "  orders.OrderPlaced\n    <- orders (orders.OrderPlaced)\n" in out
    assert "    -> payments.on_order_placed (orders.OrderPlaced)" in out
    assert (
        "answers   reserve @ inventory.reserve (inventory.Reserve -> inventory.Reservation)" in out
    )
    assert kit_main(["catalog", "--json", "--from", *SHOP]) == 0
    doc = json.loads(capsys.readouterr().out)
    payments = next(s for s in doc["services"] if s["name"] == "payments")
    assert payments["consumes"] == [
        {
            "topic": "orders.OrderPlaced",
            "schema": "orders.OrderPlaced",
            "handler": "on_order_placed",
        }
    ]
    assert payments["publishes"] == [
        {"topic": "payments.PaymentCompleted", "schemas": ["payments.PaymentCompleted"]},
        {"topic": "payments.PaymentFailed", "schemas": ["payments.PaymentFailed"]},
    ]


def test_asyncapi_of_the_shop_is_valid(tmp_path: Path) -> None:
    target = tmp_path / "shop.json"
    assert kit_main(["catalog", "--asyncapi", str(target), "--from", *SHOP]) == 0
    doc = json.loads(target.read_text())
    assert asyncapi_errors(doc) == []
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["orders.OrderPlaced"]["address"] == "orders.OrderPlaced"
    placed = doc["components"]["messages"]["orders.OrderPlaced"]["payload"]
    assert placed["schemaFormat"] == AVRO_FORMAT
    assert (placed["schema"]["name"], placed["schema"]["namespace"]) == ("OrderPlaced", "orders")
    assert doc["operations"]["payments.on_order_placed"]["action"] == "receive"
    assert doc["operations"]["orders.publish.orders.OrderPlaced"]["action"] == "send"
    reserve = doc["operations"]["inventory.reserve"]
    assert reserve["channel"] == {"$ref": "#/channels/inventory.reserve"}
    assert reserve["reply"]["address"]["location"] == "$message.header#/kit-reply-to"
    assert reserve["reply"]["messages"] == [
        {"$ref": "#/channels/inventory.reserve.reply/messages/inventory.Reservation"}
    ]


def test_the_validator_rejects_a_broken_document() -> None:
    doc = to_asyncapi(shop_catalog())
    assert asyncapi_errors(doc) == []
    broken = copy.deepcopy(doc)
    broken["operations"]["inventory.reserve"]["action"] = "publish"  # AsyncAPI 2's word
    del broken["channels"]["orders.OrderPlaced"]
    problems = asyncapi_errors(broken)
    assert any(p.startswith("['operations', 'inventory.reserve']") for p in problems)
    assert any(p.startswith("dangling #/channels/orders.OrderPlaced") for p in problems)


def test_mermaid_draws_services_topics_and_edges() -> None:
    text = to_mermaid(shop_catalog())
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    nodes = {line.split("[", 1)[1]: line.split("[", 1)[0].strip() for line in lines if "[" in line}
    orders, payments = nodes['"orders 2.0.0"]'], nodes['"payments 1.0.0"]']
    placed = nodes['/"orders.OrderPlaced"/]']
    assert f'    {orders} -->|"OrderPlaced"| {placed}' in lines
    assert f'    {placed} -->|"on_order_placed"| {payments}' in lines


# --- the live catalog: registrations ------------------------------------------------------


def demo_service() -> Service:
    svc = Service("catalogdemo", version="3.0.0")

    @svc.handler(topic="orders", publishes=[InvoiceIssued, ("audit", OrderPlaced)])
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        pass

    @svc.responder()
    async def quote(event: OrderPlaced) -> InvoiceIssued:
        raise NotImplementedError

    return svc


def counted() -> Stats:
    stats = Stats()
    stats.handler("on_order").handled = 7
    stats.handler("on_order").failed = 2
    stats.handler("on_order").busy = 0.028  # 7 handled: 4 ms each
    stats.call("billing", "invoice").sent = 3
    stats.call("billing", "invoice").timeouts = 1
    stats.learn_published("invoices", "billing.InvoiceIssued")
    return stats


def test_a_registration_carries_publishes_calls_and_stats() -> None:
    settings = load_settings(bootstrap_servers="127.0.0.1:1")
    reg = Announcer(demo_service(), settings, "demo-1", stats=counted()).registration()
    pubs = {p.topic: (p.schemas, p.handlers) for p in reg.publishes}
    assert pubs == {
        "audit": (["shop.OrderPlaced"], ["on_order"]),
        "billing.InvoiceIssued": (["billing.InvoiceIssued"], ["on_order"]),
        "invoices": (["billing.InvoiceIssued"], []),  # learned only
    }
    assert reg.calls == ["billing.invoice"]
    assert reg.stats is not None
    handler = reg.stats.handlers["on_order"]
    assert (handler.handled, handler.failed, handler.average_ms) == (7, 2, 4.0)
    call = reg.stats.calls["billing.invoice"]
    assert (call.sent, call.timeouts, call.in_flight) == (3, 1, 0)
    codec = Codec(REPOSITORY)
    assert codec.decode(codec.encode(reg), Registration) == reg
    again = reg.model_copy(update={"stats": None, "last_heartbeat": from_ms(0)})
    assert reg.same_except_heartbeat(again), "new counters are a heartbeat, not a change"
    assert not reg.same_except_heartbeat(again.model_copy(update={"calls": []}))


def test_publishes_takes_only_event_classes() -> None:
    svc = Service("bad")
    with pytest.raises(ConfigError, match="publishes= takes Event classes"):

        @svc.handler(publishes=[str])  # type: ignore[list-item]
        async def on_order(event: OrderPlaced) -> None:
            pass


def test_old_and_new_registrations_interoperate() -> None:
    settings = load_settings(bootstrap_servers="127.0.0.1:1")
    new_reg = Announcer(demo_service(), settings, "demo-2", stats=counted()).registration()
    new_schema = Registration.kit_schema()
    old = Codec()
    old.add_writer(new_schema.fingerprint, new_schema)
    seen_by_old = old.decode_dict(Codec(REPOSITORY).encode(new_reg), OLD_REGISTRATION)
    assert set(seen_by_old) == {f["name"] for f in OLD_REGISTRATION.parsed["fields"]}
    assert seen_by_old["instance_id"] == "demo-2" and len(seen_by_old["endpoints"]) == 2
    old_datum = {
        **{k: v for k, v in seen_by_old.items()},
        "started_at": datetime(2030, 1, 1, tzinfo=UTC),
        "last_heartbeat": datetime(2030, 1, 1, tzinfo=UTC),
    }
    data = Codec().encode_datum(OLD_REGISTRATION, old_datum)
    new = Codec(REPOSITORY)
    new.add_writer(OLD_REGISTRATION.fingerprint, OLD_REGISTRATION)
    read = new.decode(data, Registration)
    assert (read.instance_id, read.publishes, read.calls, read.stats) == ("demo-2", [], [], None)
    assert read.endpoints == new_reg.endpoints


def test_live_catalog_unions_instances() -> None:
    settings = load_settings(bootstrap_servers="127.0.0.1:1")
    one = Announcer(demo_service(), settings, "demo-a", stats=counted()).registration()
    two = Announcer(demo_service(), settings, "demo-b").registration()
    catalog = from_registrations([one, two.model_copy(update={"version": "3.1.0"})])
    view = catalog.services["catalogdemo"]
    assert (view.instances, sorted(view.versions)) == (2, ["3.0.0", "3.1.0"])
    assert [(c.caller, c.target) for c in catalog.calls()] == [("catalogdemo", "billing.invoice")]
    text = format_text(catalog, "_kit_registry")
    assert "catalogdemo  3.0.0, 3.1.0  2 instance(s)" in text
    assert "  catalogdemo -> billing.invoice" in text
    doc = to_json(catalog)
    assert doc["calls"] == [{"caller": "catalogdemo", "target": "billing.invoice"}]
    assert 'x0["billing (not running)"]' in to_mermaid(catalog)
    assert '-.->|"invoice"| x0' in to_mermaid(catalog)
    api = to_asyncapi(catalog, bootstrap_servers="127.0.0.1:9092")
    assert asyncapi_errors(api) == []
    assert api["operations"]["catalogdemo.call.billing.invoice"]["action"] == "send"
    unknown = api["components"]["messages"]["billing.InvoiceIssued"]
    assert "payload" not in unknown, "no schema lookup given: the message names its schema only"


def test_services_stats_table() -> None:
    settings = load_settings(bootstrap_servers="127.0.0.1:1")
    reg = Announcer(demo_service(), settings, "demo-s", stats=counted()).registration()
    now = reg.last_heartbeat.timestamp()
    text = format_table([reg], now, "_kit_registry", 6, stats=True)
    assert "on_order: 7 handled, 2 failed, 0 retried, 0 dead-lettered, avg 4 ms" in text
    assert "call billing.invoice: 3 sent, 1 timeouts, 0 errors, 0 in flight" in text
    assert "on_order: 7 handled" not in format_table([reg], now, "_kit_registry", 6)
    bare = reg.model_copy(update={"stats": None})
    assert "stats: none in its heartbeats" in format_table([bare], now, "r", 6, stats=True)


def test_catalog_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert kit_main(["catalog", "--json", "--mermaid", "--from", *SHOP]) == 2
    assert kit_main(["catalog", "--from"]) == 2
    assert kit_main(["catalog", "--from", "services.orders:nosuch"]) == 2
    err = capsys.readouterr().err
    assert "pick one" in err and "MODULE:SERVICE" in err and "has no attribute 'nosuch'" in err
