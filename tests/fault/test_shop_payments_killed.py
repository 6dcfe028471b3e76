"""The shop with its payments process SIGKILLed mid-scenario, with payments in hand.

The demo's scenario (services.shop_demo.run_shop) runs 40 orders. The first payments
instance takes half a second per payment (SHOP_PAYMENT_DELAY=0.5), so it falls behind the
orders placed: before order 12 the test waits until it has paid a few, then SIGKILLs it,
and checks that it had paid fewer orders than had been accepted by then (so at least one
was in its hands, or queued for it, when it died). Five more orders are placed while no
payments instance runs; then a new one (no delay to speak of) starts, waits out the dead
member's session (20 s) and gets the partitions. Every placed order must still end
confirmed or cancelled, none lost and none paid twice, and every count of the account
(stock, Faust totals) must add up, exactly.

Payments runs exactly-once (KIT_EXACTLY_ONCE=true): its outputs and its input offsets
commit in one transaction, so the restarted instance redoes only what the killed one had
not committed, and no PaymentCompleted is published twice. (At least once, the payments
handled in the last second before the kill are paid again: orders confirms them again,
and the Faust table, which counts every OrderConfirmed, counts them twice.)
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from services.shop_demo.fleet import Fleet, Proc
from services.shop_demo.plan import Outcome, build_plan
from services.shop_demo.run import ShopOptions, run_shop

pytestmark = [pytest.mark.integration, pytest.mark.fault]

ORDERS = 40
KILL_AT = 12  # before this order: payments killed
RESTART_AT = 17  # before this order: a new payments instance started
HANDLED_BEFORE_KILL = 3
SLOW, FAST = "0.5", "0.05"
"""SHOP_PAYMENT_DELAY (seconds per payment) of the killed instance and of the new one."""
PAID = re.compile(r"payment of (\S+) (?:completed|failed)")


def paid(proc: Proc) -> set[str]:
    """The orders this payments process logged as paid (or refused)."""
    return {m.group(1) for line in proc.out.lines if (m := PAID.search(line))}


class Payments:
    """Kills and restarts payments from the scenario's per-order hook; remembers what."""

    def __init__(self) -> None:
        self.paid_at_kill: set[str] = set()
        self.kill_code: int | None = None
        self.restarted: str | None = None
        self.killed: Proc | None = None
        self.new_instance: Proc | None = None

    async def on_order(self, index: int, fleet: Fleet) -> None:
        if index == KILL_AT:
            proc = fleet.procs["payments"]
            await asyncio.to_thread(
                proc.out.wait,
                lambda _lines: True if len(paid(proc)) >= HANDLED_BEFORE_KILL else None,
                60,
                "payments handled a few orders",
            )
            self.kill_code = await asyncio.to_thread(fleet.kill, "payments")
            self.killed = proc
            self.paid_at_kill = paid(proc)  # all it wrote: its output has ended
        elif index == RESTART_AT:
            fleet.specs["payments"].env["SHOP_PAYMENT_DELAY"] = FAST
            ready = await asyncio.to_thread(fleet.start, ["payments"], 90.0)
            self.restarted = ready[0]
            self.new_instance = fleet.procs["payments"]


def test_payments_killed_mid_scenario_loses_no_order(kafka_bootstrap: str, tmp_path: Path) -> None:
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    payments = Payments()
    options = ShopOptions(
        orders=ORDERS,
        log_dir=tmp_path,
        say=say,
        on_order=payments.on_order,
        service_env={"payments": {"KIT_EXACTLY_ONCE": "true", "SHOP_PAYMENT_DELAY": SLOW}},
    )
    account, _ = run_shop(options)
    transcript = "\n".join(lines)

    plan = build_plan(account.run, ORDERS)
    accepted = [o.order_id for o in plan.orders if o.outcome is not Outcome.REJECTED]
    accepted_before_kill = {o.order_id for o in plan.orders[:KILL_AT]} & set(accepted)
    assert payments.kill_code == -9, transcript
    assert len(payments.paid_at_kill) >= HANDLED_BEFORE_KILL
    # payments had work in hand: fewer paid than accepted when the SIGKILL came
    assert payments.paid_at_kill < accepted_before_kill, (payments.paid_at_kill, transcript)
    assert payments.restarted is not None and "payments ready" in payments.restarted
    assert payments.new_instance is not None
    paid_after = paid(payments.new_instance)
    # the new instance paid every order the killed one had not (and perhaps some it had
    # paid but not committed); between them, every accepted order, and nothing else
    assert paid_after | payments.paid_at_kill == set(accepted), transcript

    assert [c for c in account.checks if not c.ok] == [], transcript
    confirmed, cancelled = plan.count(Outcome.CONFIRMED), plan.count(Outcome.CANCELLED)
    assert (account.confirmed, account.cancelled) == (confirmed, cancelled), transcript
    assert account.placed == confirmed + cancelled == len(accepted)  # none lost
    assert account.requested == ORDERS + 1  # and the one placed with inventory stopped
    assert account.rejected == plan.count(Outcome.REJECTED) + 1
    topics = account.per_topic
    assert topics["payments.PaymentCompleted"] == topics["orders.OrderConfirmed"] == confirmed
    assert topics["payments.PaymentFailed"] == topics["orders.OrderCancelled"] == cancelled
    assert account.duplicates == {}, transcript  # exactly once: nothing paid twice
    assert all(want == got for want, got in account.stats.values()), account.stats
    # SIGTERM at the end: every process then running stopped cleanly (the killed one is
    # not judged), the restarted payments among them
    assert [name for name, _code in account.exits].count("payments") == 1
    assert all(code == 0 for _name, code in account.exits), account.exits
