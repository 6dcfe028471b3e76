"""The orders service: on each order it calls inventory synchronously, then emits an event.

It shows both kinds of call: `ctx.request` (wait for inventory's answer) inside an
asynchronous event handler, and `ctx.publish` of the outcome for anyone to consume.
"""

from __future__ import annotations

from kit import Context, RemoteError, RequestTimeout, Service
from services.inventory import check_stock
from services.shop import CheckStock, OrderChecked, OrderPlaced

service = Service("orders", version="1.0.0", description="Checks stock for every order.")


@service.handler()
async def on_order_placed(order: OrderPlaced, ctx: Context) -> None:
    """Accept the order if inventory has enough of every line."""
    reason = None
    for line in order.lines:
        try:
            level = await ctx.request(check_stock, CheckStock(sku=line.sku, quantity=line.quantity))
        except RemoteError as exc:
            reason = f"{line.sku}: {exc.message}"
            break
        except RequestTimeout:
            raise  # retried, then dead-lettered: an unanswered check must not accept an order
        if not level.enough:
            reason = f"{line.sku}: only {level.available} left"
            break
    ctx.publish(
        OrderChecked(order_id=order.order_id, accepted=reason is None, reason=reason),
        key=order.order_id,
    )
