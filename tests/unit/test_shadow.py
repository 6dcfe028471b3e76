"""Shadow replay: a changed service version is caught, field by field."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kit import Context, Service
from kit.cli import main as kit_main
from kit.replay.shadow import shadow
from kit.testing.harness import Harness
from tests.fixtures import billing, orderdesk, stockroom
from tests.fixtures.events import InvoiceIssued, OrderPlaced
from tests.integration.helpers import order


def billing_v2() -> Service:
    """Billing with a 'small' change: a 10 % surcharge on orders above 5 euros."""
    svc = Service("billing", version="2.0.0")

    @svc.handler()
    async def on_order_placed(event: OrderPlaced, ctx: Context) -> None:
        total = sum(line.quantity * line.unit_price_cents for line in event.lines)
        if total > 500:
            total = total * 11 // 10
        ctx.publish(
            InvoiceIssued(
                invoice_id=f"inv-{event.order_id}",
                order_id=event.order_id,
                total_cents=total,
                issued_at=event.placed_at,
            ),
            key=event.order_id,
        )

    return svc


def live_run(path: Path) -> Path:
    h = Harness(billing.service)
    for n in range(6):
        h.send(order(n, quantity=1 if n != 4 else 5), key=f"o-{n}")
    asyncio.run(h.run())
    h.save_recording(path)
    return path


def test_same_version_has_no_differences(tmp_path: Path) -> None:
    report = asyncio.run(shadow(billing.service, live_run(tmp_path / "live.kitrec")))
    assert report.ok, str(report)
    assert (report.inputs, report.recorded_outputs, report.shadow_outputs) == (6, 6, 6)


def test_changed_version_reports_exactly_the_changed_field(tmp_path: Path) -> None:
    report = asyncio.run(shadow(billing_v2(), live_run(tmp_path / "live.kitrec")))
    assert len(report.differences) == 1, str(report)
    (diff,) = report.differences
    assert (diff.kind, diff.topic, diff.key) == ("changed", "billing.InvoiceIssued", b"o-4")
    assert [(c.path, c.recorded, c.shadow) for c in diff.changes] == [("total_cents", 520, 572)]
    assert "changed billing.InvoiceIssued key=o-4 #0: total_cents: 520 -> 572" in str(report)


def test_missing_and_extra_outputs(tmp_path: Path) -> None:
    silent = Service("billing")

    @silent.handler()
    async def on_order_placed(event: OrderPlaced, ctx: Context) -> None:
        if event.order_id != "o-1":
            ctx.publish(
                InvoiceIssued(
                    invoice_id="x",
                    order_id=event.order_id,
                    total_cents=0,
                    issued_at=event.placed_at,
                ),
                key="other",
            )

    report = asyncio.run(shadow(silent, live_run(tmp_path / "live.kitrec")))
    kinds = sorted({d.kind for d in report.differences})
    assert kinds == ["extra", "missing"]
    assert sum(d.kind == "missing" for d in report.differences) == 6
    assert sum(d.kind == "extra" for d in report.differences) == 5


def test_kit_replay_shadow_command(tmp_path: Path, capsys) -> None:
    path = live_run(tmp_path / "live.kitrec")
    assert kit_main(["replay", "--shadow", "tests.fixtures.billing:service", str(path)]) == 0
    assert "0 difference(s)" in capsys.readouterr().out


# --- issue 11.9: only the services' outputs, groups, --ignore, ISO times, dead letters ----


def shop_run(path: Path, *, bad: int | None = None) -> Path:
    """Billing, orderdesk and stockroom handle 6 orders (order `bad` has a 0 quantity, which
    billing dead-letters); an unrelated topic is recorded too."""
    h = Harness(billing.service, orderdesk.service, stockroom.service)
    for n in range(6):
        h.send(order(n, quantity=0 if n == bad else 1), key=f"o-{n}")
    h.send_raw("audit.trail", b"not kit's", key="x")
    asyncio.run(h.run())
    h.save_recording(path)
    return path


def test_only_the_services_own_outputs_are_compared(tmp_path: Path) -> None:
    path = shop_run(tmp_path / "shop.kitrec")
    report = asyncio.run(shadow(billing.service, path))
    assert report.ok, str(report)
    assert report.input_topics == ["shop.OrderPlaced"]
    assert report.compared == ["billing.InvoiceIssued"]
    assert report.not_compared == [
        "_kit.replies.harness",
        "audit.trail",
        "shop.OrderChecked",
        "stockroom.check_stock",
    ]
    assert (report.inputs, report.recorded_outputs, report.shadow_outputs) == (6, 6, 6)
    assert "missing" not in str(report)


def test_a_service_that_calls_another_is_shadowed_together_with_it(tmp_path: Path) -> None:
    path = shop_run(tmp_path / "shop.kitrec")
    report = asyncio.run(shadow([orderdesk.service, stockroom.service], path))
    assert report.ok, str(report)
    # the requests orderdesk sends are its outputs here, not inputs fed to stockroom again
    assert report.input_topics == ["shop.OrderPlaced"] and report.inputs == 6
    assert "stockroom.check_stock" in report.compared and "shop.OrderChecked" in report.compared
    assert report.dead_letters == {} and report.unanswered == []


def test_a_caller_shadowed_alone_says_which_service_it_misses(tmp_path: Path) -> None:
    path = shop_run(tmp_path / "shop.kitrec")
    report = asyncio.run(shadow(orderdesk.service, path))
    assert not report.ok
    assert report.dead_letters == {"NotInHarness": 6}
    assert report.unanswered == ["stockroom.check_stock"]
    text = str(report)
    assert "6 dead letter(s) (0 recorded)" in text
    assert "dead letters: NotInHarness 6" in text
    assert "no shadowed service answers stockroom.check_stock" in text
    assert "--shadow" in text and "stockroom" in text
    assert "extra shop.OrderPlaced.dlt key=o-0 #0 (dead letter: NotInHarness: " in text


def test_dead_letters_are_counted_and_compared(tmp_path: Path) -> None:
    path = shop_run(tmp_path / "shop.kitrec", bad=2)
    same = asyncio.run(shadow(billing.service, path))
    assert same.ok, str(same)
    assert same.dead_letters == {"ValueError": 1} and same.recorded_dead_letters == 1
    assert "1 dead letter(s) (1 recorded)" in str(same)
    assert "shop.OrderPlaced.dlt" in same.compared

    fixed = asyncio.run(shadow(billing_v2(), path))  # invoices the 0-quantity order instead
    kinds = {(d.kind, d.topic) for d in fixed.differences}
    assert ("missing", "shop.OrderPlaced.dlt") in kinds
    assert ("extra", "billing.InvoiceIssued") in kinds
    assert fixed.dead_letters == {}


def billing_now() -> Service:
    """Billing stamping invoices with the time of issue: a value no two runs share."""
    svc = Service("billing", version="3.0.0")

    @svc.handler()
    async def on_order_placed(event: OrderPlaced, ctx: Context) -> None:
        ctx.publish(
            InvoiceIssued(
                invoice_id=f"inv-{event.order_id}",
                order_id=event.order_id,
                total_cents=sum(line.quantity * line.unit_price_cents for line in event.lines),
                issued_at=datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC),
            ),
            key=event.order_id,
        )

    return svc


def test_times_are_printed_as_iso_text(tmp_path: Path) -> None:
    report = asyncio.run(shadow(billing_now(), live_run(tmp_path / "live.kitrec")))
    assert len(report.differences) == 6
    assert (
        "changed billing.InvoiceIssued key=o-0 #0: "
        "issued_at: 2026-01-01T00:00:00+00:00 -> 2026-05-04T03:02:01+00:00"
    ) in str(report)


def test_ignored_field_paths(tmp_path: Path) -> None:
    path = live_run(tmp_path / "live.kitrec")
    report = asyncio.run(shadow(billing_now(), path, ignore=["issued_at"]))
    assert report.ok, str(report)
    assert report.ignored == 6 and "6 change(s) ignored (issued_at)" in str(report)
    scoped = asyncio.run(shadow(billing_now(), path, ignore=["billing.InvoiceIssued:issued_at"]))
    assert scoped.ok
    elsewhere = asyncio.run(shadow(billing_now(), path, ignore=["other.Topic:issued_at"]))
    assert len(elsewhere.differences) == 6


def test_ignore_patterns() -> None:
    from kit.errors import ConfigError
    from kit.replay.shadow import IgnoreRules

    rules = IgnoreRules(["lines[*].sku", "meta", "t.x:*.at"])
    assert rules.covers("any", "lines[3].sku") and not rules.covers("any", "lines[3].qty")
    assert rules.covers("any", "meta.trace[0]") and not rules.covers("any", "metadata")
    assert rules.covers("t.x", "a.at") and not rules.covers("t.y", "a.at")
    with pytest.raises(ConfigError):
        IgnoreRules(["lines[x"])


def test_kit_replay_shadow_of_a_group_with_ignore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = shop_run(tmp_path / "shop.kitrec")
    group = ["tests.fixtures.orderdesk:service", "tests.fixtures.stockroom:service"]
    argv = ["replay", "--shadow", *group, str(path), "--ignore", "served_by"]
    assert kit_main(argv) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "0 difference(s)" in out and "compared: " in out
    alone = ["replay", "--shadow", "tests.fixtures.orderdesk:service", str(path)]
    assert kit_main(alone) == 1
    assert "no shadowed service answers stockroom.check_stock" in capsys.readouterr().out
