"""Shadow replay: a changed service version is caught, field by field."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kit import Context, Service
from kit.cli import main as kit_main
from kit.replay.shadow import shadow
from kit.testing.harness import Harness
from services import billing
from services.shop import InvoiceIssued, OrderPlaced
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
    assert kit_main(["replay", "--shadow", "services.billing:service", str(path)]) == 0
    assert "0 difference(s)" in capsys.readouterr().out
