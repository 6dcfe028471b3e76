"""The request-reply benchmark's request and reply (schemas/bench), as kit Events.

They are the old example's inventory.CheckStock and inventory.StockLevel field for field, so
the figures in docs/benchmarks.md stay comparable; the benchmark owns them, so it changes
neither with the example shop in services/ nor with kit's test fixtures.
"""

from __future__ import annotations

from kit import Event


class CheckStock(Event, schema="bench.CheckStock"):
    """Request: is there enough of a SKU?"""

    sku: str
    quantity: int
    request_id: str | None = None


class StockLevel(Event, schema="bench.StockLevel"):
    """Reply to CheckStock."""

    sku: str
    available: int
    enough: bool
    request_id: str | None = None
    served_by: str | None = None
