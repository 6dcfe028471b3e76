"""`kit run --workers 2` against a broker: both workers share a 4-partition topic, every
record is handled once, SIGTERM stops both with exit 0."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from kit import Client, Settings
from kit.testing.process import OutputLines, spawn_python
from tests.fixtures.events import InvoiceIssued
from tests.integration.helpers import order

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
RECORDS = 400


def kit_process(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return spawn_python(["-m", "kit.cli", *args], env={"PYTHONPATH": str(ROOT), **env}, cwd=ROOT)


def test_two_workers_share_the_partitions_and_handle_each_record_once(
    kafka_bootstrap: str, kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    topic, out_topic = unique_name("workers.in"), unique_name("workers.out")
    env = {
        "KIT_GROUP_ID": unique_name("g"),
        "KIT_SHUTDOWN_TIMEOUT": "15",
        "WORKERPOOL_TOPIC": topic,
        "WORKERPOOL_OUT": out_topic,
    }
    proc = kit_process(env, "run", "--workers", "2", "tests.fixtures.workerpool:service")
    out = OutputLines(proc)
    try:
        out.wait_for("kit: running 2 workers of workerpool 1.0.0")
        ready = [out.wait_for(f"[worker {n} pid ") for n in (1, 2)]
        ready = [out.wait_for(f"{tag.split(']')[0]}] kit: workerpool ready") for tag in ready]
        pids = {m.group(1) for line in ready if (m := re.search(r"pid (\d+)\]", line))}
        assert len(pids) == 2

        async def scenario() -> list[InvoiceIssued]:
            async with Client(kit_settings) as client:
                for n in range(RECORDS):
                    await client.publish(order(n), key=f"o-{n}", topic=topic)
                # read until 10 s pass without a record: a duplicate would show up too
                return [i async for _m, i in client.consume(out_topic, InvoiceIssued, timeout=10)]

        invoices = asyncio.run(scenario())
        counts = Counter(i.order_id for i in invoices)
        assert sorted(counts) == sorted(f"o-{n}" for n in range(RECORDS))
        assert set(counts.values()) == {1}
        assert {i.invoice_id for i in invoices} == pids  # both workers handled records
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
        for pid in pids:
            out.wait_for(f"pid {pid}] kit: stopping workerpool")
    finally:
        if proc.poll() is None:
            proc.kill()
