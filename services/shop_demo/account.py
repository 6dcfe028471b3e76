"""The run's account: the counts, the checks that they add up, and how they read printed."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.shop_demo.drive import Placed
from services.shop_demo.observe import EventLog
from services.shop_demo.plan import Outcome, Plan

__all__ = ["Account", "Check", "Held", "misstated", "percentile", "reckon"]

CONFIRMED = "orders.OrderConfirmed"
CANCELLED = "orders.OrderCancelled"
PLACE_ORDER = "orders.place_order"
FAIL_FAST_LIMIT_MS = 1000.0
"""A call to a shop whose inventory is down must be answered well within this."""


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile `p` (0-100) of `values` (nan if none)."""
    if not values:
        return math.nan
    ranked = sorted(values)
    return ranked[max(0, math.ceil(p / 100 * len(ranked)) - 1)]


@dataclass
class Check:
    """One thing that must hold, and what was seen."""

    name: str
    ok: bool
    detail: str


@dataclass
class Account:
    """Everything the end of a run prints, and whether it adds up."""

    run: str
    services: list[str] = field(default_factory=list)
    requested: int = 0
    placed: int = 0
    rejected: int = 0
    failed_calls: int = 0
    rejected_why: Counter[str] = field(default_factory=Counter)
    """Rejections by kind of reason (short of stock, inventory unavailable, ...)."""
    confirmed: int = 0
    cancelled: int = 0
    first_ms: float = math.nan
    """The first call's latency: it also creates the reply topics and reads the registry."""
    latencies_ms: list[float] = field(default_factory=list)
    """The latencies of the calls after the first."""
    per_topic: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    stock: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    """sku -> (expected, what inventory holds)."""
    notified: int = 0
    """Notifications written (duplicates included)."""
    notified_orders: set[str] = field(default_factory=set)
    stock_in: dict[str, int] = field(default_factory=dict)
    """sku -> units stocked by this run (at the start and restocked)."""
    stats: dict[str, tuple[tuple[int, int], tuple[int, int] | None]] = field(default_factory=dict)
    """customer -> ((orders, total) expected, (orders, total) the Faust table answered)."""
    fail_fast: Placed | None = None
    exits: list[tuple[str, int]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))


def expected_stock(plan: Plan, confirmed: set[str]) -> dict[str, int]:
    """Each SKU's stock once the run settled: initial + restocked - confirmed orders'."""
    by_id = plan.by_id()
    stock = dict(plan.initial_stock)
    stock[plan.restock[0]] += plan.restock[1] if plan.restock_before < len(plan.orders) else 0
    for order_id in confirmed:
        for sku in stock:
            stock[sku] -= by_id[order_id].quantity_of(sku) if order_id in by_id else 0
    return stock


def expected_stats(plan: Plan, confirmed: set[str]) -> dict[str, tuple[int, int]]:
    """(confirmed orders, their total in cents) per customer: the plan's customer and total
    of each confirmed order (not the events': the Faust table counts those)."""
    by_id = plan.by_id()
    stats = {customer: (0, 0) for customer in plan.customers}
    for order in (by_id[i] for i in confirmed if i in by_id):
        count, total = stats[order.customer]
        stats[order.customer] = (count + 1, total + order.total_cents)
    return stats


def misstated(plan: Plan, log: EventLog) -> list[str]:
    """OrderConfirmed events (every one, duplicates too) whose customer or total is not the
    plan's for that order: "id: customer, total" as the event has them."""
    by_id = plan.by_id()
    wrong = []
    for order_id, values in log.records[CONFIRMED].items():
        order = by_id.get(order_id)
        for value in values:
            said = (value.get("customer"), value.get("total_cents"))
            if order is None or said != (order.customer, order.total_cents):
                wrong.append(f"{order_id}: {said[0]}, {said[1]}")
    return wrong


def _why(reason: str | None) -> str:
    """A rejection's kind: "short of stock", "inventory unavailable", or the reason itself."""
    text = reason or "no reason given"
    if text.startswith("not enough"):
        return "short of stock"
    return text.split(":", 1)[0]


def _count_calls(
    account: Account, placed: list[Placed], fail_fast: Placed | None, log: EventLog
) -> None:
    """`requested` from the event log (this run's records on orders.place_order); placed,
    rejected and failed from the replies."""
    calls = [*placed, *([fail_fast] if fail_fast is not None else [])]
    account.requested = log.count(PLACE_ORDER)
    account.placed = sum(1 for p in calls if p.accepted)
    account.rejected = sum(1 for p in calls if not p.accepted and p.error is None)
    account.failed_calls = sum(1 for p in calls if p.error is not None)
    account.rejected_why = Counter(
        _why(p.reason) for p in calls if not p.accepted and p.error is None
    )
    account.first_ms = placed[0].latency_ms if placed else math.nan
    account.latencies_ms = [p.latency_ms for p in placed[1:]]
    account.fail_fast = fail_fast


@dataclass
class Held:
    """What the shop's owners of state hold once the run settled."""

    stock: dict[str, int | None] = field(default_factory=dict)
    """sku -> available units on inventory's state topic."""
    stats: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    """customer -> (orders, total cents) answered by customer_stats.get."""
    notified: Counter[str] = field(default_factory=Counter)
    """order id -> notifications written by the notifications service."""


