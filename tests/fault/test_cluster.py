"""A broker of a three-node cluster SIGKILLed mid-stream (issue 9): nothing lost, and
discovery and request-reply go on."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

import pytest

from kit import Client, load_settings
from kit.broker import local
from kit.errors import RequestError
from kit.registry import Registry
from kit.testing.wait import wait_until_async
from tests.fault.counting import (
    OutputWatcher,
    Pipeline,
    Stream,
    encode_ticks,
    ticks,
    wait_settled,
)
from tests.fault.instances import Fleet
from tests.fault.verdict import record_result, report_figures, verify
from tests.fixtures.events import CheckStock, StockLevel
from tests.integration.helpers import running
from tests.integration.test_broker_cluster import _cluster_env, _free_run
from tests.integration.test_rpc import inventory

pytestmark = [pytest.mark.integration, pytest.mark.fault]

EVENTS = 30_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local.BrokerInfo]:
    """A three-node cluster of this module only (own data dir, free ports)."""
    data_dir = tmp_path_factory.mktemp("fault-cluster")
    with _cluster_env(data_dir):
        info = local.start(_free_run(6), brokers=3, timeout=180)
    try:
        yield info
    finally:
        with _cluster_env(data_dir):
            local.stop()


@pytest.mark.timeout(600)
def test_a_broker_killed_mid_stream_loses_nothing_and_calls_go_on(
    cluster: local.BrokerInfo,
    pipeline: Callable[..., Pipeline],
    fleet: Fleet,
    unique_name: Callable[[str], str],
) -> None:
    bootstrap = cluster.bootstrap_servers
    p = pipeline(bootstrap, partitions=6)
    items = ticks(EVENTS)
    stream = Stream(bootstrap, p.input, encode_ticks(items), rate=2_000)
    watcher = OutputWatcher(bootstrap, p.output)
    settings = load_settings(bootstrap_servers=bootstrap)
    stock = unique_name("inv")
    calls: list[tuple[float, str]] = []  # (time, "ok" or the error type)
    stop_calls = threading.Event()
    figures: dict[str, object] = {}

    async def call_loop(client: Client) -> None:
        while not stop_calls.is_set():
            try:
                await client.request(
                    f"{stock}.check",
                    CheckStock(sku="tea", quantity=1),
                    reply=StockLevel,
                    timeout=2.0,
                )
                calls.append((time.monotonic(), "ok"))
            except RequestError as exc:
                calls.append((time.monotonic(), type(exc).__name__))
            await asyncio.sleep(0.1)

    async def scenario() -> None:
        instance = fleet.start()
        async with running(inventory(stock), settings), Client(settings) as client:
            caller = asyncio.create_task(call_loop(client), name="test-calls")
            try:
                await asyncio.to_thread(instance.wait_assigned, p.input, 90)
                stream.start()
                await asyncio.to_thread(watcher.wait_for, 5_000, 60, lambda: instance.alive)
                with _cluster_env(cluster.data_dir):
                    victim = 1
                    killed_at = time.monotonic()
                    await asyncio.to_thread(local.kill_node, victim)
                    await asyncio.to_thread(
                        watcher.wait_for, watcher.count + 5_000, 90, lambda: instance.alive
                    )

                    def answered_after_kill() -> list[float]:
                        return [t for t, r in calls if r == "ok" and t > killed_at]

                    # calls fail over on their own clock (the broker session timeout, 9 s),
                    # not the stream's: wait for the first answer, with a deadline
                    await wait_until_async(
                        answered_after_kill, timeout=60, what="a call answered after the kill"
                    )
                    ok_after = answered_after_kill()
                    figures["first_call_ok_after_kill_s"] = round(ok_after[0] - killed_at, 2)
                    figures["failed_calls_after_kill"] = sum(
                        1 for t, r in calls if r != "ok" and t > killed_at
                    )
                    async with Registry(settings) as registry:
                        assert registry.lookup(stock), "the responder is not in the registry"
                    await asyncio.to_thread(partial(local.restart_node, victim, timeout=180))
                    figures["restarted_after_s"] = round(time.monotonic() - killed_at, 1)
                await asyncio.to_thread(stream.wait, 180)
                settled = await asyncio.to_thread(
                    wait_settled, bootstrap, p.group, p.input, 180, lambda: not instance.alive
                )
                figures["settled"] = settled
                assert instance.alive, f"the service exited:\n{instance.tail()}"
                exit_ = await asyncio.to_thread(fleet.stop, instance, signal.SIGTERM, 60)
                figures["exit_code"] = exit_.code
            finally:
                stop_calls.set()
                await caller

    try:
        asyncio.run(scenario())
    finally:
        watcher.close()
        stream.close()
    report = verify(
        bootstrap,
        scenario="broker killed",
        input_topic=p.input,
        output_topic=p.output,
        group=p.group,
        expected=items,
    )
    print(report.summary(), figures)
    record_result("cluster broker killed", {**report_figures(report), **figures})
    assert report.lost == 0, report.summary()
    assert report.order_violations == 0, report.summary()
    assert report.committed_at_end, report.summary()
    assert figures["exit_code"] == 0
    late = [r for t, r in calls[-10:]]
    assert late == ["ok"] * len(late), f"calls after the restart failed: {late}"
