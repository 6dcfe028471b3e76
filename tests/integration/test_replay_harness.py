"""A live run recorded from Kafka, replayed in-process, gives the same emitted events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kit import Client, Service, Settings
from kit.replay import RecordingReader, RecordingWriter, record
from kit.replay.shadow import shadow
from kit.testing.harness import Harness
from kit.testing.wait import wait_until_async
from tests.fixtures import billing
from tests.fixtures.events import InvoiceIssued
from tests.integration.helpers import order, running

pytestmark = pytest.mark.integration


def only_keys(source: Path, target: Path, prefix: bytes) -> None:
    """Copy a recording, keeping only the records whose key starts with `prefix`."""
    with RecordingReader(source) as reader:
        records = [r for _i, r in reader if (r.key or b"").startswith(prefix)]
        schemas, topics = list(reader.schemas.values()), reader.info.topics
    with RecordingWriter(target, topics=topics) as writer:
        for schema in schemas:
            writer.add_schema(schema)
        for rec in records:
            writer.write(rec)


def test_recorded_live_run_replays_in_process_to_the_same_outputs(
    tmp_path: Path, kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    run_id, orders = unique_name("live"), unique_name("orders")
    since = datetime.now(UTC) - timedelta(seconds=1)
    # the example billing handler, on a topic of this test's own
    svc = Service("billing", group_id=unique_name("g"))
    svc.handler(topic=orders)(billing.on_order_placed)

    async def live() -> None:
        async with running(svc, kit_settings):
            async with Client(kit_settings) as client:
                for n in range(20):
                    o = order(n, quantity=1 + n % 3).model_copy(
                        update={"order_id": f"{run_id}-{n}"}
                    )
                    await client.publish(o, key=o.order_id, topic=orders)

                async def invoices() -> bool:
                    seen = [
                        e
                        async for _m, e in client.consume(
                            "billing.InvoiceIssued", InvoiceIssued, timeout=2
                        )
                        if e.order_id.startswith(run_id)
                    ]
                    return len(seen) >= 20

                await wait_until_async(invoices, timeout=60, interval=0.2, what="20 invoices")

    asyncio.run(live())
    path = tmp_path / "live.kitrec"
    result = record([orders, "billing.InvoiceIssued"], path, settings=kit_settings, start=since)
    assert result.records >= 40

    # billing.InvoiceIssued is shared: keep only this run's orders and invoices (keyed by
    # order id), so other processes' invoices on the same broker do not count.
    mine = tmp_path / "mine.kitrec"
    only_keys(path, mine, run_id.encode())
    report = asyncio.run(shadow(svc, mine))
    assert report.ok, str(report)
    assert report.recorded_outputs == report.shadow_outputs >= 20

    # and through the harness API directly: the same typed invoices for this run's orders
    harness = Harness(svc)
    harness.feed_recording(path, [orders])
    asyncio.run(harness.run())
    ours = sorted(
        i.order_id for i in harness.emitted(InvoiceIssued) if i.order_id.startswith(run_id)
    )
    assert ours == sorted(f"{run_id}-{n}" for n in range(20))
