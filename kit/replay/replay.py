"""Republish a recording into a cluster, keeping keys, headers, values and per-partition order."""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaError, Producer

from kit.config import Settings, resolve_bootstrap
from kit.errors import ConfigError, DeliveryError
from kit.replay.file import Record, RecordingError, RecordingReader
from kit.replay.record import settings_for
from kit.replay.terminal import Progress, stop_on_sigint
from kit.transport.admin import TopicSpec, ensure_topics
from kit.transport.kafka import admin_client, check_reachable
from kit.transport.kafka import make_producer as _make_producer
from kit.transport.sink import KafkaSink

__all__ = ["ReplayResult", "merge_by_time", "replay"]


@dataclass(frozen=True)
class ReplayResult:
    """What `replay` published, where, and whether it was interrupted."""

    path: str
    published: int
    seconds: float
    topics: dict[str, str]
    created: tuple[str, ...] = ()
    by_key: tuple[str, ...] = ()
    interrupted: bool = False

    @property
    def rate(self) -> float:
        """Records published per second."""
        return self.published / self.seconds if self.seconds > 0 else 0.0


def merge_by_time(
    items: Iterator[tuple[int, Record]], window: int = 100_000
) -> Iterator[tuple[int, Record]]:
    """Reorder records by timestamp across partitions, never within one, looking `window` ahead.

    A recording holds each partition in order, but partitions come in fetch-sized runs.
    Timed replay wants them interleaved by time: this merges the partitions' heads. If
    the file turns out corrupt, every record before the bad one is still yielded, then
    the RecordingError is raised.
    """
    queues: dict[tuple[str, int], deque[tuple[int, Record]]] = {}
    heads: list[tuple[int, int, tuple[str, int]]] = []
    seq = buffered = 0

    def pop() -> tuple[int, Record]:
        nonlocal seq, buffered
        _ts, _seq, key = heapq.heappop(heads)
        queue = queues[key]
        item = queue.popleft()
        buffered -= 1
        if queue:
            heapq.heappush(heads, (queue[0][1].timestamp, seq, key))
            seq += 1
        return item

    error: RecordingError | None = None
    try:
        for item in items:
            key = (item[1].topic, item[1].partition)
            queue = queues.setdefault(key, deque())
            if not queue:
                heapq.heappush(heads, (item[1].timestamp, seq, key))
                seq += 1
            queue.append(item)
            buffered += 1
            if buffered > window:
                yield pop()
    except RecordingError as exc:
        error = exc
    while heads:
        yield pop()
    if error is not None:
        raise error


class _Publisher:
    """The producer side of a replay: target topics, partition choice, delivery accounting."""

    def __init__(
        self,
        settings: Settings,
        topics: Mapping[str, int],
        topic_map: Mapping[str, str],
        keep_timestamps: bool,
    ) -> None:
        self.settings = settings
        self.keep_timestamps = keep_timestamps
        admin = admin_client(settings)
        check_reachable(admin, settings)
        self.targets = {t: topic_map.get(t, t) for t in topics}
        specs = [
            TopicSpec(t, topics[s], settings.topic_replication) for s, t in self.targets.items()
        ]
        self.created = tuple(ensure_topics(admin, specs))  # only the missing ones
        listed = admin.list_topics(timeout=15).topics
        self.same_partition: dict[str, bool] = {}
        for source, target in self.targets.items():
            meta = listed.get(target)
            have = len(meta.partitions) if meta is not None else topics[source]
            self.same_partition[source] = have >= topics[source]
        self.producer: Producer = _make_producer(settings)
        self.sink = KafkaSink(self.producer, admin, settings)
        self.sink.known_topics.update(self.targets.values())
        self.delivered = 0
        self.errors: list[KafkaError] = []

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.errors.append(err)

    def send(self, rec: Record) -> None:
        """Queue one record; when librdkafka's queue is full, serve callbacks and retry."""
        keep_time = self.keep_timestamps and rec.timestamp_type and rec.timestamp >= 0
        self.sink.produce(
            self.targets[rec.topic],
            rec.value,
            rec.key,
            list(rec.headers) or None,  # type: ignore[arg-type]  # a null header value is fine
            self._on_delivery,
            partition=rec.partition if self.same_partition[rec.topic] else None,
            timestamp=rec.timestamp if keep_time else 0,
        )
        self.producer.poll(0)
        self.check()

    def check(self) -> None:
        """Raise DeliveryError if any record failed."""
        if self.errors:
            self.finish()
            raise DeliveryError(
                f"{len(self.errors)} record(s) failed ({self.delivered} published): "
                f"{self.errors[0].str()}"
            )

    def finish(self) -> int:
        """Wait for every queued record (bounded by KIT_DELIVERY_TIMEOUT); undelivered count."""
        return int(self.producer.flush(self.settings.delivery_timeout))

    def confirm(self, sent: int) -> None:
        """Wait for every queued record; raise DeliveryError if any failed or stays unconfirmed."""
        undelivered = self.finish()
        self.check()
        if undelivered:
            raise DeliveryError(
                f"{undelivered} of {sent} record(s) unconfirmed after "
                f"{self.settings.delivery_timeout}s ({self.delivered} published)"
            )

    def result(self, path: Path | str, seconds: float, *, interrupted: bool) -> ReplayResult:
        """What this replay published and where."""
        return ReplayResult(
            str(path),
            self.delivered,
            seconds,
            dict(self.targets),
            self.created,
            tuple(self.targets[t] for t, same in self.same_partition.items() if not same),
            interrupted,
        )


