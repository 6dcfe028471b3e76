"""The responder used by bench/rpc.py: inventory-style stock checks, named by the environment."""

from __future__ import annotations

import os

from bench.stock import CheckStock, StockLevel
from kit import Service

service = Service(os.environ.get("BENCH_RPC_SERVICE", "bench-rpc"))


@service.responder(partitions=4)
async def check(request: CheckStock) -> StockLevel:
    """Answer at once: the benchmark measures the transport, not the work."""
    return StockLevel(sku=request.sku, available=10, enough=request.quantity <= 10)
