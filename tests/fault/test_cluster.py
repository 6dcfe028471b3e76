"""A broker of a three-node cluster SIGKILLed mid-stream (issue 9): nothing lost, and
discovery and request-reply go on after one outage, the cluster's own failover.

The killed node is the group coordinator of the responder being called."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from kit import Client, load_settings
from kit.broker import local
from kit.errors import RequestError
from kit.registry import Registry
from kit.testing.wait import wait_until, wait_until_async
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

CALL_DEADLINE_S = 2.0

AFTER_FENCE_S = CALL_DEADLINE_S + 3.0
"""Calls may fail until this long after the cluster fenced the dead node. Until that fence
(`broker.session.timeout.ms`, 9 s, from the kill or, when the node was also the active KRaft
controller, from the next controller's election) every acks=all write waits for it:
requests, replies and registry heartbeats. Then the leaders and the group coordinator move;
a call sent just before fails at its deadline; the rest is margin for a loaded machine. The
old defaults (session 10 s, TTL 6 s) failed calls for 19-21 s after the kill, some 10 s
after the fence: a second outage of kit's making."""


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


def _coordinator(bootstrap: str, group: str) -> int:
    """The node id of `group`'s coordinator."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    [future] = admin.describe_consumer_groups([group], request_timeout=10).values()
    return int(future.result(timeout=15).coordinator.id)


def _wait_fenced(bootstrap: str, node: int, timeout: float) -> float:
    """When (time.monotonic()) the cluster's metadata stopped listing `node` (fenced)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})

    def fenced() -> bool:
        try:
            return node not in admin.list_topics(timeout=5).brokers
        except KafkaException:  # asked the dead node: ask again
            return False

    wait_until(fenced, timeout=timeout, interval=0.1, what=f"node {node} fenced")
    return time.monotonic()


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
    marks: dict[str, float] = {}

    async def call_loop(client: Client) -> None:
        while not stop_calls.is_set():
            try:
                await client.request(
                    f"{stock}.check",
                    CheckStock(sku="tea", quantity=1),
                    reply=StockLevel,
                    timeout=CALL_DEADLINE_S,
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
                # the worst case for the responder: kill the node coordinating its group
                victim = await asyncio.to_thread(_coordinator, bootstrap, stock)
                with _cluster_env(cluster.data_dir):
                    killed_at = marks["killed"] = time.monotonic()
                    await asyncio.to_thread(local.kill_node, victim)
                    fenced = asyncio.create_task(
                        asyncio.to_thread(_wait_fenced, bootstrap, victim, 60)
                    )
                    await asyncio.to_thread(
                        watcher.wait_for, watcher.count + 5_000, 90, lambda: instance.alive
                    )

                    def answered_again() -> bool:  # the last 3 calls, all sent after the kill
                        sent_after = killed_at + CALL_DEADLINE_S + 0.5  # none took longer
                        last = calls[-3:]
                        return len(last) == 3 and all(r == "ok" and t > sent_after for t, r in last)

                    # calls fail over on their own clock (the broker session timeout, 9 s),
                    # not the stream's: wait for them to be answered again, with a deadline
                    await wait_until_async(
                        answered_again, timeout=60, what="calls answered after the kill"
                    )
                    async with Registry(settings) as registry:
                        assert registry.lookup(stock), "the responder is not in the registry"
                    marks["fenced"] = await fenced
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
    killed, fenced = marks["killed"], marks["fenced"]
    outage = [(t, r) for t, r in calls if t > killed and r != "ok"]  # the restart's too
    failures = [(round(t - killed, 1), r) for t, r in outage]
    figures["failed_calls"] = failures
    figures["fenced_after_kill_s"] = round(fenced - killed, 1)
    last_failure = max((t - fenced for t, _ in outage), default=0.0)
    figures["last_failure_after_fence_s"] = round(last_failure, 1)
    print(report.summary(), figures)
    record_result("cluster broker killed", {**report_figures(report), **figures})
    assert report.lost == 0, report.summary()
    assert report.order_violations == 0, report.summary()
    assert report.committed_at_end, report.summary()
    assert figures["exit_code"] == 0
    # the responder ran throughout: the registry must not drop it while the cluster fails over
    assert not [f for f in failures if f[1] == "ServiceUnavailable"], failures
    # one outage, Kafka's own, and no second one of kit's making (a consumer session or a
    # registry TTL that runs out before the cluster has failed over)
    assert last_failure <= AFTER_FENCE_S, (figures["fenced_after_kill_s"], failures)
    late = [r for t, r in calls[-10:]]
    assert late == ["ok"] * len(late), f"calls after the restart failed: {late}"
