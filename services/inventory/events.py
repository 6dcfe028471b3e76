"""The inventory service's requests, replies and events (schemas/inventory)."""

from __future__ import annotations

from kit import Event

__all__ = ["Release", "Released", "Reservation", "Reserve", "Restocked", "StockLine"]


class StockLine(Event):
    """A quantity of one SKU (the nested record inventory.StockLine)."""

    sku: str
    quantity: int


class Reserve(Event, schema="inventory.Reserve"):
    """Request to `inventory.reserve`: hold these quantities for an order, all or nothing."""

    order_id: str
    lines: list[StockLine]


class Reservation(Event, schema="inventory.Reservation"):
    """Reply of `inventory.reserve`: reserved, or not, with the SKU that ran short."""

    order_id: str
    reserved: bool
    reason: str | None = None


class Release(Event, schema="inventory.Release"):
    """Request to `inventory.release`: give back what an order reserved."""

    order_id: str


class Released(Event, schema="inventory.Released"):
    """Reply of `inventory.release`: False when the order held nothing."""

    order_id: str
    released: bool


class Restocked(Event, schema="inventory.Restocked"):
    """Goods arrived: add `quantity` to a SKU's stock."""

    sku: str
    quantity: int
