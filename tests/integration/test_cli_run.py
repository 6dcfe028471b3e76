"""`kit run module:service` as a real process: handles events, stops on SIGTERM, checks config."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kit import Client, Settings
from services.shop import InvoiceIssued
from tests.integration.helpers import order

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def kit_process(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kit.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class Lines:
    """Collects a process's output in a thread so the test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                assert left > 0, f"no line with {text!r} in {timeout}s:\n{''.join(self.lines)}"
                self.changed.wait(left)


def test_kit_run_handles_events_and_stops_gracefully_on_sigterm(
    kafka_bootstrap: str, kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    marker = unique_name("run")
    proc = kit_process(
        {"KIT_GROUP_ID": unique_name("g"), "KIT_SHUTDOWN_TIMEOUT": "15"},
        "run",
        "services.billing:service",
    )
    out = Lines(proc)
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
    proc = kit_process(env, "run", "services.billing:service")
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    assert f"configuration error: {setting}" in output, output
