"""kit catalog and kit services --stats on a real broker: two running services, one
handler that calls a responder and publishes an event, and what their heartbeats carry."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kit import Client, Context, Service, Settings
from kit.registry import Registration, Registry
from kit.testing.wait import wait_until_async
from tests.fixtures.events import CheckStock, InvoiceIssued, OrderPlaced, StockLevel
from tests.integration.helpers import order, running
from tests.unit.test_catalog import asyncapi_errors

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ORDERS = 3


def kit_cli(*args: str) -> str:
    """Run `kit ARGS` in a child process (the environment names the broker); its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "kit.cli", *args],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"kit {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return done.stdout


def stockroom(name: str, invoices: str) -> Service:
    """A responder `check`, and a handler of the invoices topic."""
    svc = Service(name, version="2.0.0")

    @svc.responder()
    async def check(request: CheckStock) -> StockLevel:
        return StockLevel(sku=request.sku, available=5, enough=request.quantity <= 5)

    @svc.handler(topic=invoices)
    async def on_invoice(invoice: InvoiceIssued) -> None:
        pass

    return svc


def orderdesk(name: str, orders: str, invoices: str, check: Any) -> Service:  # Any: responder
    """Handles each order: calls the stockroom's `check`, then publishes an invoice."""
    svc = Service(name, version="1.4.0")

    @svc.handler(topic=orders)
    async def on_order(placed: OrderPlaced, ctx: Context) -> None:
        level = await ctx.request(check, CheckStock(sku="tea", quantity=1))
        assert level.enough
        invoice = InvoiceIssued(
            invoice_id=f"inv-{placed.order_id}",
            order_id=placed.order_id,
            total_cents=100,
            issued_at=placed.placed_at,
        )
        ctx.publish(invoice, topic=invoices, key=placed.order_id)

    return svc


def handled(reg: Registration | None, handler: str) -> int:
    if reg is None or reg.stats is None or handler not in reg.stats.handlers:
        return 0
    return reg.stats.handlers[handler].handled


def test_catalog_and_stats_of_running_services(
    kit_settings: Settings,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    reg_topic = unique_name("registry")
    monkeypatch.setenv("KIT_REGISTRY_TOPIC", reg_topic)  # runtimes, requesters and the CLI
    monkeypatch.setenv("KIT_REGISTRY_HEARTBEAT", "0.3")
    orders, invoices = unique_name("orders"), unique_name("invoices")
    stock_name, desk_name = unique_name("stock"), unique_name("desk")
    stock = stockroom(stock_name, invoices)
    check = next(h for h in stock.handlers if h.name == "check").func
    desk = orderdesk(desk_name, orders, invoices, check)

    async def scenario() -> None:
        async with (
            running(stock, kit_settings),
            running(desk, kit_settings),
            Client(kit_settings) as client,
            Registry(kit_settings, topic=reg_topic, clean=False) as registry,
        ):
            for n in range(ORDERS):
                await client.publish(order(n), topic=orders, key=f"o-{n}")

            def counted() -> bool:
                desk_reg = next(iter(registry.lookup(desk_name)), None)
                stock_reg = next(iter(registry.lookup(stock_name)), None)
                return (
                    handled(desk_reg, "on_order") == ORDERS
                    and handled(stock_reg, "check") == ORDERS
                    and handled(stock_reg, "on_invoice") == ORDERS
                )

            await wait_until_async(counted, timeout=60)
            await asyncio.to_thread(check_cli, stock_name, desk_name, orders, invoices, tmp_path)

    asyncio.run(scenario())


def check_cli(stock: str, desk: str, orders: str, invoices: str, tmp_path: Path) -> None:
    text = kit_cli("services", "--stats")
    assert f"on_order: {ORDERS} handled, 0 failed, 0 retried, 0 dead-lettered" in text
    assert f"check: {ORDERS} handled, 0 failed" in text
    assert f"call {stock}.check: {ORDERS} sent, 0 timeouts, 0 errors, 0 in flight" in text

    doc = json.loads(kit_cli("catalog", "--json"))
    services = {s["name"]: s for s in doc["services"]}
    assert services[desk]["instances"] == 1 and services[desk]["versions"] == ["1.4.0"]
    assert services[desk]["consumes"] == [
        {"topic": orders, "schema": "shop.OrderPlaced", "handler": "on_order"}
    ]
    assert services[desk]["publishes"] == [
        {"topic": invoices, "schemas": ["billing.InvoiceIssued"]}
    ]
    assert services[desk]["calls"] == [f"{stock}.check"]
    assert services[desk]["answers"] == []
    assert services[stock]["answers"] == [
        {
            "name": "check",
            "topic": f"{stock}.check",
            "request": "inventory.CheckStock",
            "reply": "inventory.StockLevel",
        }
    ]
    assert services[stock]["calls"] == [] and services[stock]["publishes"] == []
    topics = {t["topic"]: t for t in doc["topics"]}
    assert topics[invoices]["publishers"] == {desk: ["billing.InvoiceIssued"]}
    assert topics[invoices]["consumers"] == [
        {"service": stock, "handler": "on_invoice", "schema": "billing.InvoiceIssued"}
    ]
    assert topics[orders]["publishers"] == {}  # the test's client is not a service
    assert doc["calls"] == [{"caller": desk, "target": f"{stock}.check"}]

    text = kit_cli("catalog")
    assert f"  {desk} -> {stock}.check" in text
    assert f"{desk}  1.4.0  1 instance(s)" in text

    target = tmp_path / "live.json"
    kit_cli("catalog", "--asyncapi", str(target))
    api = json.loads(target.read_text())
    assert asyncapi_errors(api) == []
    messages = api["components"]["messages"]
    for name in ("shop.OrderPlaced", "billing.InvoiceIssued", "inventory.StockLevel"):
        assert messages[name]["payload"]["schema"]["name"] == name.rpartition(".")[2]
    call = api["operations"][f"{desk}.call.{stock}.check"]
    assert call["action"] == "send" and call["channel"] == {"$ref": f"#/channels/{stock}.check"}
    assert api["operations"][f"{desk}.publish.{invoices}"]["action"] == "send"

    mermaid = kit_cli("catalog", "--mermaid")
    assert mermaid.startswith("flowchart LR")
    assert '-.->|"check"|' in mermaid
