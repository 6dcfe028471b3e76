"""The inventory service: holds stock for orders, and keeps it across restarts.

Calls and events:

- `reserve` and `release` are **calls** (responders, request-reply): orders cannot accept
  an order until it knows the stock is held, nor tell a customer why not. Both are
  idempotent, so a caller that timed out may ask again: a second `reserve` of an order
  reserves nothing more (it answers `reserved=True` again), and a second `release`
  answers `released=False`.
- `inventory.Restocked` is an **event** (a handler): goods arrived, nobody waits for an
  answer, and it waits in its topic while inventory is down.

Persistence: every change is written, before it is answered, to the compacted topic
`SHOP_INVENTORY_TOPIC` (default `inventory.state`; see state_log.py for the keys), and
an instance rebuilds its stock from that topic as it starts, in a `Service.on_start`
hook: `Runtime.start` awaits the hook before it subscribes, so no request is answered,
and the instance is not announced in the registry, before the stock is loaded. (A lazy
load on first use would make the first caller wait for it and hide a broken topic
until then.) The read and the writes run in worker threads, with deadlines
(KIT_DELIVERY_TIMEOUT). `SHOP_INITIAL_STOCK` (`tea=10,cake=3`) seeds the stock when the
topic is empty, and only then; `Restocked` events add to it.

Limit: **one instance owns the stock.** The operations of an instance run one at a time
(an asyncio.Lock around plan, write and apply), and its writes use a transactional id
derived from the topic, so a second instance that starts fences the first, which then
stops (`runtime.stop()`); requests go on to the new owner once it is assigned. To scale,
shard the stock: give each shard its own state topic and route requests by SKU, with an
order spanning shards reserved by a saga (reserve per shard, release on any refusal).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from kit import Codec, Context, Runtime, Service
from kit.transport.memory import MemoryTransport
from services.inventory.events import Release, Released, Reservation, Reserve, Restocked
from services.inventory.state_log import KafkaStateLog, MemoryStateLog, StateLog
from services.inventory.stock import (
    AppliedOffset,
    Change,
    ReservationState,
    Stock,
    StockState,
    parse_stock,
)

__all__ = ["Inventory", "inventory", "release", "reserve", "service"]

log = logging.getLogger("services.inventory")

service = Service(
    "inventory", version="2.0.0", description="Reserves and releases stock for orders."
)


class Inventory:
    """The stock of this instance and the topic it is kept on."""

    def __init__(self, state_log: StateLog, timeout: float) -> None:
        self.stock = Stock()
        self.log = state_log
        self.timeout = timeout
        """Seconds to wait for the lock (each holder's write has the same deadline)."""
        self._lock = asyncio.Lock()

    async def load(self, seed: dict[str, int]) -> int:
        """Rebuild the stock from the topic; seed an empty topic. Returns records read."""
        await self.log.open()
        changes = await self.log.load()
        for change in changes:
            self.stock.apply(change)
        if not changes and seed:
            await self.commit(self.stock.seed(seed))
        return len(changes)

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[Stock]:
        """The stock, to plan and commit one operation while no other runs."""
        async with asyncio.timeout(self.timeout):
            await self._lock.acquire()
        try:
            yield self.stock
        finally:
            self._lock.release()

    async def commit(self, changes: list[Change]) -> None:
        """Write the changes of one operation, then apply them (nothing if not written)."""
        if changes:
            await self.log.write(changes)
            for change in changes:
                self.stock.apply(change)


class _Current:
    """The Inventory of the instance running in this process (set by `load_stock`)."""

    inventory: Inventory | None = None


_current = _Current()


def inventory() -> Inventory:
    """This process's Inventory; RuntimeError before the service has started."""
    if _current.inventory is None:
        raise RuntimeError("inventory has not loaded its stock: the service is not started")
    return _current.inventory


@service.on_start
async def load_stock(runtime: Runtime) -> None:
    """Rebuild the stock from the state topic before any request is answered."""
    topic = os.environ.get("SHOP_INVENTORY_TOPIC", "inventory.state")
    seed = parse_stock(os.environ.get("SHOP_INITIAL_STOCK", ""))
    transport = runtime.transport
    state_log: StateLog
    if isinstance(transport, MemoryTransport):  # the Harness
        state_log = MemoryStateLog(transport.broker, topic, runtime.codec)
    else:  # decodes records of other schema versions through the schema topic
        codec = Codec(runtime.repository, resolver=runtime.schema_topic.lookup)
        state_log = KafkaStateLog(runtime.settings, topic, codec, on_fenced=runtime.stop)
    schemas = [m.kit_schema() for m in (StockState, ReservationState, AppliedOffset)]
    await transport.publish_schemas(schemas)
    current = Inventory(state_log, runtime.settings.delivery_timeout)
    read = await current.load(seed)
    _current.inventory = current
    runtime.on_closed.append(lambda _runtime: state_log.close())
    log.info(
        "inventory: %d SKUs and %d reservations from %s (%d records read)",
        len(current.stock.available),
        len(current.stock.held),
        topic,
        read,
    )


@service.responder()
async def reserve(request: Reserve) -> Reservation:
    """Hold every line of an order, or none (the reason names the SKU that fell short)."""
    current = inventory()
    async with current.exclusive() as stock:
        reply, changes = stock.reserve(request)
        await current.commit(changes)
    log.info("reserve %s: %s", request.order_id, reply.reason or "reserved")
    return reply


@service.responder()
async def release(request: Release) -> Released:
    """Give back what an order holds; `released=False` if it holds nothing."""
    current = inventory()
    async with current.exclusive() as stock:
        reply, changes = stock.release(request.order_id)
        await current.commit(changes)
    log.info("release %s: %s", request.order_id, "released" if reply.released else "nothing held")
    return reply


@service.handler()
async def on_restocked(event: Restocked, ctx: Context) -> None:
    """Add the units that arrived, once per event (its offset is written with the stock)."""
    current = inventory()
    async with current.exclusive() as stock:
        changes = stock.restock(event.sku, event.quantity, ctx.topic, ctx.partition, ctx.offset)
        await current.commit(changes)
