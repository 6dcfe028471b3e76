"""Inventory's stock in memory, and the state records that rebuild it (schemas/inventory).

`Stock` holds what inventory knows: the units of each SKU not reserved, what each order
holds, and how far each partition of `inventory.Restocked` has been applied. It never
changes by itself: an operation (`reserve`, `release`, `restock`, `seed`) only *plans*
the `Change`s it needs and the reply to give; the caller writes those changes to the
state topic and, once they are confirmed, `apply`s them. Rebuilding at start applies the
same changes read back from the topic, so the live path and the rebuild share one truth.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit import ConfigError, Event
from services.inventory.events import Released, Reservation, Reserve, StockLine

__all__ = ["AppliedOffset", "Change", "ReservationState", "Stock", "StockState", "parse_stock"]


class StockState(Event, schema="inventory.StockState"):
    """The units of one SKU not reserved (key `sku/<sku>`)."""

    sku: str
    available: int


class ReservationState(Event, schema="inventory.ReservationState"):
    """What one order holds (key `order/<order_id>`; a tombstone once released)."""

    order_id: str
    lines: list[StockLine]


class AppliedOffset(Event, schema="inventory.AppliedOffset"):
    """The next offset of an input partition not applied yet (key `offset/<topic>/<p>`)."""

    topic: str
    partition: int
    next_offset: int


STATE_TYPES: dict[str, type[Event]] = {
    "sku": StockState,
    "order": ReservationState,
    "offset": AppliedOffset,
}
"""The value type of each key prefix on the state topic."""


@dataclass(frozen=True)
class Change:
    """One record of the state topic: a key and its new value (None: a tombstone)."""

    key: str
    value: Event | None

    @property
    def kind(self) -> str:
        """The key's prefix: sku, order or offset."""
        return self.key.split("/", 1)[0]


def stock_change(sku: str, available: int) -> Change:
    """The record that sets a SKU's available units."""
    return Change(f"sku/{sku}", StockState(sku=sku, available=available))


class Stock:
    """What inventory holds, changed only by `apply`."""

    def __init__(self) -> None:
        self.available: dict[str, int] = {}
        """Units not reserved, per SKU."""
        self.held: dict[str, list[StockLine]] = {}
        """What each order with a live reservation holds."""
        self.applied: dict[tuple[str, int], int] = {}
        """Per (topic, partition) of restock events: the next offset not applied."""

    def apply(self, change: Change) -> None:
        """Make one change (a record written, or read back at start)."""
        value = change.value
        if isinstance(value, StockState):
            self.available[value.sku] = value.available
        elif isinstance(value, ReservationState):
            self.held[value.order_id] = list(value.lines)
        elif isinstance(value, AppliedOffset):
            self.applied[(value.topic, value.partition)] = value.next_offset
        elif value is None and change.kind == "order":
            self.held.pop(change.key.split("/", 1)[1], None)
        else:
            raise ValueError(f"not an inventory state record: {change!r}")

    def reserve(self, request: Reserve) -> tuple[Reservation, list[Change]]:
        """All or nothing: hold every line, or none and say which SKU fell short.

        An order that already holds stock gets `reserved=True` again and nothing changes:
        a retried request does not reserve twice.
        """
        order_id = request.order_id
        if order_id in self.held:
            return Reservation(order_id=order_id, reserved=True), []
        wanted: dict[str, int] = {}
        for line in request.lines:
            wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
        problem = _shortfall(wanted, self.available) if wanted else "no lines to reserve"
        if problem is not None:
            return Reservation(order_id=order_id, reserved=False, reason=problem), []
        lines = [StockLine(sku=sku, quantity=n) for sku, n in wanted.items()]
        changes = [stock_change(sku, self.available[sku] - n) for sku, n in wanted.items()]
        held = ReservationState(order_id=order_id, lines=lines)
        changes.append(Change(f"order/{order_id}", held))
        return Reservation(order_id=order_id, reserved=True), changes

    def release(self, order_id: str) -> tuple[Released, list[Change]]:
        """Give back what an order holds; `released=False` if it holds nothing."""
        lines = self.held.get(order_id)
        if lines is None:
            return Released(order_id=order_id, released=False), []
        changes = [
            stock_change(line.sku, self.available.get(line.sku, 0) + line.quantity)
            for line in lines
        ]
        changes.append(Change(f"order/{order_id}", None))
        return Released(order_id=order_id, released=True), changes

    def restock(
        self, sku: str, quantity: int, topic: str, partition: int, offset: int
    ) -> list[Change]:
        """Add units from the restock event at `topic`/`partition`/`offset`, once: the
        event's position is written with the stock, so a redelivered event changes
        nothing. A quantity that is not positive is a ValueError."""
        if quantity <= 0:
            raise ValueError(f"restock of {sku!r}: quantity must be positive, got {quantity}")
        if offset < self.applied.get((topic, partition), 0):
            return []
        mark = AppliedOffset(topic=topic, partition=partition, next_offset=offset + 1)
        return [
            stock_change(sku, self.available.get(sku, 0) + quantity),
            Change(f"offset/{topic}/{partition}", mark),
        ]

    def seed(self, stock: dict[str, int]) -> list[Change]:
        """The initial stock of an empty state topic."""
        return [stock_change(sku, n) for sku, n in sorted(stock.items())]


def _shortfall(wanted: dict[str, int], available: dict[str, int]) -> str | None:
    """Why `wanted` cannot be held, naming the first SKU that falls short, or None."""
    for sku, n in wanted.items():
        if n <= 0:
            return f"quantity of {sku!r} must be positive, got {n}"
        if sku not in available:
            return f"unknown sku {sku!r}"
        if available[sku] < n:
            return f"not enough {sku!r}: {n} wanted, {available[sku]} available"
    return None


def parse_stock(text: str) -> dict[str, int]:
    """`"tea=10,cake=3"` as {"tea": 10, "cake": 3}; ConfigError naming SHOP_INITIAL_STOCK
    if it is not of that form (`kit run` prints it as a configuration error, exit 2)."""
    stock: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        sku, sep, count = item.partition("=")
        if not sep or not sku.strip() or not count.strip().isdigit():
            raise ConfigError("SHOP_INITIAL_STOCK", f"expected SKU=COUNT[,...], got {item!r}")
        stock[sku.strip()] = int(count)
    return stock
