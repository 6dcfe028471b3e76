"""The payments service: charges each placed order, and says how it went.

Events only: `OrderPlaced` comes in as an **event** (orders does not wait for payment:
the customer already has "accepted"), and the outcome goes out as the **event**
`PaymentCompleted` or `PaymentFailed`, which orders turns into a confirmation or a
cancellation. No call is needed: nothing here waits for an answer.

The rule is deterministic, for demos and tests: an order whose total is over
`SHOP_PAYMENT_LIMIT_CENTS` (default 50000) is refused, any other is paid.
`SHOP_PAYMENT_DELAY` (seconds, default 0) makes each payment take that long, as a
payment provider would; it holds up only the order's own partition.
"""

from __future__ import annotations

import asyncio
import logging
import os

from kit import Context, Service
from services.orders.events import OrderPlaced
from services.payments.events import PaymentCompleted, PaymentFailed

__all__ = ["on_order_placed", "service"]

log = logging.getLogger("services.payments")

service = Service("payments", version="1.0.0", description="Charges placed orders.")


def payment_limit() -> int:
    """The largest total (cents) that is paid: SHOP_PAYMENT_LIMIT_CENTS, default 50000."""
    return int(os.environ.get("SHOP_PAYMENT_LIMIT_CENTS", "50000"))


@service.handler(publishes=[PaymentCompleted, PaymentFailed])
async def on_order_placed(order: OrderPlaced, ctx: Context) -> None:
    """Pay for the order, or refuse it when its total is over the limit."""
    delay = float(os.environ.get("SHOP_PAYMENT_DELAY", "0"))
    if delay > 0:
        await asyncio.sleep(delay)  # the payment provider at work
    limit = payment_limit()
    if order.total_cents > limit:
        reason = f"amount {order.total_cents} cents is over the limit of {limit} cents"
        failed = PaymentFailed(
            order_id=order.order_id,
            customer=order.customer,
            amount_cents=order.total_cents,
            reason=reason,
        )
        ctx.publish(failed, key=order.order_id)
        log.info("payment of %s failed: %s", order.order_id, reason)
        return
    paid = PaymentCompleted(
        order_id=order.order_id, customer=order.customer, amount_cents=order.total_cents
    )
    ctx.publish(paid, key=order.order_id)
    log.info("payment of %s completed: %d cents", order.order_id, order.total_cents)
