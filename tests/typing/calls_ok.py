"""Checked by mypy in tests/unit/test_typing.py: typed calls that must pass."""

from __future__ import annotations

from typing import assert_type

from kit import Client, Context, Service
from kit.testing.harness import Harness
from tests.fixtures.events import CheckStock, OrderPlaced, StockLevel
from tests.fixtures.stockroom import check_stock

service = Service("typing-sample")


@service.handler()
async def on_order(event: OrderPlaced, ctx: Context) -> None:
    level = await ctx.request(check_stock, CheckStock(sku="tea", quantity=1))
    assert_type(level, StockLevel)
    print(level.available)  # an attribute of the reply type
    named = await ctx.request(
        "stockroom.check_stock", CheckStock(sku="x", quantity=1), reply=StockLevel
    )
    assert_type(named, StockLevel)


@service.responder()
def sync_check(request: CheckStock) -> StockLevel:
    return StockLevel(sku=request.sku, available=1, enough=True)


async def from_outside(client: Client, harness: Harness) -> None:
    assert_type(await client.request(check_stock, CheckStock(sku="tea", quantity=1)), StockLevel)
    assert_type(await harness.request(check_stock, CheckStock(sku="tea", quantity=1)), StockLevel)
    assert_type(await harness.request(sync_check, CheckStock(sku="tea", quantity=1)), StockLevel)
