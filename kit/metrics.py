"""Prometheus metrics of the runtimes of a process, read from their counters at scrape time.

The hot path never calls prometheus-client: the dispatcher and requester count into each
runtime's `kit.telemetry.Stats`, and `KitCollector` (registered in its own
`CollectorRegistry`, not the global one) turns them into metric families when /metrics is
scraped (kit.metrics_http serves it on KIT_METRICS_PORT). Runtimes of one service in one
process add up into the same series.

==================================  =========  =========================
Name                                Type       Labels
==================================  =========  =========================
kit_up                              gauge      service, instance_id
kit_ready                           gauge      service, instance_id
kit_handler_records_total           counter    service, handler, outcome
kit_handler_duration_seconds        histogram  service, handler
kit_consumer_lag                    gauge      service, topic, partition
kit_requests_total                  counter    service, target, outcome
kit_requests_in_flight              gauge      service, target
kit_request_duration_seconds        histogram  service, target
kit_producer_queue_messages         gauge      service
kit_producer_delivery_errors_total  counter    service
==================================  =========  =========================

- kit_up: 1 per runtime the process runs. kit_ready: 1 when it is ready (assigned,
  announced, not stopping: kit.health), else 0.
- kit_handler_records_total: records per handler (or responder) and `outcome`: handled
  (the handler returned), failed (an attempt raised; each retry that raised counts),
  retried (attempts made again), dead_lettered (sent to the dead-letter topic,
  undecodable records included).
- kit_handler_duration_seconds: seconds per successful handler call.
- kit_consumer_lag: records behind, end offset minus committed offset (the log's start
  offset where the group never committed), per assigned partition; from librdkafka's
  statistics (every 5 s, KIT_KAFKA_STATISTICS_INTERVAL_MS).
- kit_requests_total: requests to `target` (service.method) per `outcome`: sent (all),
  timeout (no reply in time), error (the reply carried the responder's error).
- kit_requests_in_flight: requests sent and not answered yet.
- kit_request_duration_seconds: seconds from a request's send to its reply.
- kit_producer_queue_messages: records in the producer's queue, not yet confirmed.
- kit_producer_delivery_errors_total: records the producer could not deliver.

`instance_id` (not `instance`, which Prometheus sets to the scraped address) is kit's
instance id, as the registry shows it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from kit.health import Watched, ready
from kit.telemetry import Latency

if TYPE_CHECKING:
    from kit.runtime import Runtime

__all__ = ["ConsumerLag", "KitCollector", "parse_lag"]

log = logging.getLogger("kit.metrics")

Partition = tuple[str, int]
Buckets = list[tuple[str, float]]


def parse_lag(statistics: str) -> dict[Partition, int]:
    """Consumer lag per partition from librdkafka's statistics JSON: `consumer_lag`, else
    `hi_offset - committed_offset` (`lo_offset` for a group that never committed there: a
    new group's backlog shows); partitions this consumer does not want (`desired`
    false), the internal partition -1 and unknown lags are left out."""
    try:
        topics = json.loads(statistics).get("topics") or {}
    except (ValueError, AttributeError):
        return {}
    lags: dict[Partition, int] = {}
    for topic, info in topics.items():
        for key, part in (info.get("partitions") or {}).items():
            partition = int(key)
            if partition < 0 or not part.get("desired", True):
                continue
            lag = part.get("consumer_lag", -1)
            if not isinstance(lag, int) or lag < 0:
                high, committed = part.get("hi_offset", -1), part.get("committed_offset", -1)
                if isinstance(committed, int) and committed < 0:  # the group never committed:
                    committed = part.get("lo_offset", -1)  # behind by the whole log
                if (
                    not (isinstance(high, int) and isinstance(committed, int))
                    or min(high, committed) < 0
                ):
                    continue
                lag = max(0, high - committed)
            lags[(topic, partition)] = lag
    return lags


class ConsumerLag:
    """The latest lag per partition of one consumer, from its statistics callback (on the
    consumer thread); the scrape thread reads `lags` (replaced whole, never changed)."""

    def __init__(self) -> None:
        self.lags: dict[Partition, int] = {}

    def update(self, statistics: str) -> None:
        """The `stats_cb` of the consumer: keep the partitions it reports now."""
        try:
            self.lags = parse_lag(statistics)
        except Exception:  # a statistics callback must not raise into librdkafka
            log.debug("unreadable consumer statistics", exc_info=True)


class KitCollector:
    """Metric families of the runtimes `runtimes()` returns, made at each scrape."""

    def __init__(self, runtimes: Callable[[], Sequence[tuple[Watched, ConsumerLag]]]) -> None:
        self.runtimes = runtimes

    def collect(self) -> Iterable[Metric]:
        """Every kit metric, read now from the runtimes' counters."""
        entries = list(self.runtimes())
        yield from _instances(entries)
        yield from _handlers([w for w, _ in entries])
        yield _lag(entries)
        yield from _requests([w for w, _ in entries])
        yield from _producer([w.runtime for w, _ in entries])


def _instances(entries: Sequence[tuple[Watched, ConsumerLag]]) -> Iterator[Metric]:
    up = GaugeMetricFamily("kit_up", "1 per kit runtime running", labels=["service", "instance_id"])
    ok = GaugeMetricFamily(
        "kit_ready",
        "1 when the runtime is assigned, announced and not stopping",
        labels=["service", "instance_id"],
    )
    for watched, _ in entries:
        labels = [watched.runtime.service.name, watched.runtime.instance_id]
        up.add_metric(labels, 1)
        ok.add_metric(labels, 1 if all(ready(watched).values()) else 0)
    yield up
    yield ok


