"""The Faust app customer_stats among kit services, on a real broker (kit.faust).

One Faust worker (a subprocess, as `faust -A services.customer_stats.app worker` runs it)
and kit in this process: kit publishes OrderConfirmed (one with a newer writer schema the
worker does not have) and the Faust table counts them, while a record that is no event goes
to the dead-letter topic without stopping the count; the worker publishes CustomerStats and
a kit handler decodes them typed; a kit request to customer_stats.get is answered from the
table; the registry lists the worker while it runs, and after SIGTERM its tombstone removes
it. With KIT_SCHEMA_REGISTRY_URL (a real registry: kit's local one), the worker reads and
writes the registry format; a registry it cannot reach stops it at its start.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from kit import Client, Codec, Service, Settings
from kit.registry import Registry
from kit.schema import Schema
from kit.testing.process import OutputLines, spawn_python
from kit.transport.registry_format import RegistryFormat
from services.customer_stats.api import get
from services.customer_stats.events import CustomerStats, GetStats
from services.orders.events import OrderConfirmed
from tests.integration.helpers import read_raw, running

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
# as deployed; --without-web: no HTTP server on :6066, which another worker may hold
WORKER = "-m faust -A services.customer_stats.app worker -l info --without-web".split()


async def until(probe: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """Poll `probe` until it returns something other than None, within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s")


def newer_order_confirmed() -> Schema:
    """orders.OrderConfirmed as a newer producer writes it: one more field, with a default."""
    definition = copy.deepcopy(OrderConfirmed.kit_schema().definition)
    definition["fields"].append({"name": "channel", "type": "string", "default": "web"})
    return Schema.from_json(definition)


def start_worker(
    app_id: str, workdir: Path, **env: str
) -> tuple[subprocess.Popen[str], OutputLines, str]:
    """The Faust worker, as deployed (`env`: more of its environment); returns it with its
    output and its kit instance id.

    In `workdir`: Faust makes its data folder (`<app id>-data`) in the current directory.
    """
    proc = spawn_python(
        WORKER,
        env={"PYTHONPATH": str(ROOT), "KIT_GROUP_ID": app_id, "KIT_REGISTRY_HEARTBEAT": "0.5"}
        | env,
        cwd=workdir,
    )
    out = OutputLines(proc, echo=sys.stderr.write)  # shown by pytest when the test fails
    ready = out.wait_for("kit bridge: customer_stats ready", timeout=120)
    match = re.search(r"instance (customer_stats-[0-9a-f]{12}) of Faust app (\S+),", ready)
    assert match and match.group(2) == app_id, ready
    assert "started as:" in ready and "services.customer_stats.app worker" in ready
    return proc, out, match.group(1)


