"""kit.metrics, kit.health and kit.metrics_http without a broker: the collector's output
from counters filled by hand, lag from librdkafka statistics, health check transitions,
and the HTTP server on a free port."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kit.app import default_extensions
from kit.config import load_settings
from kit.errors import ConfigError
from kit.health import LoopWatch, Watched, live, ready, report
from kit.metrics import ConsumerLag, KitCollector, parse_lag
from kit.metrics_http import Metrics, MetricsServer, _Entry, _servers
from kit.telemetry import Stats
from kit.transport.kafka import consumer_config


class FakeProducer:
    def __init__(self, queued: int) -> None:
        self.queued = queued

    def __len__(self) -> int:
        return self.queued


def fake_runtime(
    name: str = "orders", instance: str = "orders-1", *, handlers: bool = True, queued: int = 0
) -> Any:  # Any: a stand-in for Runtime
    return SimpleNamespace(
        service=SimpleNamespace(name=name, handlers=[object()] if handlers else []),
        instance_id=instance,
        stats=Stats(),
        assignment=set(),
        ready=asyncio.Event(),
        stopping=False,
        announcer=None,
        commits=SimpleNamespace(failed=None),
        producer=FakeProducer(queued),
    )


def filled_stats(stats: Stats) -> None:
    h = stats.handler("on_order")
    h.handled, h.failed, h.retried, h.dead_lettered = 7, 3, 2, 1
    for seconds in (0.0004, 0.003, 0.003, 0.2, 30.0):
        h.latency.observe(seconds)
    c = stats.call("inventory", "reserve")
    c.sent, c.timeouts, c.errors, c.in_flight = 5, 1, 2, 1
    c.latency.observe(0.02)
    stats.delivery_errors = 4


def scrape(entries: list[tuple[Watched, ConsumerLag]]) -> dict[str, Any]:
    """{sample name: {frozenset(labels): value}} of the collector's exposition."""
    registry = CollectorRegistry()
    registry.register(KitCollector(lambda: entries))
    text = generate_latest(registry).decode()
    samples: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return {"samples": samples, "types": types}


def labels(**kv: str) -> frozenset[tuple[str, str]]:
    return frozenset(kv.items())


def test_collector_reads_the_counters_with_prometheus_names_and_labels() -> None:
    rt = fake_runtime(queued=9)
    filled_stats(rt.stats)
    rt.ready.set()
    rt.assignment = {("orders", 0), ("orders", 1)}
    lag = ConsumerLag()
    lag.lags = {("orders", 0): 0, ("orders", 1): 12, ("orders", 2): 99}  # 2: revoked since
    got = scrape([(Watched(rt), lag)])
    samples, types = got["samples"], got["types"]
    assert types["kit_handler_records"] == "counter"
    assert types["kit_handler_duration_seconds"] == "histogram"
    assert types["kit_consumer_lag"] == "gauge"
    records = samples["kit_handler_records_total"]
    for outcome, n in (("handled", 7), ("failed", 3), ("retried", 2), ("dead_lettered", 1)):
        assert records[labels(service="orders", handler="on_order", outcome=outcome)] == n
    buckets = samples["kit_handler_duration_seconds_bucket"]
    key = {"service": "orders", "handler": "on_order"}
    assert buckets[labels(**key, le="0.0005")] == 1
    assert buckets[labels(**key, le="0.005")] == 3
    assert buckets[labels(**key, le="10.0")] == 4
    assert buckets[labels(**key, le="+Inf")] == 5
    assert samples["kit_handler_duration_seconds_count"][labels(**key)] == 5
    assert samples["kit_handler_duration_seconds_sum"][labels(**key)] == pytest.approx(30.2064)
    assert samples["kit_consumer_lag"] == {
        labels(service="orders", topic="orders", partition="0"): 0,
        labels(service="orders", topic="orders", partition="1"): 12,
    }
    target = {"service": "orders", "target": "inventory.reserve"}
    requests = samples["kit_requests_total"]
    assert requests[labels(**target, outcome="sent")] == 5
    assert requests[labels(**target, outcome="timeout")] == 1
    assert requests[labels(**target, outcome="error")] == 2
    assert samples["kit_requests_in_flight"][labels(**target)] == 1
    assert samples["kit_request_duration_seconds_count"][labels(**target)] == 1
    assert samples["kit_producer_queue_messages"][labels(service="orders")] == 9
    assert samples["kit_producer_delivery_errors_total"][labels(service="orders")] == 4
    assert samples["kit_up"][labels(service="orders", instance_id="orders-1")] == 1
    assert samples["kit_ready"][labels(service="orders", instance_id="orders-1")] == 1


