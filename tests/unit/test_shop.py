"""The example shop (orders, inventory, payments, notifications) in the in-memory Harness."""

from __future__ import annotations

import logging
import time

import pytest

from kit import ConfigError, Runtime, Service
from kit.testing.assertions import assert_no_dead_letters
from kit.testing.harness import Harness
from services import inventory, notifications, orders, payments
from services.inventory.events import Release, Reserve, Restocked, StockLine
from services.inventory.stock import Stock, parse_stock
from services.orders.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderLine,
    OrderPlaced,
    OrderResult,
    PlaceOrder,
)
from services.payments.events import PaymentCompleted, PaymentFailed

STATE = "inventory.state"


@pytest.fixture(autouse=True)
def shop_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shop's settings at their defaults, whatever the environment says."""
    for name in (
        "SHOP_INITIAL_STOCK",
        "SHOP_INVENTORY_TOPIC",
        "SHOP_PAYMENT_DELAY",
        "SHOP_NOTIFICATIONS_FILE",
        "SHOP_RESERVE_TIMEOUT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SHOP_PAYMENT_LIMIT_CENTS", "10000")


def shop() -> Harness:
    return Harness(orders.service, inventory.service, payments.service, notifications.service)


async def restock(h: Harness, **skus: int) -> None:
    for sku, quantity in skus.items():
        h.send(Restocked(sku=sku, quantity=quantity), key=sku)
    await h.run()


def place(order_id: str, *lines: tuple[str, int, int], customer: str = "ada") -> PlaceOrder:
    return PlaceOrder(
        order_id=order_id,
        customer=customer,
        lines=[OrderLine(sku=s, quantity=q, unit_price_cents=p) for s, q, p in lines],
    )


def notes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "services.notifications"]


async def test_an_accepted_order_is_paid_confirmed_and_notified(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="services.notifications")
    h = shop()
    await restock(h, tea=5)
    result = await h.request(orders.place_order, place("o-1", ("tea", 2, 350)))
    assert result == OrderResult(order_id="o-1", accepted=True, total_cents=700)
    await h.run()
    placed = h.emitted(OrderPlaced)
    assert [(p.order_id, p.customer, p.total_cents) for p in placed] == [("o-1", "ada", 700)]
    assert h.emitted(PaymentCompleted) == [
        PaymentCompleted(order_id="o-1", customer="ada", amount_cents=700)
    ]
    assert [(c.order_id, c.customer, c.total_cents) for c in h.emitted(OrderConfirmed)] == [
        ("o-1", "ada", 700)
    ]
    assert h.emitted(PaymentFailed) == [] and h.emitted(OrderCancelled) == []
    assert notes(caplog) == ["to ada: order o-1 is confirmed; 7.00 EUR charged"]
    assert inventory.inventory().stock.available == {"tea": 3}
    assert_no_dead_letters(h)


async def test_orders_beyond_the_stock_are_rejected_all_or_nothing() -> None:
    h = shop()
    await restock(h, tea=2, cake=5)
    first = await h.request(orders.place_order, place("o-1", ("tea", 2, 100)))
    short = await h.request(orders.place_order, place("o-2", ("cake", 1, 50), ("tea", 1, 100)))
    unknown = await h.request(orders.place_order, place("o-3", ("caviar", 1, 9000)))
    assert first.accepted is True
    assert short == OrderResult(
        order_id="o-2",
        accepted=False,
        total_cents=150,
        reason="not enough 'tea': 1 wanted, 0 available",
    )
    assert unknown.accepted is False and unknown.reason == "unknown sku 'caviar'"
    assert inventory.inventory().stock.available == {"tea": 0, "cake": 5}  # o-2 held no cake
    await h.run()
    assert [p.order_id for p in h.emitted(OrderPlaced)] == ["o-1"]
    assert [c.order_id for c in h.emitted(OrderConfirmed)] == ["o-1"]
    assert_no_dead_letters(h)


async def test_a_failed_payment_cancels_the_order_and_releases_its_stock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="services.notifications")
    h = shop()
    await restock(h, tea=5)
    big = await h.request(orders.place_order, place("o-9", ("tea", 4, 3000), customer="bob"))
    assert big.accepted is True and big.total_cents == 12000  # over the 10000 limit
    assert inventory.inventory().stock.available == {"tea": 1}
    await h.run()
    reason = "amount 12000 cents is over the limit of 10000 cents"
    assert [f.reason for f in h.emitted(PaymentFailed)] == [reason]
    cancelled = h.emitted(OrderCancelled)
    assert [(c.order_id, c.customer, c.total_cents, c.reason) for c in cancelled] == [
        ("o-9", "bob", 12000, reason)
    ]
    assert h.emitted(OrderConfirmed) == []
    assert inventory.inventory().stock.available == {"tea": 5}
    assert inventory.inventory().stock.held == {}
    assert notes(caplog) == [f"to bob: order o-9 (120.00 EUR) is cancelled: {reason}"]
    assert len(h.replies("inventory")) == 2  # one reserve, one release
    assert_no_dead_letters(h)


