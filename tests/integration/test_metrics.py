"""The metrics and health endpoint on a real broker: handled, failed and dead-lettered
counts, consumer lag down to 0, request metrics, and health through start, ready, stuck
handler and stop."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kit import Client, Context, Runtime, Service, Settings
from kit.metrics_http import Metrics
from kit.testing.wait import wait_until_async
from tests.fixtures.events import CheckStock, OrderPlaced, StockLevel
from tests.integration.helpers import order, produce_raw, running
from tests.unit.test_metrics import get

pytestmark = pytest.mark.integration

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


def metrics_settings(settings: Settings, **update: object) -> Settings:
    """`settings` with metrics on a free port of 127.0.0.1 and statistics every 200 ms."""
    values: dict[str, object] = {
        "metrics_port": 0,
        "metrics_host": "127.0.0.1",
        "kafka_config": json.dumps({"statistics.interval.ms": 200}),
    }
    return settings.model_copy(update={**values, **update})


def port_of(runtime: Runtime) -> int:
    port = next(e for e in runtime.extensions if isinstance(e, Metrics)).port
    assert port, "the metrics server runs"
    return port


async def scrape(port: int) -> Samples:
    status, body = await asyncio.to_thread(get, port, "/metrics")
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return samples


async def health(port: int, kind: str) -> tuple[int, dict[str, Any]]:  # Any: JSON
    status, body = await asyncio.to_thread(get, port, f"/health/{kind}")
    return status, json.loads(body) if body else {}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get(name, {}).get(frozenset(labels.items()))


def test_handled_failed_dead_lettered_counts_and_lag_to_zero(
    kit_settings: Settings, unique_name: Callable[[str], str], kafka_bootstrap: str
) -> None:
    orders, bad = unique_name("orders"), unique_name("bad")
    settings = metrics_settings(kit_settings)
    svc = Service("metrics-test", group_id=unique_name("g"))

    @svc.handler(topic=orders, partitions=3)
    async def on_order(event: OrderPlaced) -> None:
        pass

    @svc.handler(topic=bad, retries=1)
    async def on_bad(event: OrderPlaced) -> None:
        raise ValueError("always")

    n = 30

    async def scenario() -> None:
        async with running(svc, settings) as runtime:
            port = port_of(runtime)
            rows = [
                {"key": f"o-{i}".encode(), "value": runtime.codec.encode(order(i))}
                for i in range(n)
            ]
            await asyncio.to_thread(produce_raw, kafka_bootstrap, orders, rows)
            await asyncio.to_thread(produce_raw, kafka_bootstrap, bad, rows[:2])
            handled = {"service": "metrics-test", "handler": "on_order", "outcome": "handled"}
            partitions = {str(p) for t, p in runtime.assignment if t == orders}
            assert len(partitions) == 3

            async def settled() -> Samples | None:
                got = await scrape(port)
                lags = {
                    dict(k)["partition"]: v
                    for k, v in got.get("kit_consumer_lag", {}).items()
                    if dict(k)["topic"] == orders
                }
                done = value(got, "kit_handler_records_total", **handled) == n
                dead = {"service": "metrics-test", "handler": "on_bad"}
                dead_lettered = value(
                    got, "kit_handler_records_total", **dead, outcome="dead_lettered"
                )
                zero = set(lags) == partitions and not any(lags.values())
                return got if done and dead_lettered == 2 and zero else None

            got = await wait_until_async(settled, timeout=30, interval=0.2, what="counts, lag 0")
            bad_handler = {"service": "metrics-test", "handler": "on_bad"}
            assert value(got, "kit_handler_records_total", **bad_handler, outcome="failed") == 4
            assert value(got, "kit_handler_records_total", **bad_handler, outcome="retried") == 2
            duration = {"service": "metrics-test", "handler": "on_order"}
            assert value(got, "kit_handler_duration_seconds_count", **duration) == n
            assert value(got, "kit_producer_queue_messages", service="metrics-test") is not None
            assert value(got, "kit_producer_delivery_errors_total", service="metrics-test") == 0
            up = {"service": "metrics-test", "instance_id": runtime.instance_id}
            assert value(got, "kit_up", **up) == 1 and value(got, "kit_ready", **up) == 1

    asyncio.run(scenario())


def test_request_metrics_after_a_call(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    stock, orders = unique_name("stock"), unique_name("orders")
    settings = metrics_settings(kit_settings)
    responder = Service(stock)

    @responder.responder()
    async def check(request: CheckStock) -> StockLevel:
        return StockLevel(sku=request.sku, available=10, enough=True, request_id="", served_by="")

    caller = Service("caller-test", group_id=unique_name("g"))
    answered = asyncio.Event()

    @caller.handler(topic=orders)
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        await ctx.request(f"{stock}.check", CheckStock(sku="tea", quantity=1), reply=StockLevel)
        answered.set()

    async def scenario() -> None:
        async with running(responder, kit_settings), running(caller, settings) as runtime:
            port = port_of(runtime)
            async with Client(kit_settings) as client:
                await client.publish(order(1), key="o-1", topic=orders)
            await asyncio.wait_for(answered.wait(), 30)
            target = {"service": "caller-test", "target": f"{stock}.check"}

            async def counted() -> Samples | None:
                got = await scrape(port)
                return got if value(got, "kit_requests_total", **target, outcome="sent") else None

            got = await wait_until_async(counted, timeout=10, what="the request counted")
            assert value(got, "kit_requests_total", **target, outcome="sent") == 1
            assert value(got, "kit_requests_total", **target, outcome="timeout") == 0
            assert value(got, "kit_requests_total", **target, outcome="error") == 0
            assert value(got, "kit_requests_in_flight", **target) == 0
            assert value(got, "kit_request_duration_seconds_count", **target) == 1

    asyncio.run(scenario())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_health_through_start_ready_stuck_and_stop(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    orders, port = unique_name("orders"), free_port()
    settings = metrics_settings(kit_settings, metrics_port=port, health_stuck_after=2.0)
    svc = Service("health-test", group_id=unique_name("g"))
    entered, release = asyncio.Event(), asyncio.Event()

    @svc.handler(topic=orders)
    async def on_order(event: OrderPlaced) -> None:
        entered.set()
        await release.wait()

    async def scenario() -> None:
        assert await health(port, "ready") == (0, {}), "nothing served before start"
        runtime = Runtime(svc, settings)
        await runtime.start()
        status, body = await health(port, "ready")
        assert status == 503 and f"health-test/{runtime.instance_id}: assigned" in body["failing"]
        task = asyncio.create_task(runtime.run())
        try:
            await asyncio.wait_for(runtime.ready.wait(), 30)
            if runtime.announcer is not None:
                assert await runtime.announcer.confirmed(30)

            async def is_(kind: str, code: int) -> dict[str, Any] | None:
                status, body = await health(port, kind)
                return body if status == code else None

            await wait_until_async(lambda: is_("ready", 200), timeout=10, what="ready")
            await wait_until_async(lambda: is_("live", 200), timeout=10, what="live")
            async with Client(kit_settings) as client:
                await client.publish(order(1), key="o-1", topic=orders)
            await asyncio.wait_for(entered.wait(), 30)
            body = await wait_until_async(lambda: is_("live", 503), timeout=10, what="stuck")
            assert f"health-test/{runtime.instance_id}: no_stuck_handler" in body["failing"]
            runtime.stop()  # draining: the handler still runs
            body = await wait_until_async(lambda: is_("ready", 503), timeout=10, what="stopping")
            assert f"health-test/{runtime.instance_id}: not_stopping" in body["failing"]
            release.set()
            await asyncio.wait_for(task, 60)
        finally:
            release.set()
            runtime.stop()
            await asyncio.wait_for(task, 60)
        assert await health(port, "live") == (0, {}), "the server stops with the runtime"

    asyncio.run(scenario())
