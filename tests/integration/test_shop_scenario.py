"""The whole shop on a real broker: the demo's scenario, 20 orders, every count checked.

Each service runs under `kit run` in its own process, with the customer_stats Faust worker
beside them; the scenario is services.shop_demo.run_shop, the same function `./dev demo`
calls. Run ids keep this run's orders, customers and SKUs apart from any other run's on
the same broker (the shop's topics and groups have fixed names).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from kit import Client, load_settings
from services.orders.events import OrderCancelled
from services.shop_demo.account import Account, Held, expected_stock, reckon
from services.shop_demo.drive import Placed
from services.shop_demo.fleet import Fleet, Spec
from services.shop_demo.observe import EventLog
from services.shop_demo.plan import Outcome, Plan, build_plan
from services.shop_demo.run import ShopOptions, run_shop, running

pytestmark = pytest.mark.integration

ORDERS = 20


def test_the_shop_runs_end_to_end_and_every_count_adds_up(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    account, _ = run_shop(ShopOptions(orders=ORDERS, log_dir=tmp_path, say=say))
    transcript = "\n".join(lines)
    assert [c for c in account.checks if not c.ok] == [], transcript
    assert len(account.checks) == 13, transcript

    plan = build_plan("any", ORDERS)  # the mix depends only on the number of orders
    confirmed, cancelled = plan.count(Outcome.CONFIRMED), plan.count(Outcome.CANCELLED)
    rejected = plan.count(Outcome.REJECTED)
    assert (confirmed, cancelled, rejected) == (16, 2, 2)  # the plan has all three kinds
    assert account.requested == ORDERS + 1  # and the one placed with inventory stopped
    assert account.placed == confirmed + cancelled == account.confirmed + account.cancelled
    assert (account.confirmed, account.cancelled) == (confirmed, cancelled)
    assert account.rejected == rejected + 1
    assert account.failed_calls == 0

    topics = account.per_topic
    assert topics["orders.place_order"] == ORDERS + 1
    assert topics["orders.OrderPlaced"] == account.placed
    assert topics["payments.PaymentCompleted"] == topics["orders.OrderConfirmed"] == confirmed
    assert topics["payments.PaymentFailed"] == topics["orders.OrderCancelled"] == cancelled
    assert topics["inventory.release"] == cancelled
    assert topics["inventory.Restocked"] == 3  # two SKUs at the start, saffron mid-run
    assert account.duplicates == {}

    assert all(want == held for want, held in account.stock.values()), account.stock
    assert all(want == got for want, got in account.stats.values()), account.stats
    assert sum(want[0] for want, _got in account.stats.values()) == confirmed
    assert account.notified == confirmed + cancelled  # one line per final order, once

    assert account.fail_fast is not None and not account.fail_fast.accepted
    assert (account.fail_fast.reason or "").startswith("inventory unavailable")
    assert account.fail_fast.latency_ms < 1000
    assert [code for _name, code in account.exits] == [0] * 5, account.exits


class _WritesAfterLookup:
    """A consumer that has `write()` run right after each offsets_for_times answer, before
    the caller assigns: a record arriving while the event log picks its start offsets."""

    def __init__(self, consumer: Consumer, write: Callable[[], None]) -> None:
        self._consumer = consumer
        self._write = write

    def offsets_for_times(self, *args: Any, **kwargs: Any) -> list[TopicPartition]:
        found: list[TopicPartition] = self._consumer.offsets_for_times(*args, **kwargs)
        self._write()
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def _cancelled(order_id: str) -> OrderCancelled:
    return OrderCancelled(
        order_id=order_id,
        customer="ada",
        total_cents=7000,
        reason="over the limit",
        cancelled_at=datetime.now(UTC),
    )


def test_the_event_log_reads_a_record_written_while_it_picks_its_start(
    kafka_bootstrap: str,
) -> None:
    """A sparse topic (OrderCancelled) with no record since the run began: the record
    written between the event log's offset lookup and its assignment is read, not skipped
    (an OFFSET_END start, resolved when fetching begins, would skip it)."""
    run = f"race{uuid.uuid4().hex[:6]}"

    async def scenario() -> set[str]:
        async with Client(load_settings()) as client:
            await client.publish(_cancelled(f"other-{run}"), key="other")  # topic, schema
            since_ms = int(time.time() * 1000) + 1  # after every record on the topic
            loop = asyncio.get_running_loop()

            def write() -> None:
                sent = client.publish(_cancelled(f"{run}-1"), key=f"{run}-1")
                asyncio.run_coroutine_threadsafe(sent, loop).result(10)

            log = EventLog(client.settings, client.codec, run, since_ms)
            log.consumer = _WritesAfterLookup(log.consumer, write)  # type: ignore[assignment]
            try:
                deadline = time.monotonic() + 15
                while not log.ids("orders.OrderCancelled") and time.monotonic() < deadline:
                    await asyncio.to_thread(log.drain)
                return log.ids("orders.OrderCancelled")
            finally:
                log.close()

    assert asyncio.run(scenario()) == {f"{run}-1"}


def _as_planned(plan: Plan) -> tuple[list[Placed], EventLog, Placed, Held]:
    """A run that went exactly as `plan` says (no broker): the replies, the event log
    (this run's records per topic), the fail-fast call and what the owners of state hold."""
    log = EventLog.__new__(EventLog)  # its records only: no consumer
    log.run, log.records, log.undecodable = plan.run, defaultdict(dict), Counter()
    placed, stats = [], {c: (0, 0) for c in plan.customers}
    for order in plan.orders:
        value = {"order_id": order.order_id, "customer": order.customer}
        value["total_cents"] = order.total_cents
        log.records["orders.place_order"][order.order_id] = [value]
        accepted = order.outcome is not Outcome.REJECTED
        reason = None if accepted else "not enough saffron"
        placed.append(Placed(order.order_id, accepted, reason, order.total_cents, 10.0))
        if not accepted:
            continue
        log.records["orders.OrderPlaced"][order.order_id] = [value]
        paid = order.outcome is Outcome.CONFIRMED
        payment = "payments.PaymentCompleted" if paid else "payments.PaymentFailed"
        log.records[payment][order.order_id] = [value]
        log.records["orders.OrderConfirmed" if paid else "orders.OrderCancelled"][
            order.order_id
        ] = [value]
        if paid:
            n, total = stats[order.customer]
            stats[order.customer] = (n + 1, total + order.total_cents)
    fail_fast = Placed(f"{plan.run}-failfast", False, "inventory unavailable: x", 0, 5.0)
    log.records["orders.place_order"][fail_fast.order_id] = [{"order_id": fail_fast.order_id}]
    confirmed = set(log.records["orders.OrderConfirmed"])
    stock = expected_stock(plan, confirmed)
    notified = Counter(confirmed | set(log.records["orders.OrderCancelled"]))
    held = Held({sku: stock[sku] for sku in plan.skus}, dict(stats), notified)
    return placed, log, fail_fast, held


def _failing(account: Account) -> list[str]:
    return [check.name for check in account.checks if not check.ok]


def test_the_account_holds_for_a_run_as_planned_and_counts_requests_on_the_topic() -> None:
    plan = build_plan("acct", ORDERS)
    placed, log, fail_fast, held = _as_planned(plan)
    assert _failing(reckon(plan, placed, log, fail_fast, held)) == []

    # a request that never reached orders.place_order, though every reply adds up
    del log.records["orders.place_order"][fail_fast.order_id]
    account = reckon(plan, placed, log, fail_fast, held)
    assert _failing(account) == ["requested = placed + rejected"]
    assert account.requested == ORDERS

    # a rejection the plan did not make: the replies alone still add up (21 = 17 + 4)
    placed, log, fail_fast, held = _as_planned(plan)
    first = plan.orders[0]
    placed[0] = Placed(first.order_id, False, "not enough tea", first.total_cents, 10.0)
    account = reckon(plan, placed, log, fail_fast, held)
    assert account.requested == account.placed + account.rejected
    assert "requested = placed + rejected" in _failing(account)


def test_the_faust_totals_are_checked_against_the_plan_not_against_their_input() -> None:
    plan = build_plan("acct", ORDERS)
    placed, log, fail_fast, held = _as_planned(plan)
    order = next(o for o in plan.orders if o.outcome is Outcome.CONFIRMED)
    event = log.records["orders.OrderConfirmed"][order.order_id][0]
    log.records["orders.OrderConfirmed"][order.order_id] = [{**event, "total_cents": 1}]
    count, total = held.stats[order.customer] or (0, 0)  # the table counts what it read
    held.stats[order.customer] = (count, total - order.total_cents + 1)
    account = reckon(plan, placed, log, fail_fast, held)
    assert _failing(account) == [
        "OrderConfirmed totals as planned",
        "Faust totals = confirmed orders",
    ]


def test_the_fleet_is_killed_when_its_graceful_stop_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`running` kills what still runs even when stop_all raises (Proc.finish's
    TimeoutError, say): no process of the run outlives it."""
    fleet = Fleet(tmp_path, os.environ)
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(120)"
    )
    argv = [sys.executable, "-c", code]
    fleet.add(Spec("sleeper", argv, lambda line: "up" in line, dict(os.environ), tmp_path))

    def stop_all(timeout: float = 40.0) -> None:
        raise TimeoutError("sleeper: end of output")

    monkeypatch.setattr(fleet, "stop_all", stop_all)
    with pytest.raises(TimeoutError), running(fleet):
        fleet.start(["sleeper"], 30.0)
    assert not fleet.procs["sleeper"].alive
    assert fleet.killed == [("sleeper", -9)]
