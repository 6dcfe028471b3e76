"""The demo: the billing service runs under `kit run` on a real broker and handles orders.

Run it with `./dev demo` (sets everything up), or `python -m services.demo` in the venv.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from kit import Client, load_settings
from kit.testing.process import OutputLines, spawn_python
from services.shop import InvoiceIssued, OrderLine, OrderPlaced

ROOT = Path(__file__).resolve().parents[1]


def say(text: str) -> None:
    """Print one demo line."""
    print(f"demo | {text}", flush=True)


def start_service(env: dict[str, str]) -> subprocess.Popen[str]:
    """`kit run services.billing:service` in its own process; returns once it has partitions."""
    proc = spawn_python(["-m", "kit.cli", "run", "services.billing:service"], env=env, cwd=ROOT)
    output = OutputLines(proc, echo=lambda line: print(f"  billing | {line.rstrip()}", flush=True))
    try:
        output.wait_for(" assigned ", timeout=60)
    except TimeoutError:
        proc.kill()
        raise SystemExit("demo: the billing service did not start; see its output above") from None
    return proc


def dead_letters(bootstrap: str, run: str) -> list[dict[str, bytes]]:
    """The dead-letter records of this demo run, with their kit-dlt-* headers."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"demo-dlt-{run}"})
    try:
        topic = "shop.OrderPlaced.dlt"
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, -2) for p in parts])
        found: list[dict[str, bytes]] = []
        deadline = time.monotonic() + 15
        while len(found) < 2 and time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.2):
                if msg.error() is None and (msg.key() or b"").startswith(run.encode()):
                    found.append(dict(msg.headers() or []))
        return found
    finally:
        consumer.close()


async def traffic(run: str) -> list[InvoiceIssued]:
    """Publish orders (and two bad records) and collect this run's invoices."""
    async with Client(load_settings()) as client:
        for n in range(1, 6):
            order = OrderPlaced(
                order_id=f"{run}-{n}",
                customer=["ada", "grace", "alan"][n % 3],
                lines=[
                    OrderLine(sku="tea", quantity=n, unit_price_cents=350),
                    OrderLine(sku="cake", quantity=1, unit_price_cents=420),
                ],
                placed_at=datetime.now(UTC),
            )
            await client.publish(order, key=order.order_id)
            say(f"published OrderPlaced {order.order_id} for {order.customer}")
        bad = OrderPlaced(
            order_id=f"{run}-bad",
            customer="eve",
            lines=[OrderLine(sku="tea", quantity=0, unit_price_cents=1)],
            placed_at=datetime.now(UTC),
        )
        await client.publish(bad, key=bad.order_id)
        say(f"published OrderPlaced {bad.order_id} with quantity 0 (the handler rejects it)")
        await client.publish_raw("shop.OrderPlaced", b"\x00not avro at all", key=f"{run}-garbage")
        say("published 16 bytes of garbage to shop.OrderPlaced")
        invoices = []
        async for _msg, invoice in client.consume(
            "billing.InvoiceIssued", InvoiceIssued, timeout=15
        ):
            if invoice.order_id.startswith(run):
                invoices.append(invoice)
                say(
                    f"received InvoiceIssued {invoice.invoice_id}: {invoice.total_cents / 100:.2f} "
                    f"{invoice.currency}"
                )
                if len(invoices) == 5:
                    break
        return invoices


def main() -> int:
    """Run the demo; exit 0 when every expected outcome was seen."""
    from kit.broker.local import ensure_running, status, stop

    started_broker = False
    if not os.environ.get("KIT_BOOTSTRAP_SERVERS"):
        started_broker = status() is None
        info = ensure_running()
        os.environ["KIT_BOOTSTRAP_SERVERS"] = info.bootstrap_servers
        say(f"local Apache Kafka {info.version} at {info.bootstrap_servers}")
    bootstrap = os.environ["KIT_BOOTSTRAP_SERVERS"]
    run = f"demo{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KIT_RETRY_BACKOFF": "0.05"}
    ok = False
    proc = start_service(env)
    try:
        invoices = asyncio.run(traffic(run))
        letters = dead_letters(bootstrap, run)
        for h in letters:
            say(
                f"dead letter ({h['kit-dlt-reason'].decode()}, after "
                f"{h['kit-dlt-attempts'].decode()} attempt(s)): "
                f"{h['kit-dlt-exception-type'].decode()}: "
                f"{h['kit-dlt-exception-message'].decode()[:80]}"
            )
        ok = len(invoices) == 5 and len(letters) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        say("sent SIGTERM to the billing service")
        proc.wait(timeout=60)
        say(f"billing exited with code {proc.returncode}")
        ok = ok and proc.returncode == 0
        if started_broker:
            stop()
            say("stopped the local broker")
    say("OK: 5 invoices, 2 dead letters, graceful stop" if ok else "FAILED: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
