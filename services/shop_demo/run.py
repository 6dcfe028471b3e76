"""One run of the shop: start its processes, drive the orders, wait for the tail, account.

`run_shop(options)` is the scenario as a function: the demo's command line and the tests
call it. It returns the `Account` (whose `ok` says whether every count adds up) and the
lines it printed; it starts and stops every process it needs but not the broker.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kit import Client, load_settings
from kit.registry import Registry
from services.shop_demo import state
from services.shop_demo.account import (
    CANCELLED,
    CONFIRMED,
    PLACE_ORDER,
    Account,
    Held,
    expected_stats,
    expected_stock,
    reckon,
)
from services.shop_demo.drive import Placed, place, place_all, restock
from services.shop_demo.fleet import KIT_SERVICES, ROOT, Fleet
from services.shop_demo.observe import EventLog
from services.shop_demo.plan import TEA_PRICE, Outcome, Plan, PlannedOrder, build_plan
from services.shop_demo.report import describe_services, render

__all__ = ["SERVICES", "ShopOptions", "run_shop", "running"]

NOTIFICATIONS_FILE = "notifications.txt"
"""Where the notifications service writes its lines in the log folder (the run checks them)."""


def _say(text: str) -> None:
    print(f"shop | {text}", flush=True)


@dataclass
class ShopOptions:
    """What one run does. `on_order(index, fleet)` runs before each order (fault tests)."""

    orders: int = 50
    log_dir: Path | None = None
    say: Callable[[str], None] = _say
    fail_fast: bool = True
    on_order: Callable[[int, Fleet], Awaitable[None]] | None = None
    settle_timeout: float | None = None
    """Seconds for the asynchronous tail; default 60 + 0.2 s per order."""
    env: dict[str, str] = field(default_factory=dict)
    """Added to every process's environment."""
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Added to one process's environment, by name (`{"payments": {...}}`)."""


def shop_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of every shop process: the caller's, less KIT_GROUP_ID (each service
    is its own consumer group, named after it), plus the scenario's settings."""
    inherited = {k: v for k, v in os.environ.items() if k != "KIT_GROUP_ID"}
    return {
        **inherited,
        "PYTHONPATH": str(ROOT),
        "KIT_RETRY_BACKOFF": "0.05",
        "KIT_SHUTDOWN_TIMEOUT": "20",
        **state.scenario_env(),
        **extra,
    }


def declare(fleet: Fleet, log_dir: Path, service_env: dict[str, dict[str, str]]) -> list[str]:
    """Declare the shop's processes on `fleet`; their names, in start order."""
    for name in KIT_SERVICES:
        fleet.add_kit_service(name, service_env.get(name))
    faust_env = {**fleet.env, **service_env.get(state.FAUST_NAME, {})}
    fleet.add(state.faust_spec(faust_env, log_dir))
    return list(SERVICES)


SERVICES = (*KIT_SERVICES, state.FAUST_NAME)
"""Every service of the shop (the Faust app too: its bridge announces it)."""


async def discover(
    say: Callable[[str], None], timeout: float = 30.0
) -> tuple[list[str], list[str]]:
    """Wait until each service has a live instance in the registry; describe them all.
    The descriptions, and the services still missing at the deadline (the account checks)."""
    async with Registry() as registry:
        deadline = time.monotonic() + timeout
        while missing := [n for n in SERVICES if not registry.has_live(n)]:
            if time.monotonic() > deadline:
                say(f"not in the registry after {timeout:g}s: {', '.join(missing)}")
                break
            await asyncio.sleep(0.1)  # poll interval of a wait with a deadline
        return describe_services(registry.instances()), missing


async def settle(
    client: Client,
    plan: Plan,
    placed: list[Placed],
    log: EventLog,
    stock: state.StockReader,
    options: ShopOptions,
    notes: Path,
) -> Held:
    """Wait (with a deadline) until every placed order is confirmed or cancelled, and the
    stock, the Faust table and the notifications agree with that; return what they hold."""
    accepted = {p.order_id for p in placed if p.accepted}
    timeout = options.settle_timeout or 60 + 0.2 * len(plan.orders)
    deadline = time.monotonic() + timeout
    shown = 0.0
    while True:
        await asyncio.to_thread(log.drain)
        final = log.ids(CONFIRMED) | log.ids(CANCELLED)
        held = await asyncio.to_thread(stock.read)
        stats = await state.ask_stats(client, plan.customers)
        stock_ok = held == expected_stock(plan, log.ids(CONFIRMED))
        stats_ok = stats == expected_stats(plan, log.ids(CONFIRMED))
        notified = state.notifications(notes, plan.run)
        done = accepted <= final and final <= set(notified)
        if done and stock_ok and stats_ok:
            break
        if time.monotonic() > deadline:
            options.say(f"the tail did not settle within {timeout:g}s")
            break
        if time.monotonic() - shown > 2:
            shown = time.monotonic()
            options.say(
                f"settling: {len(final & accepted)}/{len(accepted)} orders final, "
                f"{len(notified)} notified, "
                f"stock {'agrees' if stock_ok else 'not yet'}, "
                f"customer_stats {'agrees' if stats_ok else 'not yet'}"
            )
        await asyncio.sleep(0.2)  # poll interval of a wait with a deadline
    return Held({sku: held.get(sku) for sku in plan.skus}, dict(stats), notified)