def reckon(
    plan: Plan, placed: list[Placed], log: EventLog, fail_fast: Placed | None, held: Held
) -> Account:
    """Count the run and check every count against the others and against the plan."""
    stock, stats = held.stock, held.stats
    account = Account(plan.run)
    account.notified = sum(held.notified.values())
    account.notified_orders = set(held.notified)
    _count_calls(account, placed, fail_fast, log)
    confirmed, cancelled = log.ids(CONFIRMED), log.ids(CANCELLED)
    account.confirmed, account.cancelled = len(confirmed), len(cancelled)
    account.per_topic = log.per_topic()
    account.duplicates = {t: n for t in log.per_topic() if (n := log.duplicates(t))}
    want_stock = expected_stock(plan, confirmed)
    account.stock = {sku: (want_stock[sku], stock.get(sku)) for sku in want_stock}
    account.stock_in = expected_stock(plan, set())
    want_stats = expected_stats(plan, confirmed)
    account.stats = {c: (want_stats[c], stats.get(c)) for c in want_stats}
    _check_counts(account, plan, placed, log, fail_fast)
    _check_state(account, plan, log, fail_fast)
    return account


def _check_counts(
    account: Account, plan: Plan, placed: list[Placed], log: EventLog, fail_fast: Placed | None
) -> None:
    a = account
    accepted = {p.order_id for p in placed if p.accepted}
    confirmed, cancelled = log.ids(CONFIRMED), log.ids(CANCELLED)
    a.check("every call answered", a.failed_calls == 0, f"{a.failed_calls} calls failed")
    # requested: the requests on the topic; the plan says how many were sent and how many
    # of them inventory must refuse (short of stock, or stopped for the fail-fast one)
    extra = 1 if fail_fast is not None else 0
    sent, refused = len(plan.orders) + extra, plan.count(Outcome.REJECTED) + extra
    a.check(
        "requested = placed + rejected",
        a.requested == sent == a.placed + a.rejected and a.rejected == refused,
        f"{a.requested} requests on {PLACE_ORDER} (sent: {sent}) = {a.placed} + {a.rejected}"
        f" (planned rejections: {refused})",
    )
    a.check(
        "placed = confirmed + cancelled",
        a.placed == a.confirmed + a.cancelled and accepted == confirmed | cancelled,
        f"{a.placed} = {a.confirmed} + {a.cancelled}; in both: {len(confirmed & cancelled)}",
    )
    placed_ids = log.ids("orders.OrderPlaced")
    a.check("an OrderPlaced per placed order", placed_ids == accepted, f"{len(placed_ids)} events")
    payments = (log.ids("payments.PaymentCompleted"), log.ids("payments.PaymentFailed"))
    a.check(
        "a payment outcome per placed order",
        payments == (confirmed, cancelled),
        f"{len(payments[0])} completed, {len(payments[1])} failed",
    )
    outcome = {p.order_id: Outcome.REJECTED for p in placed if not p.accepted}
    outcome.update({i: Outcome.CONFIRMED for i in confirmed})
    outcome.update({i: Outcome.CANCELLED for i in cancelled})
    a.check(
        "a notification per final order",
        a.notified_orders == confirmed | cancelled,
        f"{a.notified} notifications for {len(a.notified_orders)} orders",
    )
    wrong = [o.order_id for o in plan.orders if outcome.get(o.order_id) is not o.outcome]
    a.check(
        "each order ended as planned",
        not wrong,
        f"{len(plan.orders) - len(wrong)} of {len(plan.orders)}"
        + (f"; not: {', '.join(wrong[:5])}" if wrong else ""),
    )


def _check_state(account: Account, plan: Plan, log: EventLog, fail_fast: Placed | None) -> None:
    a = account
    bad_stock = {s: v for s, v in a.stock.items() if v[0] != v[1]}
    a.check(
        "stock moves match confirmed orders",
        not bad_stock,
        "; ".join(f"{s}: expected {w}, inventory {h}" for s, (w, h) in bad_stock.items())
        or f"{len(a.stock)} SKUs",
    )
    wrong = misstated(plan, log)
    a.check(
        "OrderConfirmed totals as planned",
        not wrong,
        "; ".join(wrong[:5]) or f"{a.confirmed} orders",
    )
    bad_stats = {c: v for c, v in a.stats.items() if v[0] != v[1]}
    a.check(
        "Faust totals = confirmed orders",
        not bad_stats,
        "; ".join(f"{c}: expected {w}, table {h}" for c, (w, h) in bad_stats.items())
        or f"{len(a.stats)} customers",
    )
    if fail_fast is not None:
        fast = (
            not fail_fast.accepted
            and fail_fast.error is None
            and "unavailable" in (fail_fast.reason or "")
            and fail_fast.latency_ms < FAIL_FAST_LIMIT_MS
        )
        a.check(
            "calls fail fast",
            fast,
            f"{fail_fast.latency_ms:.1f} ms: {fail_fast.error or fail_fast.reason}",
        )
