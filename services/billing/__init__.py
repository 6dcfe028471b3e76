"""The billing service: turns each shop.OrderPlaced into a billing.InvoiceIssued (async events)."""

from __future__ import annotations

import logging

from kit import Context, Service
from services.shop import InvoiceIssued, OrderPlaced

log = logging.getLogger("services.billing")

service = Service("billing", version="1.0.0", description="Issues an invoice for every order.")


@service.handler()
async def on_order_placed(order: OrderPlaced, ctx: Context) -> None:
    """Invoice the order; the invoice is keyed by order id, so it stays in order per order."""
    if any(line.quantity <= 0 for line in order.lines):
        raise ValueError(f"order {order.order_id} has a line with a non-positive quantity")
    total = sum(line.quantity * line.unit_price_cents for line in order.lines)
    invoice = InvoiceIssued(
        invoice_id=f"inv-{order.order_id}",
        order_id=order.order_id,
        total_cents=total,
        issued_at=order.placed_at,
    )
    ctx.publish(invoice, key=order.order_id)
    log.info("invoiced %s: %d cents (partition %d)", order.order_id, total, ctx.partition)