def test_runtimes_of_one_service_add_up_into_one_series() -> None:
    a, b = fake_runtime(instance="orders-a"), fake_runtime(instance="orders-b")
    filled_stats(a.stats)
    filled_stats(b.stats)
    got = scrape([(Watched(a), ConsumerLag()), (Watched(b), ConsumerLag())])["samples"]
    handled = labels(service="orders", handler="on_order", outcome="handled")
    assert got["kit_handler_records_total"][handled] == 14
    inf = labels(service="orders", handler="on_order", le="+Inf")
    assert got["kit_handler_duration_seconds_bucket"][inf] == 10
    assert len(got["kit_up"]) == 2
    assert got["kit_ready"][labels(service="orders", instance_id="orders-a")] == 0


def test_a_runtime_without_kafka_producer_has_no_queue_depth() -> None:
    rt = fake_runtime()
    del rt.producer
    got = scrape([(Watched(rt), ConsumerLag())])["samples"]
    assert "kit_producer_queue_messages" not in got


def statistics(partitions: dict[str, dict[str, Any]]) -> str:
    return json.dumps({"name": "c", "topics": {"orders": {"partitions": partitions}}})


def test_lag_from_librdkafka_statistics() -> None:
    text = statistics(
        {
            "-1": {"consumer_lag": 5, "desired": False},  # the internal UA partition
            "0": {"consumer_lag": 3, "desired": True, "hi_offset": 10, "committed_offset": 7},
            "1": {"consumer_lag": -1, "desired": True, "hi_offset": 10, "committed_offset": 4},
            "2": {"consumer_lag": -1, "desired": True, "hi_offset": 10, "committed_offset": -1001},
            "3": {"consumer_lag": 8, "desired": False},  # not (or no more) assigned
            "4": {  # a new group: never committed, the whole log (2..10) to go
                "consumer_lag": -1,
                "desired": True,
                "hi_offset": 10,
                "lo_offset": 2,
                "committed_offset": -1001,
            },
        }
    )
    expected = {("orders", 0): 3, ("orders", 1): 6, ("orders", 4): 8}
    assert parse_lag(text) == expected
    assert parse_lag("not json") == {}
    lag = ConsumerLag()
    lag.update(text)
    assert lag.lags == expected
    lag.update(statistics({}))
    assert lag.lags == {}


def test_liveness_fails_on_a_stale_loop_a_stuck_handler_or_a_fatal_error() -> None:
    rt = fake_runtime()
    watched = Watched(rt, LoopWatch())
    now = watched.watch.stamp
    assert live(watched, 10, now) == dict.fromkeys(
        ["loop_turning", "no_stuck_handler", "no_fatal_error"], True
    )
    assert live(watched, 10, now + 11)["loop_turning"] is False
    rt.stats.handler("on_order").started[0] = now
    assert live(watched, 10, now + 5)["no_stuck_handler"] is True
    watched.watch.stamp = now + 20
    assert live(watched, 10, now + 20)["no_stuck_handler"] is False
    rt.stats.handler("on_order").started.clear()
    assert all(live(watched, 10, now + 20).values())
    rt.commits.failed = RuntimeError("delivery failed")
    assert live(watched, 10, now + 20)["no_fatal_error"] is False
    rt.commits.failed = None
    rt.error = RuntimeError("run() raised")
    status, body = report("live", [watched], 10, now + 20)
    assert status == 503
    assert json.loads(body)["failing"] == ["orders/orders-1: no_fatal_error"]