async def fail_fast(client: Client, fleet: Fleet, plan: Plan, say: Callable[[str], None]) -> Placed:
    """Stop inventory (SIGTERM), wait until the registry no longer lists it, place one order."""
    code = await asyncio.to_thread(fleet.stop, "inventory")
    say(f"stopped inventory (SIGTERM, exit {code}); placing one more order")
    async with Registry() as registry:
        deadline = time.monotonic() + 15
        while registry.has_live("inventory") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # poll interval of a wait with a deadline
    order = PlannedOrder(
        len(plan.orders),
        f"{plan.run}-failfast",
        plan.customers[0],
        ((plan.tea, 1, TEA_PRICE),),
        Outcome.REJECTED,
    )
    result = await place(client, order)
    say(
        f"order {order.order_id}: {'accepted' if result.accepted else 'rejected'} in "
        f"{result.latency_ms:.1f} ms: {result.error or result.reason}"
    )
    return result


async def read_requests(log: EventLog, order_ids: set[str], timeout: float = 15.0) -> None:
    """Read the log until it holds the request of each of these orders on
    orders.place_order (the account counts the requests there), or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        await asyncio.to_thread(log.drain)
        if order_ids <= log.ids(PLACE_ORDER) or time.monotonic() > deadline:
            return


@dataclass
class _Seen:
    """What the async part of a run collected, for the account."""

    services: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=lambda: list(SERVICES))
    """Services not found live in the registry (all of them until discovery ran)."""
    placed: list[Placed] = field(default_factory=list)
    fail_fast: Placed | None = None
    held: Held = field(default_factory=Held)


async def _scenario(plan: Plan, fleet: Fleet, options: ShopOptions, seen: _Seen) -> EventLog:
    """Drive the plan against the running fleet; fill `seen`; the event log it read."""
    say = options.say
    since_ms = int(time.time() * 1000) - 2000
    async with Client(load_settings()) as client:
        seen.services, seen.missing = await discover(say)
        say(f"registry: {len(seen.services)} live instances (listed in the account)")
        await restock(client, plan.initial_stock)
        say("stock: " + ", ".join(f"{q} x {s}" for s, q in plan.initial_stock.items()))

        async def hook(index: int) -> None:
            if options.on_order is not None:
                await options.on_order(index, fleet)

        seen.placed = await place_all(client, plan, say, hook)
        log = EventLog(client.settings, client.codec, plan.run, since_ms)
        try:  # the log's records stay readable once its consumer is closed
            stock = state.StockReader(client.settings, client.codec, plan.run)
            try:
                notes = fleet.log_dir / NOTIFICATIONS_FILE
                seen.held = await settle(client, plan, seen.placed, log, stock, options, notes)
                if options.fail_fast:
                    seen.fail_fast = await fail_fast(client, fleet, plan, say)
                calls = [*seen.placed, *([seen.fail_fast] if seen.fail_fast else [])]
                await read_requests(log, {p.order_id for p in calls})
            finally:
                await asyncio.to_thread(stock.close)
        finally:
            await asyncio.to_thread(log.close)
    return log


@contextmanager
def running(fleet: Fleet) -> Iterator[Fleet]:
    """The fleet, stopped at the end however the block ends: SIGTERM and bounded waits
    (`stop_all`), then SIGKILL for whatever still runs, even if `stop_all` raised."""
    try:
        yield fleet
    finally:
        try:
            fleet.stop_all()
        finally:
            fleet.close()


def run_shop(options: ShopOptions) -> tuple[Account, list[str]]:
    """Run the whole scenario on the broker KIT_BOOTSTRAP_SERVERS names (or the local one).

    Returns the account and its printed lines; `account.ok` is False if a count does not
    add up or a process did not stop cleanly. Logs go to `options.log_dir` (else a new
    temporary folder).
    """
    say = options.say
    run = f"shop{uuid.uuid4().hex[:6]}"
    plan = build_plan(run, options.orders)
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix=f"kit-{run}-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(log_dir, shop_env(options.env))
    notes = {"SHOP_NOTIFICATIONS_FILE": str(log_dir / NOTIFICATIONS_FILE)}
    defaults = {**state.scenario_service_env(), "notifications": notes}
    service_env = {
        name: {**defaults.get(name, {}), **options.service_env.get(name, {})}
        for name in {*defaults, *options.service_env}
    }
    names = declare(fleet, log_dir, service_env)
    say(f"run {run}: {len(plan.orders)} orders; process logs in {log_dir}")
    say(
        f"plan: {plan.count(Outcome.CONFIRMED)} to confirm, {plan.count(Outcome.CANCELLED)} "
        f"over the payment limit (to cancel), {plan.count(Outcome.REJECTED)} short of "
        "saffron (to reject)" + (", then one with inventory stopped" if options.fail_fast else "")
    )
    seen = _Seen()
    with running(fleet):  # SIGTERM, bounded waits, SIGKILL; after a failure too
        for line in fleet.start(names):
            say(f"up: {line}")
        log = asyncio.run(_scenario(plan, fleet, options, seen))
    account = reckon(plan, seen.placed, log, seen.fail_fast, seen.held)
    account.check(
        f"all {len(SERVICES)} services found in the registry",
        not seen.missing,
        f"missing: {', '.join(seen.missing)}" if seen.missing else ", ".join(SERVICES),
    )
    account.exits = fleet.exits
    unclean = [f"{name} {code}" for name, code in fleet.exits if code != 0]
    account.check(
        "every process stopped cleanly on SIGTERM",
        not unclean,
        ", ".join(unclean) or f"{len(fleet.exits)} processes exited 0",
    )
    lines = render(account, seen.services)
    for line in lines:
        say(line)
    return account, lines
