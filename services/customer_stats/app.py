"""The customer_stats Faust app: per-customer order counts in a table, served to kit.

Run it (the same KIT_* settings as kit services; KIT_GROUP_ID renames the app, and so
its consumer group and its table's changelog topic)::

    faust -A services.customer_stats.app worker -l info --without-web

- `count` reads kit's `orders.OrderConfirmed` (as `OrderConfirmed` events, kit's wire
  format), re-keys it by customer (Faust's `group_by`, through the topic
  `<app id>-orders-by-customer`), so that one worker owns each customer's row, adds it to
  the table `stats` (changelog topic `<app id>-stats-changelog`, compacted: a restarted
  worker rebuilds the table from it) and publishes the customer's new `CustomerStats` to
  `customer_stats.CustomerStats`.
- `get` answers the kit request `customer_stats.get` from the table. Requests are
  re-keyed by customer too (`route=`, through `<app id>-customer_stats.get-routed`), so
  the worker that holds a customer's row answers for that customer. Run one worker: with
  two, a test saw wrong answers after a rebalance (docs/faust.md, `route=`).

Limits: counting is at-least-once (an OrderConfirmed delivered twice, after a crash, is
counted twice).
"""

from __future__ import annotations

import faust

from kit import load_settings
from kit.faust import KitBridge, broker_url
from services.customer_stats import api
from services.customer_stats.events import CustomerStats, GetStats
from services.orders.events import OrderConfirmed

__all__ = ["app", "bridge", "count", "get", "stats"]

settings = load_settings()
app = faust.App(
    settings.group_id or "customer-stats",
    # the fallback only lets this module import with no broker configured (tests, tools):
    # `faust worker` then stops at its start with kit's error naming KIT_BOOTSTRAP_SERVERS
    broker=broker_url(settings, fallback="kafka://127.0.0.1:9092"),
    store="memory://",  # the changelog topic is the table's durable copy
    topic_partitions=settings.topic_partitions,
    # Faust's own topics (changelog, repartition); kit's -1 (the broker's default) is
    # not Faust's, whose default is 1: set KIT_TOPIC_REPLICATION in production
    topic_replication_factor=max(settings.topic_replication, 1),
    web_enabled=False,
)
stats = app.Table("stats", default=None, help="customer -> {orders, total_cents}")
"""customer -> {"orders": n, "total_cents": t}: written by `count`, read by `get`."""
bridge = KitBridge(app, api.service, settings)
confirmed = bridge.topic(OrderConfirmed)  # kit's topic: orders.OrderConfirmed
changes = bridge.topic(CustomerStats)  # customer_stats.CustomerStats, keyed by customer
by_customer = bridge.topic(OrderConfirmed, f"{app.conf.id}-orders-by-customer")


def _row(customer: str) -> dict[str, int]:
    return stats.get(customer) or {"orders": 0, "total_cents": 0}


def _customer(order: OrderConfirmed) -> str:
    return order.customer


@app.agent(confirmed)
async def count(orders: faust.StreamT[OrderConfirmed]) -> None:
    """Count each confirmed order for its customer, and publish the customer's stats."""
    async for order in orders.group_by(_customer, name="customer", topic=by_customer):
        row = _row(order.customer)
        row = {"orders": row["orders"] + 1, "total_cents": row["total_cents"] + order.total_cents}
        stats[order.customer] = row
        await changes.send(key=order.customer, value=CustomerStats(customer=order.customer, **row))


@bridge.responder(api.get, route=lambda request: request.customer)
async def get(request: GetStats) -> CustomerStats:
    """`customer_stats.get`: the customer's row of the table (zeros if none)."""
    return CustomerStats(customer=request.customer, **_row(request.customer))


if __name__ == "__main__":  # python -m services.customer_stats.app worker -l info
    app.main()