def _handlers(watched: Sequence[Watched]) -> Iterator[Metric]:
    counts: dict[tuple[str, str, str], float] = {}
    latency: dict[tuple[str, str], tuple[Buckets, float]] = {}
    for item in watched:
        service = item.runtime.service.name
        for name, h in list(item.stats.handlers.items()):
            for outcome, n in (
                ("handled", h.handled),
                ("failed", h.failed),
                ("retried", h.retried),
                ("dead_lettered", h.dead_lettered),
            ):
                key = (service, name, outcome)
                counts[key] = counts.get(key, 0) + n
            _add_latency(latency, (service, name), h.latency)
    yield _family(
        CounterMetricFamily,
        "kit_handler_records",
        "Records per handler and outcome (handled, failed, retried, dead_lettered)",
        ["service", "handler", "outcome"],
        counts.items(),
    )
    yield _histogram(
        "kit_handler_duration_seconds",
        "Seconds per successful handler call",
        ["service", "handler"],
        latency,
    )


def _lag(entries: Sequence[tuple[Watched, ConsumerLag]]) -> Metric:
    lags: dict[tuple[str, str, str], int] = {}
    for watched, lag in entries:
        owned = _assignment(watched.runtime)
        service = watched.runtime.service.name
        for (topic, partition), value in lag.lags.items():
            if owned is not None and (topic, partition) not in owned:
                continue  # revoked since the last statistics
            key = (service, topic, str(partition))
            lags[key] = max(value, lags.get(key, 0))
    return _family(
        GaugeMetricFamily,
        "kit_consumer_lag",
        "Records behind: end offset minus committed offset, per assigned partition",
        ["service", "topic", "partition"],
        lags.items(),
    )


def _assignment(runtime: Runtime) -> set[Partition] | None:
    """A copy of the runtime's assignment (the loop may change it meanwhile)."""
    for _ in range(3):
        try:
            return set(runtime.assignment)
        except RuntimeError:  # changed during the copy: copy again
            continue
    return None


def _requests(watched: Sequence[Watched]) -> Iterator[Metric]:
    counts: dict[tuple[str, str, str], float] = {}
    flying: dict[tuple[str, str], float] = {}
    latency: dict[tuple[str, str], tuple[Buckets, float]] = {}
    for item in watched:
        service = item.runtime.service.name
        for (target_service, method), c in list(item.stats.calls.items()):
            target = f"{target_service}.{method}"
            for outcome, n in (("sent", c.sent), ("timeout", c.timeouts), ("error", c.errors)):
                counts[(service, target, outcome)] = counts.get((service, target, outcome), 0) + n
            flying[(service, target)] = flying.get((service, target), 0) + c.in_flight
            _add_latency(latency, (service, target), c.latency)
    yield _family(
        CounterMetricFamily,
        "kit_requests",
        "Requests per target (service.method) and outcome (sent, timeout, error)",
        ["service", "target", "outcome"],
        counts.items(),
    )
    yield _family(
        GaugeMetricFamily,
        "kit_requests_in_flight",
        "Requests sent, not answered yet",
        ["service", "target"],
        flying.items(),
    )
    yield _histogram(
        "kit_request_duration_seconds",
        "Seconds from a request's send to its reply (answered calls)",
        ["service", "target"],
        latency,
    )


def _producer(runtimes: Sequence[Runtime]) -> Iterator[Metric]:
    queued: dict[tuple[str, ...], float] = {}
    errors: dict[tuple[str, ...], float] = {}
    for runtime in runtimes:
        name = (runtime.service.name,)
        stats = Watched(runtime).stats
        errors[name] = errors.get(name, 0) + stats.delivery_errors
        depth = _queue_depth(runtime)
        if depth is not None:
            queued[name] = queued.get(name, 0) + depth
    yield _family(
        GaugeMetricFamily,
        "kit_producer_queue_messages",
        "Records in the producer's queue, not yet confirmed by the broker",
        ["service"],
        queued.items(),
    )
    yield _family(
        CounterMetricFamily,
        "kit_producer_delivery_errors",
        "Records the producer could not deliver",
        ["service"],
        errors.items(),
    )


def _queue_depth(runtime: Runtime) -> int | None:
    """len() of the runtime's Kafka producer (thread-safe), None without one."""
    try:
        producer: Any = runtime.producer  # Any: confluent-kafka's Producer (no stubs)
    except Exception:  # not the Kafka transport, or not started yet
        return None
    return len(producer)


def _add_latency(
    into: dict[tuple[str, str], tuple[Buckets, float]], key: tuple[str, str], latency: Latency
) -> None:
    """Add `latency`'s cumulative buckets and sum to those under `key`."""
    total = latency.sum
    buckets: Buckets = [(bound, float(n)) for bound, n in latency.cumulative()]
    have = into.get(key)
    if have is not None:
        buckets = [(b, n + m) for (b, n), (_, m) in zip(buckets, have[0], strict=True)]
        total += have[1]
    into[key] = (buckets, total)


def _histogram(
    name: str,
    documentation: str,
    labels: list[str],
    values: dict[tuple[str, str], tuple[Buckets, float]],
) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for key, (buckets, total) in sorted(values.items()):
        family.add_metric(list(key), buckets, total)
    return family


def _family(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    labels: list[str],
    values: Iterable[tuple[tuple[str, ...], float]],
) -> Metric:
    """A counter or gauge family with one sample per (label values, value), sorted."""
    family = kind(name, documentation, labels=labels)
    for key, value in sorted(values):
        family.add_metric(list(key), value)
    return family
