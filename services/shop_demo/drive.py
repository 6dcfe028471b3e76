"""Driving the shop as its customers do: `orders.place_order` calls from a kit Client, timed.

Orders go one at a time, so the scenario is deterministic (see plan.py); stock arrives as
`inventory.Restocked` events, and the driver waits, with a deadline, until inventory has
handled them (its consumer group committed past them) before it counts on that stock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from kit import Client
from kit.errors import KitError
from kit.transport.kafka import admin_client, make_consumer
from services.inventory.events import Restocked
from services.orders.events import OrderLine, OrderResult, PlaceOrder
from services.shop_demo.plan import Plan, PlannedOrder

__all__ = ["Placed", "place", "place_all", "restock"]

PLACE_ORDER = "orders.place_order"
INVENTORY_GROUP = "inventory"


@dataclass
class Placed:
    """What one `orders.place_order` call gave: the reply (or the error) and its latency."""

    order_id: str
    accepted: bool
    reason: str | None
    total_cents: int
    latency_ms: float
    error: str | None = None
    """The error type when the call itself failed (no reply): a count that cannot add up."""


async def place(client: Client, order: PlannedOrder, timeout: float = 10.0) -> Placed:
    """Place one order and time the call from send to reply."""
    request = PlaceOrder(
        order_id=order.order_id,
        customer=order.customer,
        lines=[OrderLine(sku=s, quantity=q, unit_price_cents=p) for s, q, p in order.lines],
    )
    started = time.perf_counter()
    try:
        reply = await client.request(PLACE_ORDER, request, reply=OrderResult, timeout=timeout)
    except KitError as exc:
        ms = (time.perf_counter() - started) * 1000
        return Placed(order.order_id, False, str(exc), order.total_cents, ms, type(exc).__name__)
    ms = (time.perf_counter() - started) * 1000
    return Placed(reply.order_id, reply.accepted, reply.reason, reply.total_cents, ms)


def _committed(admin: AdminClient, group: str, topic: str, partitions: list[int]) -> list[int]:
    """The committed offsets of `group` on these partitions (-1001 where none)."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    futures = admin.list_consumer_group_offsets([request], request_timeout=10)
    result = futures[group].result(10)
    offsets = {tp.partition: tp.offset for tp in result.topic_partitions}
    return [offsets.get(p, -1001) for p in partitions]


def _end_offsets(client: Client, topic: str) -> dict[int, int]:
    """High watermarks of every partition of `topic`."""
    consumer = make_consumer(client.settings, "kit-shop-demo-watermarks")
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
            for p in meta.partitions
        }
    finally:
        consumer.close()


async def restock(client: Client, stock: dict[str, int], timeout: float = 60.0) -> None:
    """Publish one Restocked per SKU, then wait until inventory handled them: its group's
    committed offsets reach the topic's end offsets taken after the publish."""
    for sku, quantity in stock.items():
        await client.publish(Restocked(sku=sku, quantity=quantity), key=sku)
    topic = Restocked.kit_schema().full_name
    ends = await asyncio.to_thread(_end_offsets, client, topic)
    admin = admin_client(client.settings)
    deadline = time.monotonic() + timeout
    parts = [p for p, end in ends.items() if end > 0]
    while True:
        committed = await asyncio.to_thread(_committed, admin, INVENTORY_GROUP, topic, parts)
        if all(c >= ends[p] for p, c in zip(parts, committed, strict=True)):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"inventory did not handle the restock within {timeout:g}s "
                f"(committed {committed}, end {[ends[p] for p in parts]})"
            )
        await asyncio.sleep(0.1)  # poll interval of a wait with a deadline


async def place_all(
    client: Client,
    plan: Plan,
    say: Callable[[str], None],
    on_order: Callable[[int], Awaitable[None]] | None = None,
) -> list[Placed]:
    """Place every order of the plan in turn (restocking once, mid-run); show progress."""
    placed: list[Placed] = []
    step = max(1, len(plan.orders) // 10)
    for order in plan.orders:
        if order.index == plan.restock_before:
            sku, quantity = plan.restock
            await restock(client, {sku: quantity})
            say(f"restocked {quantity} x {sku} (Restocked event, handled by inventory)")
        if on_order is not None:
            await on_order(order.index)
        placed.append(await place(client, order))
        if (order.index + 1) % step == 0 or order.index + 1 == len(plan.orders):
            accepted = sum(1 for p in placed if p.accepted)
            say(
                f"orders {len(placed):>4}/{len(plan.orders)}: {accepted} accepted, "
                f"{len(placed) - accepted} rejected"
            )
    return placed
