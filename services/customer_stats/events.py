"""The customer_stats service's request and reply (schemas/customer_stats)."""

from __future__ import annotations

from kit import Event

__all__ = ["CustomerStats", "GetStats"]


class GetStats(Event, schema="customer_stats.GetStats"):
    """Request to `customer_stats.get`: the stats of one customer."""

    customer: str


class CustomerStats(Event, schema="customer_stats.CustomerStats"):
    """One customer's confirmed orders so far: the reply of `customer_stats.get`, and the
    event on topic `customer_stats.CustomerStats` after each change (key: customer)."""

    customer: str
    orders: int
    total_cents: int