def kit_services_json() -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "kit.cli", "services", "--json", "--service", "customer_stats"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_a_faust_app_counts_kit_events_answers_kit_requests_and_registers(
    kafka_bootstrap: str,
    kit_settings: Settings,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    app_id = unique_name("customer-stats")
    customer = f"ada-{uuid.uuid4().hex[:8]}"
    proc, out, instance = start_worker(app_id, tmp_path)
    try:
        asyncio.run(exchange(kit_settings, unique_name, customer, instance))
        listed = kit_services_json()["instances"]
        assert isinstance(listed, list)
        (entry,) = [i for i in listed if i["instance_id"] == instance]
        assert entry["metadata"]["faust_app"] == app_id
        assert [(e["kind"], e["name"], e["topic"]) for e in entry["endpoints"]] == [
            ("responder", "get", "customer_stats.get")
        ]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, "".join(out.lines)
        out.wait_for(f"kit bridge: customer_stats stopped: {instance} tombstoned", timeout=5)
        asyncio.run(gone(kit_settings, instance))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def exchange(
    settings: Settings, unique_name: Callable[[str], str], customer: str, instance: str
) -> None:
    """Both directions of events, a request, and the registry entry, while the worker runs."""
    seen: list[CustomerStats] = []
    watcher = Service("stats-watcher", group_id=unique_name("watcher"))

    @watcher.handler(topic="customer_stats.CustomerStats")
    async def on_stats(event: CustomerStats) -> None:
        if event.customer == customer:
            seen.append(event)

    async with Registry(settings) as registry, Client(settings) as client:
        regs = await until(lambda: _live(registry, instance), 30, f"{instance} in the registry")
        assert regs.metadata["runtime"] == "faust"
        assert await client.request(get, GetStats(customer=customer), timeout=10) == CustomerStats(
            customer=customer, orders=0, total_cents=0
        )
        bad_key = f"{customer}-bad"  # not Avro: dead-lettered, and counting goes on
        await client.publish_raw("orders.OrderConfirmed", b"not an event", key=bad_key)
        at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        for n, cents in enumerate((1000, 250)):
            order = OrderConfirmed(
                order_id=f"{customer}-{n}", customer=customer, total_cents=cents, confirmed_at=at
            )
            await client.publish(order, key=order.order_id)
        newer = newer_order_confirmed()  # a writer schema the worker has not got
        await client.ensure_schema(newer)  # on _kit_schemas before the record, as kit does
        datum = {"order_id": f"{customer}-2", "customer": customer, "total_cents": 5}
        value = client.codec.encode_datum(newer, {**datum, "confirmed_at": at, "channel": "app"})
        await client.publish_raw("orders.OrderConfirmed", value, key=f"{customer}-2")

        async def counted() -> CustomerStats | None:
            stats = await client.request(get, GetStats(customer=customer), timeout=10)
            return stats if stats.orders == 3 else None

        stats = await until(counted, 60, "three orders counted")
        assert stats == CustomerStats(customer=customer, orders=3, total_cents=1255)
        dead = [
            m
            for m in await asyncio.to_thread(
                read_raw, bootstrap_of(settings), "orders.OrderConfirmed.dlt", 1
            )
            if m.key() == bad_key.encode()
        ]
        assert [m.value() for m in dead] == [b"not an event"]
        assert dict(dead[0].headers() or [])["kit-dlt-reason"] == b"decode"
        assert dict(dead[0].headers() or [])["kit-dlt-service"] == b"customer_stats"

        async with running(watcher, settings):

            async def three() -> bool | None:
                return True if len(seen) >= 3 else None

            await until(three, 60, "three CustomerStats events handled by kit")
        # the three orders have three keys, so partitions: the count may take them in any
        # order, but one customer's stats are written by one worker, in order
        assert [s.orders for s in seen] == [1, 2, 3] and seen[-1].total_cents == 1255
        assert seen[0].total_cents in {1000, 250, 5} and seen[1].total_cents in {1250, 1005, 255}


def bootstrap_of(settings: Settings) -> str:
    assert settings.bootstrap_servers
    return settings.bootstrap_servers


async def _live(registry: Registry, instance: str) -> object:
    await registry.sync()
    return next((r for r in registry.lookup("customer_stats") if r.instance_id == instance), None)


async def gone(settings: Settings, instance: str) -> None:
    """After the graceful stop, a new reader does not see the instance (its tombstone)."""
    async with Registry(settings, ttl=3600) as registry:  # not aged out: removed
        assert [r.instance_id for r in registry.instances() if r.instance_id == instance] == []


@pytest.mark.schema_registry
def test_with_a_schema_registry_the_worker_reads_and_writes_the_registry_format(
    kafka_bootstrap: str,
    kit_registry_settings: Settings,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """A kit Client and the worker, both with KIT_SCHEMA_REGISTRY_URL: the request, the
    order (through the app's group_by topic) and the worker's CustomerStats are framed."""
    app_id = unique_name("customer-stats")
    customer = f"sr-{uuid.uuid4().hex[:8]}"
    url = kit_registry_settings.schema_registry_url or ""
    proc, out, instance = start_worker(app_id, tmp_path, KIT_SCHEMA_REGISTRY_URL=url)
    try:
        asyncio.run(framed_exchange(kit_registry_settings, customer, instance))
        published = [
            m
            for m in read_raw(kafka_bootstrap, "customer_stats.CustomerStats", 1)
            if m.key() == customer.encode()
        ]
        assert len(published) == 1, "".join(out.lines)
        value = published[0].value() or b""
        assert value[:1] == b"\x00"  # the registry format, with the id the worker registered
        fmt = RegistryFormat(kit_registry_settings)
        reader = Codec(resolver=fmt.lookup, registry=True)
        assert reader.decode(value, CustomerStats).total_cents == 700
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, "".join(out.lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def framed_exchange(settings: Settings, customer: str, instance: str) -> None:
    async with Registry(settings) as registry, Client(settings) as client:
        await until(lambda: _live(registry, instance), 30, f"{instance} in the registry")
        zero = await client.request(get, GetStats(customer=customer), timeout=30)
        assert zero == CustomerStats(customer=customer, orders=0, total_cents=0)
        at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        order = OrderConfirmed(
            order_id=customer, customer=customer, total_cents=700, confirmed_at=at
        )
        await client.publish(order, key=order.order_id)

        async def counted() -> CustomerStats | None:
            stats = await client.request(get, GetStats(customer=customer), timeout=10)
            return stats if stats.orders == 1 else None

        assert (await until(counted, 30, "the order counted")).total_cents == 700


def test_a_worker_whose_schema_registry_cannot_be_reached_stops_at_its_start(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {"PYTHONPATH": str(ROOT), "KIT_GROUP_ID": unique_name("customer-stats"),
           "KIT_SCHEMA_REGISTRY_URL": url}  # fmt: skip
    proc = spawn_python(WORKER, env=env, cwd=tmp_path)
    out = OutputLines(proc, echo=sys.stderr.write)
    try:
        assert proc.wait(timeout=60) != 0
        out.wait_for(f"kit bridge: customer_stats cannot start: KIT_SCHEMA_REGISTRY_URL: "
                     f"schema registry {url} unreachable", timeout=5)  # fmt: skip
        assert not any("customer_stats ready" in line for line in out.lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
