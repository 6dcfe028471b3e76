"""The scenario's orders: a deterministic mix, and the outcome each one must have.

Every name a run uses is its own (order ids, customers and SKUs carry the run id), so a
run counts only its own records on a broker that has seen other runs. Two SKUs:

- tea, plentiful: never runs short, so which tea orders succeed never depends on timing;
- saffron, scarce: orders are placed one at a time, so exactly the ones the stock covers
  are reserved, and a mid-run Restocked event (waited for) lets a few more through.

Orders whose total is over the payment limit buy only tea, so their cancellation (and the
release of their stock) changes nothing that a later order's fate depends on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "CUSTOMERS",
    "PAYMENT_LIMIT_CENTS",
    "Outcome",
    "Plan",
    "PlannedOrder",
    "build_plan",
]

PAYMENT_LIMIT_CENTS = 5_000
"""The payments service's limit in this scenario: a total above it fails (set by the demo)."""
CUSTOMERS = ("ada", "grace", "alan", "edsger")
TEA_PRICE = 350
SAFFRON_PRICE = 900
BIG_TEA = 20  # 20 x 3.50 = 70.00: over the payment limit


class Outcome(StrEnum):
    """How an order must end."""

    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


@dataclass(frozen=True)
class PlannedOrder:
    """One order of the scenario and the outcome the shop must give it."""

    index: int
    order_id: str
    customer: str
    lines: tuple[tuple[str, int, int], ...]
    """(sku, quantity, unit_price_cents) per line."""
    outcome: Outcome

    @property
    def total_cents(self) -> int:
        return sum(quantity * price for _sku, quantity, price in self.lines)

    def quantity_of(self, sku: str) -> int:
        return sum(quantity for line_sku, quantity, _price in self.lines if line_sku == sku)


@dataclass
class Plan:
    """The run's orders, SKUs, initial stock and the one restock in the middle."""

    run: str
    orders: list[PlannedOrder]
    tea: str
    saffron: str
    initial_stock: dict[str, int]
    restock_before: int
    """The index of the order before which saffron is restocked (len(orders): never)."""
    restock: tuple[str, int]
    customers: list[str] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for order in self.orders if order.outcome is outcome)

    def by_id(self) -> dict[str, PlannedOrder]:
        return {order.order_id: order for order in self.orders}

    @property
    def skus(self) -> list[str]:
        return [self.tea, self.saffron]


def _lines(index: int, tea: str, saffron: str) -> tuple[tuple[str, int, int], ...]:
    """Order i's lines: every tenth order from i=6 is big, i%10 in (3, 8) wants saffron."""
    if index % 10 == 6:
        return ((tea, BIG_TEA, TEA_PRICE),)
    tea_line = (tea, 1 + index % 3, TEA_PRICE)
    if index % 10 in (3, 8):
        return (tea_line, (saffron, 1, SAFFRON_PRICE))
    return (tea_line,)


def build_plan(run: str, orders: int) -> Plan:
    """The scenario's `orders` orders for run id `run`, each with the outcome it must have."""
    if orders < 1:
        raise ValueError("at least one order")
    tea, saffron = f"tea-{run}", f"saffron-{run}"
    customers = [f"{name}-{run}" for name in CUSTOMERS]
    drafts = [(i, _lines(i, tea, saffron)) for i in range(orders)]
    wanted_saffron = sum(1 for _i, lines in drafts if len(lines) == 2)
    tea_needed = sum(q for _i, lines in drafts for sku, q, _p in lines if sku == tea)
    initial = {tea: tea_needed + 10, saffron: max(1, wanted_saffron // 3)}
    restock_before = orders // 2
    restock = (saffron, max(1, wanted_saffron // 4))
    saffron_left = initial[saffron]
    planned = []
    for index, lines in drafts:
        if index == restock_before:
            saffron_left += restock[1]
        total = sum(q * p for _sku, q, p in lines)
        if len(lines) == 2 and saffron_left < 1:
            outcome = Outcome.REJECTED
        elif total > PAYMENT_LIMIT_CENTS:
            outcome = Outcome.CANCELLED
        else:
            outcome = Outcome.CONFIRMED
        if len(lines) == 2 and outcome is not Outcome.REJECTED:
            saffron_left -= 1
        order_id = f"{run}-{index:05d}"
        customer = customers[index % len(customers)]
        planned.append(PlannedOrder(index, order_id, customer, lines, outcome))
    return Plan(run, planned, tea, saffron, initial, restock_before, restock, customers)
