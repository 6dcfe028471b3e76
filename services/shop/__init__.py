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
