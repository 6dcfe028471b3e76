"""Checked by mypy in tests/unit/test_typing.py: each line marked as an error must be one."""

from __future__ import annotations

from kit import Context, Service
from tests.fixtures.events import CheckStock, OrderPlaced
from tests.fixtures.stockroom import check_stock

service = Service("typing-bad")


@service.handler()
async def on_order(event: OrderPlaced, ctx: Context) -> None:
    level = await ctx.request(check_stock, CheckStock(sku="tea", quantity=1))
    print(level.tracking_number)  # error: not an attribute of StockLevel
    await ctx.request(check_stock, event)  # error: OrderPlaced is not a CheckStock