def test_readiness_needs_assignment_announcement_and_not_stopping() -> None:
    rt = fake_runtime()
    watched = Watched(rt)
    assert ready(watched) == {"assigned": False, "announced": True, "not_stopping": True}
    rt.ready.set()
    assert all(ready(watched).values())
    rt.announcer = SimpleNamespace(delivered=False)
    status, body = report("ready", [watched], 10)
    assert status == 503 and json.loads(body)["failing"] == ["orders/orders-1: announced"]
    rt.announcer.delivered = True
    status, body = report("ready", [watched], 10)
    assert status == 200 and json.loads(body)["status"] == "pass"
    rt.stopping = True
    assert report("ready", [watched], 10)[0] == 503
    assert report("ready", [], 10)[0] == 503  # no runtime: nothing is ready


def test_a_service_without_handlers_needs_no_assignment() -> None:
    assert ready(Watched(fake_runtime(handlers=False)))["assigned"] is True


def get(port: int, path: str) -> tuple[int, bytes]:
    """(status, body) of GET path; status 0 when nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError:
        return 0, b""


def test_the_server_routes_metrics_and_health() -> None:
    server = MetricsServer("127.0.0.1", 0, 300.0)
    try:
        rt = fake_runtime()
        filled_stats(rt.stats)
        server.entries.append(_Entry(Watched(rt), ConsumerLag()))
        status, body = get(server.port, "/metrics")
        assert status == 200 and b'kit_handler_records_total{handler="on_order"' in body
        assert get(server.port, "/health/live")[0] == 200
        status, body = get(server.port, "/health/ready")
        assert status == 503 and json.loads(body)["failing"] == ["orders/orders-1: assigned"]
        rt.ready.set()
        assert get(server.port, "/health/ready")[0] == 200
        assert get(server.port, "/nothing")[0] == 404
    finally:
        server.close()
    assert not server.thread.is_alive()


def test_a_port_in_use_is_a_config_error_naming_kit_metrics_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError) as err:
            MetricsServer("127.0.0.1", taken.getsockname()[1], 300.0)
    assert "KIT_METRICS_PORT" in str(err.value)


def test_one_server_for_the_runtimes_of_a_process() -> None:
    settings = load_settings({"KIT_METRICS_PORT": "0", "KIT_METRICS_HOST": "127.0.0.1"})

    async def scenario() -> None:
        a, b = fake_runtime(instance="orders-a"), fake_runtime("billing", "billing-b")
        a.settings = b.settings = settings
        ma, mb = Metrics(settings), Metrics(settings)
        await ma.setup(a)
        await mb.setup(b)
        assert ma.server is mb.server and ma.port == mb.port
        port, server = ma.port, ma.server
        assert port
        status, body = await asyncio.to_thread(get, port, "/health/live")
        instances = {i["instance_id"] for i in json.loads(body)["instances"]}
        assert status == 200 and instances == {"orders-a", "billing-b"}
        await ma.stop(a)
        assert server is not None and server.thread.is_alive()  # billing still runs
        await mb.stop(b)
        assert not server.thread.is_alive() and not _servers.by_address

    asyncio.run(scenario())


def test_settings_name_their_variable_on_bad_values() -> None:
    for env in ({"KIT_METRICS_PORT": "http"}, {"KIT_METRICS_PORT": "70000"}):
        with pytest.raises(ConfigError, match="KIT_METRICS_PORT"):
            load_settings(env)
    with pytest.raises(ConfigError, match="KIT_HEALTH_STUCK_AFTER"):
        load_settings({"KIT_HEALTH_STUCK_AFTER": "0"})
    settings = load_settings({})
    assert settings.metrics_port is None and settings.metrics_host == "0.0.0.0"


def test_metrics_are_an_extension_and_statistics_only_when_the_port_is_set() -> None:
    off = load_settings({"KIT_BOOTSTRAP_SERVERS": "x:1"})
    on = load_settings({"KIT_BOOTSTRAP_SERVERS": "x:1", "KIT_METRICS_PORT": "9464"})
    assert not any(isinstance(e, Metrics) for e in default_extensions(off))
    assert isinstance(default_extensions(on)[0], Metrics)  # first: stopped last
    assert "statistics.interval.ms" not in consumer_config(off, "g")
    assert consumer_config(on, "g")["statistics.interval.ms"] == 5000
