"""The in-process harness: services on the memory transport, deterministic and broker-free."""

from __future__ import annotations

import asyncio

import pytest

from kit import Context, RemoteError, Service
from kit.testing.harness import Harness
from tests.fixtures import billing, orderdesk, stockroom
from tests.fixtures.events import (
    CheckStock,
    InvoiceIssued,
    OrderChecked,
    OrderLine,
    StockLevel,
)
from tests.integration.helpers import order


def run(coro):
    return asyncio.run(coro)


def test_events_flow_through_a_service_and_come_back_typed() -> None:
    h = Harness(billing.service)
    for n in range(3):
        h.send(order(n), key=f"o-{n}")
    assert run(h.run()) == 3
    invoices = h.emitted(InvoiceIssued)
    assert [i.order_id for i in invoices] == ["o-0", "o-1", "o-2"]
    assert invoices[1].total_cents == 101
    assert [o.key for o in h.outputs] == [b"o-0", b"o-1", b"o-2"]


def test_bad_input_and_failing_handlers_are_dead_lettered_like_on_kafka() -> None:
    h = Harness(billing.service)
    h.send_raw("shop.OrderPlaced", b"garbage", key="g")
    h.send(order(1, quantity=0), key="zero")  # billing raises on a non-positive quantity
    h.send(order(2), key="ok")
    run(h.run())
    letters = h.dead_letters("shop.OrderPlaced")
    assert [d.key for d in letters] == [b"g", b"zero"]
    assert letters[0].headers["kit-dlt-reason"] == b"decode"
    assert letters[1].headers["kit-dlt-reason"] == b"handler"
    assert letters[1].headers["kit-dlt-attempts"] == b"4"  # 1 + KIT_RETRIES (3)
    assert [i.order_id for i in h.emitted(InvoiceIssued)] == ["o-2"]


def test_requests_between_services_are_answered_by_harness_responders() -> None:
    h = Harness(orderdesk.service, stockroom.service)
    big = order(2).model_copy(
        update={"lines": [OrderLine(sku="cake", quantity=50, unit_price_cents=1)]}
    )
    unknown = order(3).model_copy(
        update={"lines": [OrderLine(sku="caviar", quantity=1, unit_price_cents=1)]}
    )
    for o in (order(1), big, unknown):
        h.send(o, key=o.order_id)
    run(h.run())
    checked = {c.order_id: c for c in h.emitted(OrderChecked)}
    assert checked["o-1"].accepted is True
    assert checked["o-2"].accepted is False and checked["o-2"].reason == "cake: only 12 left"
    assert checked["o-3"].reason == "caviar: \"unknown sku 'caviar'\""
    assert len(h.replies("stockroom")) == 3


def test_harness_request_returns_typed_reply_or_remote_error() -> None:
    h = Harness(stockroom.service)
    level = run(h.request(stockroom.check_stock, CheckStock(sku="tea", quantity=1)))
    assert isinstance(level, StockLevel) and level.available == 100
    with pytest.raises(RemoteError, match="KeyError"):
        run(h.request("stockroom.check_stock", CheckStock(sku="x", quantity=1), reply=StockLevel))


def test_a_reply_that_cannot_be_encoded_is_a_remote_error_not_a_crash() -> None:
    svc = Service("broken")
    calls: list[str] = []

    @svc.responder()
    async def check(request: CheckStock) -> StockLevel:
        calls.append(request.sku)
        # model_construct skips validation: sku is not a string, so Avro cannot encode it
        return StockLevel.model_construct(sku=5, available=1, enough=True)

    h = Harness(svc)
    with pytest.raises(RemoteError, match="EncodeError"):
        run(h.request(check, CheckStock(sku="tea", quantity=1)))
    assert calls == ["tea"]  # responders do not retry by default: the caller is waiting


def test_same_input_gives_the_same_output() -> None:
    def once() -> list[tuple[str, bytes | None, bytes | None]]:
        h = Harness(orderdesk.service, stockroom.service, billing.service, partitions=3)
        for n in range(20):
            h.send(order(n, quantity=n % 4), key=f"o-{n}")
        run(h.run())
        return [(o.topic, o.key, o.value) for o in h.outputs]

    first = once()
    assert first and first == once()


def test_plain_function_handlers_and_chained_services() -> None:
    seen: list[str] = []
    audit = Service("audit")

    @audit.handler(topic="billing.InvoiceIssued")
    def on_invoice(invoice: InvoiceIssued, ctx: Context) -> None:  # a plain, non-async handler
        seen.append(f"{invoice.invoice_id}@{ctx.topic}[{ctx.partition}]")

    h = Harness(billing.service, audit)
    h.send(order(7), key="o-7")
    run(h.run())
    assert seen == ["inv-o-7@billing.InvoiceIssued[0]"]
    assert isinstance(h.emitted(InvoiceIssued)[0], InvoiceIssued)


def test_fixture_and_assertion_helpers_explain_a_miss(kit_harness) -> None:
    from datetime import UTC, datetime

    from kit.testing.assertions import assert_emitted, assert_no_dead_letters

    h = kit_harness(billing.service)
    h.send(order(1), key="o-1")
    run(h.run())
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    assert_emitted(
        h, InvoiceIssued(invoice_id="inv-o-1", order_id="o-1", total_cents=101, issued_at=issued)
    )
    assert_no_dead_letters(h)
    with pytest.raises(AssertionError) as info:
        assert_emitted(
            h,
            InvoiceIssued(invoice_id="inv-o-1", order_id="o-1", total_cents=999, issued_at=issued),
        )
    assert "total_cents: expected 999, got 101" in str(info.value)
    h.send_raw("shop.OrderPlaced", b"junk")
    run(h.run())
    with pytest.raises(AssertionError, match="DecodeError"):
        assert_no_dead_letters(h)