async def test_reserve_and_release_are_idempotent() -> None:
    h = Harness(inventory.service)
    await restock(h, tea=5)
    request = Reserve(order_id="o-1", lines=[StockLine(sku="tea", quantity=3)])
    first = await h.request(inventory.reserve, request)
    again = await h.request(inventory.reserve, request)
    assert first.reserved and again.reserved
    assert inventory.inventory().stock.available == {"tea": 2}  # reserved once
    released = [
        (await h.request(inventory.release, Release(order_id=o))).released
        for o in ("o-1", "o-1", "never-reserved")
    ]
    assert released == [True, False, False]
    assert inventory.inventory().stock.available == {"tea": 5}
    keys = [m.key() for m in h.broker.topics[STATE][0]]
    # restock: sku + offset; reserve: sku + order; the retry: nothing; release: sku + tombstone
    assert keys == [
        b"sku/tea",
        b"offset/inventory.Restocked/0",
        b"sku/tea",
        b"order/o-1",
        b"sku/tea",
        b"order/o-1",
    ]
    assert h.broker.topics[STATE][0][-1].value() is None


def test_a_restock_event_delivered_twice_is_applied_once() -> None:
    stock = Stock()
    for change in stock.restock("tea", 4, "inventory.Restocked", 0, offset=7):
        stock.apply(change)
    assert stock.restock("tea", 4, "inventory.Restocked", 0, offset=7) == []
    assert stock.available == {"tea": 4}


def test_the_initial_stock_setting_is_checked() -> None:
    assert parse_stock(" tea=10, cake=0 ,") == {"tea": 10, "cake": 0}
    with pytest.raises(ConfigError, match="SHOP_INITIAL_STOCK: expected SKU=COUNT"):
        parse_stock("tea=x")


async def test_inventory_down_rejects_an_order_at_once() -> None:
    h = Harness(orders.service)  # no inventory: the call finds no instance to answer it
    began = time.monotonic()
    result = await h.request(orders.place_order, place("o-1", ("tea", 1, 100)), timeout=30)
    assert time.monotonic() - began < 2  # not the 30 s deadline, nor the 5 s reserve one
    assert result.accepted is False and result.total_cents == 100
    assert result.reason is not None and result.reason.startswith("inventory unavailable: ")
    assert "inventory" in result.reason
    await h.run()
    assert h.emitted(OrderPlaced) == []
    assert_no_dead_letters(h)


async def test_a_restarted_inventory_rebuilds_its_stock_from_the_state_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_INITIAL_STOCK", "tea=5,cake=2")
    before = Harness(inventory.service)
    request = Reserve(order_id="o-1", lines=[StockLine(sku="tea", quantity=3)])
    assert (await before.request(inventory.reserve, request)).reserved
    records = before.broker.topics[STATE][0]
    assert [m.key() for m in records] == [b"sku/cake", b"sku/tea", b"sku/tea", b"order/o-1"]

    monkeypatch.setenv("SHOP_INITIAL_STOCK", "tea=100")  # ignored: the topic is not empty
    after = Harness(inventory.service)
    for m in records:
        after.send_raw(STATE, m.value(), key=m.key())
    await after.start()
    assert inventory.inventory().stock.available == {"cake": 2, "tea": 2}
    assert (await after.request(inventory.reserve, request)).reserved  # still held: no change
    assert inventory.inventory().stock.available == {"cake": 2, "tea": 2}
    assert (await after.request(inventory.release, Release(order_id="o-1"))).released
    assert inventory.inventory().stock.available == {"cake": 2, "tea": 5}


async def test_start_hooks_run_in_order_before_the_service_subscribes() -> None:
    svc = Service("hooked")
    seen: list[tuple[str, object]] = []

    @svc.on_start
    async def first(runtime: Runtime) -> None:
        seen.append(("first", list(runtime.consumer.topics)))  # type: ignore[attr-defined]

    @svc.on_start
    async def second(runtime: Runtime) -> None:
        seen.append(("second", list(runtime.consumer.topics)))  # type: ignore[attr-defined]

    @svc.handler()
    async def on_restocked(event: Restocked) -> None:
        seen.append(("handled", event.sku))

    h = Harness(svc)
    h.send(Restocked(sku="tea", quantity=1), key="tea")
    assert await h.run() == 1
    assert seen == [("first", []), ("second", []), ("handled", "tea")]
