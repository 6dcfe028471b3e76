"""What kit callers see of customer_stats: its declaration, with the typed endpoint `get`.

The service itself is a Faust app (services/customer_stats/app.py); this module imports
no Faust, so a kit caller can do::

    from services.customer_stats.api import get
    from services.customer_stats.events import GetStats

    stats = await client.request(get, GetStats(customer="ada"))   # a CustomerStats

The bridge (kit.faust.KitBridge) announces this declaration in the registry and serves
`get` with the app's table.
"""

from __future__ import annotations

from kit import Service
from services.customer_stats.events import CustomerStats, GetStats

__all__ = ["get", "service"]

service = Service(
    "customer_stats",
    version="1.0.0",
    description="Per-customer counts and totals of confirmed orders (a Faust table).",
)


@service.responder()  # request topic: customer_stats.get
async def get(request: GetStats) -> CustomerStats:
    """The confirmed orders of `request.customer` so far (zero for a customer with none)."""
    raise NotImplementedError("served by the Faust app services.customer_stats.app")
