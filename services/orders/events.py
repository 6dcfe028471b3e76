"""The orders service's events and its `place_order` request and reply (schemas/orders).

Every event is owned by the service that emits it; consumers import it from here.
"""

from __future__ import annotations

from datetime import datetime

from kit import Event

__all__ = [
    "OrderCancelled",
    "OrderConfirmed",
    "OrderLine",
    "OrderPlaced",
    "OrderResult",
    "PlaceOrder",
]


class OrderLine(Event):
    """One line of an order (the nested record orders.OrderLine)."""

    sku: str
    quantity: int
    unit_price_cents: int


class PlaceOrder(Event, schema="orders.PlaceOrder"):
    """Request to `orders.place_order`: a customer wants these lines."""

    order_id: str
    customer: str
    lines: list[OrderLine]


class OrderResult(Event, schema="orders.OrderResult"):
    """Reply of `orders.place_order`: accepted, or rejected with a reason."""

    order_id: str
    accepted: bool
    total_cents: int
    reason: str | None = None


class OrderPlaced(Event, schema="orders.OrderPlaced"):
    """An order was accepted and its stock reserved; payment follows."""

    order_id: str
    customer: str
    lines: list[OrderLine]
    total_cents: int
    placed_at: datetime


class OrderConfirmed(Event, schema="orders.OrderConfirmed"):
    """An order was paid for and is final."""

    order_id: str
    customer: str
    total_cents: int
    confirmed_at: datetime


class OrderCancelled(Event, schema="orders.OrderCancelled"):
    """An order's payment failed; its reservation was released."""

    order_id: str
    customer: str
    total_cents: int
    reason: str
    cancelled_at: datetime
