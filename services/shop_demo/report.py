"""The account printed: short lines a person reads at the end of the demo."""

from __future__ import annotations

from kit.registry import Registration
from services.shop_demo.account import Account, percentile

__all__ = ["describe_services", "render"]


def describe_services(instances: list[Registration]) -> list[str]:
    """One line per live instance: service, version, instance, endpoints (kind name topic)."""
    lines = []
    for reg in sorted(instances, key=lambda r: (r.service, r.instance_id)):
        endpoints = ", ".join(
            f"{'responder' if e.kind == 'responder' else 'on'} {e.name} ({e.topic})"
            for e in reg.endpoints
        )
        lines.append(f"{reg.service} {reg.version} [{reg.instance_id}, pid {reg.pid}]: {endpoints}")
    return lines


def _money(cents: int) -> str:
    return f"{cents / 100:,.2f}"


def _calls(a: Account) -> list[str]:
    why = ", ".join(f"{n} {kind}" for kind, n in a.rejected_why.items())
    lines = [
        f"requested {a.requested} = placed {a.placed} + rejected {a.rejected}"
        + (f" ({why})" if why else "")
        + (f"; {a.failed_calls} calls failed" if a.failed_calls else ""),
        f"placed {a.placed} = confirmed {a.confirmed} + cancelled {a.cancelled}",
        f"orders.place_order request-reply latency: p50 {percentile(a.latencies_ms, 50):.1f} ms, "
        f"p99 {percentile(a.latencies_ms, 99):.1f} ms over {len(a.latencies_ms)} calls "
        f"(the first, {a.first_ms:.0f} ms, also set up the reply topics: not counted)",
    ]
    if a.fail_fast is not None:
        ff = a.fail_fast
        outcome = "accepted" if ff.accepted else f"rejected ({ff.error or ff.reason})"
        lines.append(
            f"with inventory stopped, order {ff.order_id} was {outcome} "
            f"in {ff.latency_ms:.1f} ms (counted above among the rejected)"
        )
    return lines


def _state(a: Account) -> list[str]:
    lines = []
    for sku, (want, held) in a.stock.items():
        stocked = a.stock_in.get(sku, 0)
        lines.append(
            f"stock {sku}: {stocked} stocked - {stocked - want} in confirmed orders "
            f"= {want}; inventory holds {held}"
        )
    total_orders = total_cents = 0
    for customer, (confirmed, got) in a.stats.items():
        shown = f"{got[0]} orders, {_money(got[1])}" if got is not None else "no answer"
        lines.append(
            f"customer_stats {customer}: {shown} "
            f"(confirmed: {confirmed[0]}, {_money(confirmed[1])})"
        )
        if got is not None:
            total_orders, total_cents = total_orders + got[0], total_cents + got[1]
    lines.append(f"customer_stats totals: {total_orders} orders, {_money(total_cents)}")
    lines.append(
        f"notifications: {a.notified} written for {len(a.notified_orders)} orders "
        "(SHOP_NOTIFICATIONS_FILE)"
    )
    return lines


def render(a: Account, services: list[str]) -> list[str]:
    """The account as lines (no prefix)."""
    lines = [f"run {a.run}", "services discovered in the registry:"]
    lines += [f"  {line}" for line in services] or ["  (none)"]
    lines += _calls(a)
    lines.append("events per topic (this run's records):")
    width = max((len(t) for t in a.per_topic), default=0)
    for topic, count in a.per_topic.items():
        dup = f"  ({a.duplicates[topic]} duplicates)" if a.duplicates.get(topic) else ""
        lines.append(f"  {topic:<{width}}  {count:>6}{dup}")
    lines += _state(a)
    if a.exits:
        lines.append("exits: " + ", ".join(f"{name} {code}" for name, code in a.exits))
    held = sum(1 for c in a.checks if c.ok)
    lines.append(f"checks: {held} of {len(a.checks)} hold")
    for check in a.checks:
        lines.append(f"  {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    return lines
