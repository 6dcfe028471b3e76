"""The shop with its payments process SIGKILLed mid-scenario and started again.

The demo's scenario (services.shop_demo.run_shop) runs 40 orders; after payments has
handled a few (with a small delay per payment, so that some are in flight), the test
SIGKILLs it, places five more orders while no payments instance runs, then starts a new
one, which waits out the dead member's session (10 s) before it gets the partitions.
Every placed order must still end confirmed or cancelled, none lost, and every count of
the account (stock, Faust totals) must add up.

Payments runs exactly-once (KIT_EXACTLY_ONCE=true): its outputs and its input offsets
commit in one transaction, so the restarted instance redoes only what the killed one had
not committed, and no PaymentCompleted is published twice. (At least once, the payments
handled in the last second before the kill are paid again: orders confirms them again,
and the Faust table, which counts every OrderConfirmed, counts them twice.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.shop_demo.fleet import Fleet, Proc
from services.shop_demo.plan import Outcome, build_plan
from services.shop_demo.run import ShopOptions, run_shop

pytestmark = [pytest.mark.integration, pytest.mark.fault]

ORDERS = 40
KILL_AT = 12  # before this order: payments killed
RESTART_AT = 17  # before this order: a new payments instance started
HANDLED_BEFORE_KILL = 5


class Payments:
    """Kills and restarts payments from the scenario's per-order hook; remembers what."""

    def __init__(self) -> None:
        self.handled_at_kill = 0
        self.kill_code: int | None = None
        self.restarted: str | None = None
        self.new_instance: Proc | None = None

    async def on_order(self, index: int, fleet: Fleet) -> None:
        if index == KILL_AT:
            proc = fleet.procs["payments"]
            paid = await asyncio.to_thread(
                proc.out.wait,
                lambda lines: (
                    n
                    if (n := sum("payment of" in ln for ln in lines)) >= HANDLED_BEFORE_KILL
                    else None
                ),
                60,
                "payments handled a few orders",
            )
            self.handled_at_kill = paid
            self.kill_code = await asyncio.to_thread(fleet.kill, "payments")
        elif index == RESTART_AT:
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
        service_env={"payments": {"KIT_EXACTLY_ONCE": "true", "SHOP_PAYMENT_DELAY": "0.05"}},
    )
    account, _ = run_shop(options)
    transcript = "\n".join(lines)

    assert payments.kill_code == -9, transcript
    assert payments.handled_at_kill >= HANDLED_BEFORE_KILL
    assert payments.restarted is not None and "payments ready" in payments.restarted
    assert payments.new_instance is not None  # it paid the orders placed while none ran
    assert len(payments.new_instance.out.lines) > 0
    paid_after = sum("payment of" in line for line in payments.new_instance.out.lines)
    assert paid_after >= RESTART_AT - KILL_AT, transcript

    assert [c for c in account.checks if not c.ok] == [], transcript
    plan = build_plan("any", ORDERS)
    assert account.confirmed == plan.count(Outcome.CONFIRMED), transcript
    assert account.cancelled == plan.count(Outcome.CANCELLED), transcript
    assert account.placed == account.confirmed + account.cancelled  # none lost
    assert account.requested == account.placed + account.rejected
    assert account.duplicates == {}, transcript  # exactly once: nothing paid twice
    assert all(want == got for want, got in account.stats.values()), account.stats
    # SIGTERM at the end: every process then running stopped cleanly (the killed one is
    # not judged), the restarted payments among them
    assert [name for name, _code in account.exits].count("payments") == 1
    assert all(code == 0 for _name, code in account.exits), account.exits
