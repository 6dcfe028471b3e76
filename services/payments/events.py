"""The payments service's events (schemas/payments)."""

from __future__ import annotations

from kit import Event

__all__ = ["PaymentCompleted", "PaymentFailed"]


class PaymentCompleted(Event, schema="payments.PaymentCompleted"):
    """An order's payment went through."""

    order_id: str
    customer: str
    amount_cents: int


class PaymentFailed(Event, schema="payments.PaymentFailed"):
    """An order's payment was refused."""

    order_id: str
    customer: str
    amount_cents: int
    reason: str
