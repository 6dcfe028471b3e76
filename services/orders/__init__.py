"""The orders service: takes orders, and confirms or cancels them once payment is known.

Calls and events:

- `place_order` is a **call** (a responder): the customer waits for "accepted" or "no,
  because ...". It **calls** `inventory.reserve` in turn, because the order cannot be
  accepted before the stock is held.
- Accepting an order publishes the **event** `OrderPlaced`: payment happens later, and
  whoever cares (payments) subscribes; orders does not wait for it.
- `PaymentCompleted` and `PaymentFailed` are **events** orders handles: it publishes
  `OrderConfirmed`, or `OrderCancelled` after **calling** `inventory.release` (the
  cancellation is announced only once the stock is given back).

Calls fail fast: orders finds inventory through kit's registry, so when no inventory
instance is live, `ctx.request` raises `ServiceUnavailable` at once (not after its
deadline) and `place_order` replies at once `accepted=False, reason="inventory
unavailable: ..."`. A reserve that times out is rejected too ("inventory did not
answer"). Inventory skips a request still queued at its deadline, so such a reserve
mostly holds nothing; one handled just before its deadline, whose reply came too late,
holds stock for a rejected order until someone releases it (a gap this example leaves
open: a sweep releasing reservations with no OrderPlaced would close it). In
`on_payment_failed`, an unavailable inventory is a transient failure: kit retries the
event for KIT_TRANSIENT_TIMEOUT seconds (30), then dead-letters it (`kit dlt redrive`
sends it back). Limit: while it retries, this instance fetches nothing new, because a
batch is handled whole before the next fetch; so a `place_order` that arrives then waits
up to that long instead of failing fast. A lower `transient_timeout` on the handler
would trade that for more dead letters.

Delivery is at least once: a retried `place_order` of an accepted order reserves
nothing more, but publishes `OrderPlaced` again, so its consumers should treat
`OrderPlaced` per `order_id` idempotently.
"""

from __future__ import annotations

import logging
import os
import time

from kit import Context, RemoteError, RequestTimeout, Service, ServiceUnavailable
from kit.protocol import DEADLINE
from services.inventory import release, reserve
from services.inventory.events import Release, Reservation, Reserve, StockLine
from services.orders.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderPlaced,
    OrderResult,
    PlaceOrder,
)
from services.payments.events import PaymentCompleted, PaymentFailed

__all__ = ["on_payment_completed", "on_payment_failed", "place_order", "service"]

log = logging.getLogger("services.orders")

service = Service(
    "orders", version="2.0.0", description="Takes orders; confirms or cancels them after payment."
)


def reserve_timeout(ctx: Context) -> float:
    """Seconds to wait for inventory: SHOP_RESERVE_TIMEOUT (default 5), and less than what
    is left of the caller's own deadline, so the caller hears why rather than timing out."""
    wanted = float(os.environ.get("SHOP_RESERVE_TIMEOUT", "5"))
    raw = ctx.headers.get(DEADLINE)  # epoch milliseconds, set by the caller's kit
    if raw is None:
        return wanted
    left = int(raw) / 1000 - time.time()
    return max(0.05, min(wanted, left * 0.8))


async def _reserve(request: PlaceOrder, ctx: Context) -> Reservation | str:
    """Inventory's answer, or why there is none."""
    lines = [StockLine(sku=line.sku, quantity=line.quantity) for line in request.lines]
    try:
        return await ctx.request(
            reserve,
            Reserve(order_id=request.order_id, lines=lines),
            key=request.order_id,
            timeout=reserve_timeout(ctx),
        )
    except ServiceUnavailable as exc:
        return f"inventory unavailable: {exc}"
    except RequestTimeout as exc:
        return f"inventory did not answer: {exc}"
    except RemoteError as exc:
        return f"inventory failed: {exc.error_type}: {exc.message}"


@service.responder(publishes=[OrderPlaced])
async def place_order(request: PlaceOrder, ctx: Context) -> OrderResult:
    """Accept the order if inventory holds its stock; then publish OrderPlaced."""
    order_id = request.order_id
    total = sum(line.quantity * line.unit_price_cents for line in request.lines)
    answer = await _reserve(request, ctx)
    if isinstance(answer, str) or not answer.reserved:
        reason = answer if isinstance(answer, str) else answer.reason or "not reserved"
        log.info("order %s rejected: %s", order_id, reason)
        return OrderResult(order_id=order_id, accepted=False, total_cents=total, reason=reason)
    placed = OrderPlaced(
        order_id=order_id,
        customer=request.customer,
        lines=request.lines,
        total_cents=total,
        placed_at=ctx.timestamp,
    )
    ctx.publish(placed, key=order_id)
    log.info("order %s placed: %d cents", order_id, total)
    return OrderResult(order_id=order_id, accepted=True, total_cents=total)


@service.handler(publishes=[OrderConfirmed])
async def on_payment_completed(paid: PaymentCompleted, ctx: Context) -> None:
    """The order is paid for: it is final."""
    confirmed = OrderConfirmed(
        order_id=paid.order_id,
        customer=paid.customer,
        total_cents=paid.amount_cents,
        confirmed_at=ctx.timestamp,
    )
    ctx.publish(confirmed, key=paid.order_id)


@service.handler(publishes=[OrderCancelled])
async def on_payment_failed(failed: PaymentFailed, ctx: Context) -> None:
    """Give the order's stock back, then announce the cancellation."""
    released = await ctx.request(release, Release(order_id=failed.order_id), key=failed.order_id)
    if not released.released:  # a redelivered event: released the first time
        log.info("order %s: nothing left to release", failed.order_id)
    cancelled = OrderCancelled(
        order_id=failed.order_id,
        customer=failed.customer,
        total_cents=failed.amount_cents,
        reason=failed.reason,
        cancelled_at=ctx.timestamp,
    )
    ctx.publish(cancelled, key=failed.order_id)