def replay(
    path: Path | str,
    *,
    settings: Settings | None = None,
    into: str | None = None,
    topic_map: Mapping[str, str] | None = None,
    speed: float | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    keep_timestamps: bool = False,
    verify: bool = False,
    window: int = 100_000,
) -> ReplayResult:
    """Republish the recording at `path` into the cluster at `into` (default: settings).

    Keys, headers and value bytes are kept; `topic_map` renames topics. Missing target
    topics are created with the source's partition count; records go to their original
    partition number when the target has at least as many partitions, else by key.
    `speed=None` publishes as fast as possible; `speed=X` keeps the original gaps between
    timestamps divided by X. A corrupt file raises RecordingError whose `published` counts
    the records confirmed before it; Ctrl-C (or `stop`) ends early and is reported.
    """
    if speed is not None and speed <= 0:
        raise ConfigError("--speed", f"must be positive or 'max', got {speed}")
    settings = settings_for(settings, into)
    resolve_bootstrap(settings)
    topic_map = dict(topic_map or {})
    stop = stop or threading.Event()
    started = time.monotonic()
    with RecordingReader(path, verify_values=verify) as reader:
        _check_topic_map(topic_map, reader.info.topics)
        publisher = _Publisher(settings, reader.info.topics, topic_map, keep_timestamps)
        items: Iterator[tuple[int, Record]] = iter(reader)
        if speed is not None:
            items = merge_by_time(items, window)
        sent = 0
        try:
            with stop_on_sigint(stop):
                sent = _publish(items, publisher, speed, stop, progress)
        except RecordingError as exc:
            publisher.finish()
            exc.published = publisher.delivered
            if progress is not None:
                progress.done(publisher.delivered, "  stopped by a corrupt record")
            raise
        except BaseException:
            publisher.finish()
            raise
    publisher.confirm(sent)
    seconds = time.monotonic() - started
    if progress is not None:
        progress.done(publisher.delivered, "  interrupted" if stop.is_set() else "")
    return publisher.result(path, seconds, interrupted=stop.is_set())


def _check_topic_map(topic_map: Mapping[str, str], recorded: Mapping[str, int]) -> None:
    """Raise ConfigError if `topic_map` renames a topic the recording does not hold."""
    unknown = sorted(set(topic_map) - set(recorded))
    if unknown:
        raise ConfigError(
            "--topic-map",
            f"{', '.join(unknown)} not in the recording (it holds "
            f"{', '.join(sorted(recorded)) or 'no topics'})",
        )


def _publish(
    items: Iterator[tuple[int, Record]],
    publisher: _Publisher,
    speed: float | None,
    stop: threading.Event,
    progress: Progress | None,
) -> int:
    """Send every record, pacing by timestamp when `speed` is set; returns how many were sent."""
    sent = 0
    base_ts: int | None = None
    base_clock = 0.0
    for _index, rec in items:
        if speed is not None and rec.timestamp >= 0:
            if base_ts is None:
                base_ts, base_clock = rec.timestamp, time.monotonic()
            due = base_clock + (rec.timestamp - base_ts) / 1000.0 / speed
            while (delay := due - time.monotonic()) > 0 and not stop.is_set():
                publisher.producer.poll(min(delay, 0.1))
                publisher.check()
        if stop.is_set():
            break
        publisher.send(rec)
        sent += 1
        if progress is not None:
            progress.update(publisher.delivered)
    return sent
