"""Typed events of the example shop domain, bound to schemas/shop and schemas/billing."""

from __future__ import annotations

from datetime import datetime

from kit import Event


class OrderLine(Event):
    """One line of an order (the nested record shop.OrderLine)."""

    sku: str
    quantity: int
    unit_price_cents: int


class OrderPlaced(Event, schema="shop.OrderPlaced"):
    """A customer placed an order."""

    order_id: str
    customer: str
    lines: list[OrderLine]
    placed_at: datetime
    note: str | None = None


class InvoiceIssued(Event, schema="billing.InvoiceIssued"):
    """Billing issued an invoice for an order."""

    invoice_id: str
    order_id: str
    total_cents: int
    currency: str = "EUR"
    issued_at: datetime


class OrderChecked(Event, schema="shop.OrderChecked"):
    """The orders service checked stock for an order."""

    order_id: str
    accepted: bool
    reason: str | None = None


class CheckStock(Event, schema="inventory.CheckStock"):
    """Request to the inventory service: is there enough of a SKU?"""

    sku: str
    quantity: int
    request_id: str | None = None


class StockLevel(Event, schema="inventory.StockLevel"):
    """Reply of the inventory service."""

    sku: str
    available: int
    enough: bool
    request_id: str | None = None
    served_by: str | None = None
