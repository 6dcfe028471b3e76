"""On a real broker, the quiet paths stay quiet (issue 11, point 5): `kit run` starts and
stops without a librdkafka line, and a Client connects before its first publish."""

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
from tests.integration.helpers import order

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_kit_run_prints_no_librdkafka_line_on_a_healthy_broker(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    proc: subprocess.Popen[str] = spawn_python(
        ["-m", "kit.cli", "run", "tests.fixtures.billing:service"],
        env={"PYTHONPATH": str(ROOT), "KIT_GROUP_ID": unique_name("g")},
        cwd=ROOT,
    )
    out = OutputLines(proc)
    try:
        out.wait_for("assigned shop.OrderPlaced")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        out.wait(lambda _lines: True if out.ended else None, 10, "the end of the output")
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line.rstrip("\n") for line in out.lines]
    assert not [line for line in lines if line.startswith("%")], lines
    assert not [line for line in lines if "kit.librdkafka" in line and "WARNING" in line], lines


def test_a_client_connects_once_then_publishes(
    kafka_bootstrap: str, kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async def scenario() -> float:
        client = Client(kit_settings)  # no `async with`: the first publish connects
        try:
            started = time.monotonic()
            await client.publish(order(1), key=unique_name("k"), topic=unique_name("t"))
            return time.monotonic() - started
        finally:
            await client.close()

    assert asyncio.run(scenario()) < kit_settings.connect_timeout
