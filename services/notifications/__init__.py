"""The notifications service: tells customers how their orders ended.

Events only: it handles the **events** `OrderConfirmed` and `OrderCancelled` and sends
nothing back; no service waits for a notification, and a notification waits in its
topic while this service is down.

It does not send mail: it writes what it would send, one line per notification, to the
logger `services.notifications` at INFO (with `kit run`, on the process's stderr), and,
when `SHOP_NOTIFICATIONS_FILE` names a file, appends the same line to that file (in a
worker thread). At-least-once delivery means a customer may, rarely, be told twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from kit import Service
from services.orders.events import OrderCancelled, OrderConfirmed

__all__ = ["on_order_cancelled", "on_order_confirmed", "service"]

log = logging.getLogger("services.notifications")

service = Service("notifications", version="1.0.0", description="Tells customers about orders.")


def _euros(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d} EUR"


async def notify(line: str) -> None:
    """Write one notification: a log line, and a line of SHOP_NOTIFICATIONS_FILE if set."""
    log.info("%s", line)
    path = os.environ.get("SHOP_NOTIFICATIONS_FILE")
    if path:
        await asyncio.to_thread(_append, Path(path), line)


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write(line + "\n")


@service.handler()
async def on_order_confirmed(event: OrderConfirmed) -> None:
    """Tell the customer the order is confirmed and paid."""
    await notify(
        f"to {event.customer}: order {event.order_id} is confirmed; "
        f"{_euros(event.total_cents)} charged"
    )


@service.handler()
async def on_order_cancelled(event: OrderCancelled) -> None:
    """Tell the customer the order is cancelled, and why."""
    await notify(
        f"to {event.customer}: order {event.order_id} ({_euros(event.total_cents)}) "
        f"is cancelled: {event.reason}"
    )
