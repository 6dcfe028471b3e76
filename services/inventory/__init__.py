"""The inventory service: answers synchronous stock checks (a responder, request-reply)."""

from __future__ import annotations

import os

from kit import Context, Service
from services.shop import CheckStock, StockLevel

service = Service("inventory", version="1.0.0", description="Answers stock checks.")

STOCK = {"tea": 100, "cake": 12, "scones": 0}


@service.responder()
async def check_stock(request: CheckStock, ctx: Context) -> StockLevel:
    """Reply with the stock level of a SKU; unknown SKUs are an error for the caller."""
    if request.sku not in STOCK:
        raise KeyError(f"unknown sku {request.sku!r}")
    available = STOCK[request.sku]
    return StockLevel(
        sku=request.sku,
        available=available,
        enough=available >= request.quantity,
        request_id=request.request_id,
        served_by=os.environ.get("INVENTORY_INSTANCE_LABEL"),  # the demo's, not kit's
    )
