"""`kit run module:service` as a real process: handles events, stops on SIGTERM, checks config."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kit import Client, Settings
from kit.testing.process import OutputLines, spawn_python
from tests.fixtures.events import InvoiceIssued
from tests.integration.helpers import order

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def kit_process(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return spawn_python(["-m", "kit.cli", *args], env={"PYTHONPATH": str(ROOT), **env}, cwd=ROOT)


def test_kit_run_handles_events_and_stops_gracefully_on_sigterm(
    kafka_bootstrap: str, kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    marker = unique_name("run")
    proc = kit_process(
        {"KIT_GROUP_ID": unique_name("g"), "KIT_SHUTDOWN_TIMEOUT": "15"},
        "run",
        "tests.fixtures.billing:service",
    )
    out = OutputLines(proc)
    try:
        out.wait_for(f"against {kafka_bootstrap}")
        out.wait_for("assigned shop.OrderPlaced")

        async def scenario() -> list[InvoiceIssued]:
            async with Client(kit_settings) as client:
                await client.publish(order(1).model_copy(update={"order_id": marker}), key=marker)
                return [
                    e
                    async for _m, e in client.consume(
                        "billing.InvoiceIssued", InvoiceIssued, timeout=15
                    )
                    if e.order_id == marker
                ]

        invoices = asyncio.run(scenario())
        assert [i.invoice_id for i in invoices] == [f"inv-{marker}"]
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 16
        # The shared demo topic may hold earlier runs' orders, bad ones too: this new group
        # handles them all, so only the stop line itself is checked.
        out.wait_for("billing stopped:")
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"KIT_SHUTDOWN_TIMEOUT": "soon"}, "KIT_SHUTDOWN_TIMEOUT"),
        ({"KIT_RETRIES": "-1"}, "KIT_RETRIES"),
        ({"KIT_KAFKA_NO_SUCH_SETTING": "1"}, "KIT_KAFKA_NO_SUCH_SETTING"),
        (
            {"KIT_BOOTSTRAP_SERVERS": "127.0.0.1:1", "KIT_CONNECT_TIMEOUT": "2"},
            "KIT_BOOTSTRAP_SERVERS",
        ),
    ],
)
def test_a_wrong_setting_fails_at_start_naming_it(
    kafka_bootstrap: str, env: dict[str, str], setting: str
) -> None:
    proc = kit_process(env, "run", "tests.fixtures.billing:service")
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    assert f"configuration error: {setting}" in output, output


def test_two_services_in_one_process_say_when_ready_and_when_stopping(
    kafka_bootstrap: str, kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    """`kit run a:service b:service` runs both; each says once when it is assigned and
    announced, and each stop line counts the records in flight."""
    proc = kit_process(
        {"KIT_SHUTDOWN_TIMEOUT": "15"},
        "run",
        "tests.fixtures.billing:service",
        "tests.fixtures.stockroom:service",
    )
    out = OutputLines(proc)
    try:
        out.wait_for("kit: running billing 1.0.0, stockroom 1.0.0")
        out.wait_for("kit: billing ready: instance billing-")
        out.wait_for("kit: stockroom ready: instance stockroom-")

        async def call() -> bool:
            async with Client(kit_settings) as client:
                from tests.fixtures.events import CheckStock
                from tests.fixtures.stockroom import check_stock

                level = await client.request(check_stock, CheckStock(sku="tea", quantity=1))
                return level.enough

        assert asyncio.run(call())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
        out.wait_for("kit: stopping billing (")
        out.wait_for("records in flight)")
        out.wait_for("stockroom stopped:")
    finally:
        if proc.poll() is None:
            proc.kill()
