"""Republish a recording into a cluster, keeping keys, headers, values and per-partition order."""

from __future__ import annotations

import dataclasses
import heapq
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaError, Message, Producer

from kit.config import Settings, resolve_bootstrap
from kit.errors import ConfigError, DeliveryError
from kit.replay.file import Record, RecordingError, RecordingReader
from kit.replay.record import settings_for
from kit.replay.schemas import Reframer, target_registry
from kit.replay.terminal import Progress, stop_on_sigint
from kit.transport.admin import TopicSpec, ensure_topics
from kit.transport.kafka import admin_client, check_reachable
from kit.transport.kafka import make_producer as _make_producer
from kit.transport.sink import KafkaSink

__all__ = [
    "OriginalTopicsRefused",
    "ReplayResult",
    "choose_targets",
    "merge_by_time",
    "replay",
]


class OriginalTopicsRefused(ConfigError):
    """A replay would publish records back into the topics they were recorded from.

    The services consuming those topics would handle the records a second time, so this
    needs `into_original_topics=True` (``--into-original-topics``). `unmapped` names them.
    """

    def __init__(self, unmapped: Iterable[str], mapped: Iterable[str]) -> None:
        self.unmapped = tuple(sorted(unmapped))
        mapped = sorted(mapped)
        names = ", ".join(self.unmapped)
        keep = f"--only {' '.join(mapped)}" if mapped else "--only TOPIC..."
        super().__init__(
            "--into-original-topics",
            f"not given, so {names} cannot be replayed: they would go back into the "
            "topics they were recorded from, where running services would handle them "
            f"again. Map them (--topic-map {self.unmapped[0]}=NEW ...), replay a subset "
            f"({keep}), or add --into-original-topics to do it anyway",
        )


@dataclass(frozen=True)
class ReplayResult:
    """What `replay` published, where, and whether it was interrupted.

    `topics` maps each replayed source topic to its target, `counts` each target topic to
    the records published there; `skipped` counts the records of topics left out (`only`).
    """

    path: str
    published: int
    seconds: float
    topics: dict[str, str]
    created: tuple[str, ...] = ()
    by_key: tuple[str, ...] = ()
    interrupted: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    reframed: int = 0
    """Registry-framed values published with the target registry's ids."""
    schema_ids: dict[int, int] = field(default_factory=dict)
    """Each recorded registry id replayed, to its id in the target registry."""

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
        targets: Mapping[str, str],
        keep_timestamps: bool,
        reframer: Reframer | None = None,
    ) -> None:
        self.settings = settings
        self.keep_timestamps = keep_timestamps
        self.reframer = reframer
        admin = admin_client(settings)
        check_reachable(admin, settings)
        self.targets = dict(targets)
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
        self.counts: Counter[str] = Counter()
        self.errors: list[KafkaError] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            self.counts[msg.topic() or ""] += 1
        else:
            self.errors.append(err)

    def send(self, rec: Record) -> None:
        """Queue one record; when librdkafka's queue is full, serve callbacks and retry."""
        keep_time = self.keep_timestamps and rec.timestamp_type and rec.timestamp >= 0
        target = self.targets[rec.topic]
        value = rec.value if self.reframer is None else self.reframer.value(target, rec.value)
        self.sink.produce(
            target,
            value,
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
        reframer = self.reframer
        return ReplayResult(
            str(path),
            self.delivered,
            seconds,
            dict(self.targets),
            self.created,
            tuple(self.targets[t] for t, same in self.same_partition.items() if not same),
            interrupted,
            dict(self.counts),
            reframed=reframer.reframed if reframer is not None else 0,
            schema_ids=reframer.ids if reframer is not None else {},
        )


def replay(
    path: Path | str,
    *,
    settings: Settings | None = None,
    into: str | None = None,
    topic_map: Mapping[str, str] | None = None,
    only: Iterable[str] | None = None,
    into_original_topics: bool = False,
    speed: float | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    keep_timestamps: bool = False,
    verify: bool = False,
    window: int = 100_000,
    registry: str | None = None,
) -> ReplayResult:
    """Republish the recording at `path` into the cluster at `into` (default: settings).

    Keys, headers and value bytes are kept; `topic_map` renames topics and `only` picks
    the recorded topics to replay (default: all). A topic left unmapped would go back into
    the topic it was recorded from, so that needs `into_original_topics=True`; without it
    OriginalTopicsRefused (a ConfigError) is raised before connecting. Missing target
    topics are created with the source's partition count; records go to their original
    partition number when the target has at least as many partitions, else by key.
    `speed=None` publishes as fast as possible; `speed=X` keeps the original gaps between
    timestamps divided by X. A corrupt file raises RecordingError whose `published` counts
    the records confirmed before it; Ctrl-C (or `stop`) ends early and is reported.

    A recording of registry-framed values (format 2) needs the target cluster's schema
    registry (`registry`, else KIT_SCHEMA_REGISTRY_URL; ConfigError naming it otherwise):
    each recorded schema is registered there under the target topic's subject, and the
    values are published with the target's ids (Reframer).
    """
    if speed is not None and speed <= 0:
        raise ConfigError("--speed", f"must be positive or 'max', got {speed}")
    settings = settings_for(settings, into)
    stop = stop or threading.Event()
    started = time.monotonic()
    with RecordingReader(path, verify_values=verify) as reader:
        recorded = reader.info.topics
        targets = choose_targets(recorded, topic_map or {}, only, into_original_topics)
        partitions = {t: recorded[t] for t in targets}
        reframer = _reframer(reader, settings, registry)
        resolve_bootstrap(settings)
        publisher = _Publisher(settings, partitions, targets, keep_timestamps, reframer)
        tally: Counter[str] = Counter()
        items = _selected(iter(reader), targets, tally)
        if speed is not None:
            items = merge_by_time(items, window)
        with stop_on_sigint(stop):
            sent = _publish(items, publisher, speed, stop, progress)
    publisher.confirm(sent)
    seconds = time.monotonic() - started
    if progress is not None:
        progress.done(publisher.delivered, "  interrupted" if stop.is_set() else "")
    result = publisher.result(path, seconds, interrupted=stop.is_set())
    return dataclasses.replace(result, skipped=tally["skipped"])


def _reframer(reader: RecordingReader, settings: Settings, registry: str | None) -> Reframer | None:
    """For a recording of registry-framed values (format 2), what gives them the target
    registry's ids; ConfigError if no target registry is set or it cannot be reached."""
    if reader.info.format_version == "1":
        return None
    formats = target_registry(settings, registry, reader.path)
    formats.check()
    return Reframer(reader.schemas, formats)


def choose_targets(
    recorded: Mapping[str, int],
    topic_map: Mapping[str, str],
    only: Iterable[str] | None = None,
    into_original_topics: bool = False,
) -> dict[str, str]:
    """Each recorded topic to replay (all, or `only` those), mapped to its target topic.

    Raises ConfigError for a topic in `only` or `topic_map` that the recording does not
    hold, or one that `only` leaves out, and OriginalTopicsRefused when a topic would go
    back into the topic it was recorded from (no `topic_map` entry, or one to the same
    name) without `into_original_topics`.
    """
    chosen = list(dict.fromkeys(only)) if only is not None else sorted(recorded)
    holds = f"(it holds {', '.join(sorted(recorded)) or 'no topics'})"
    unknown = [t for t in chosen if t not in recorded]
    if unknown:
        raise ConfigError("--only", f"{', '.join(unknown)} not in the recording {holds}")
    unknown = sorted(set(topic_map) - set(recorded))
    if unknown:
        raise ConfigError("--topic-map", f"{', '.join(unknown)} not in the recording {holds}")
    left_out = sorted(set(topic_map) - set(chosen))
    if left_out:
        raise ConfigError(
            "--topic-map",
            f"{', '.join(left_out)} is left out by --only {' '.join(chosen)}: add it there, "
            "or drop its mapping",
        )
    if not chosen:
        raise ConfigError("--only", "names no topic")
    targets = {t: topic_map.get(t, t) for t in chosen}
    unmapped = [t for t, target in targets.items() if t == target]
    if unmapped and not into_original_topics:
        raise OriginalTopicsRefused(unmapped, [t for t in chosen if t not in unmapped])
    return targets


def _selected(
    items: Iterator[tuple[int, Record]], targets: Mapping[str, str], tally: Counter[str]
) -> Iterator[tuple[int, Record]]:
    """The records of the topics in `targets`; counts the others in tally["skipped"]."""
    for item in items:
        if item[1].topic in targets:
            yield item
        else:
            tally["skipped"] += 1


def _publish(
    items: Iterator[tuple[int, Record]],
    publisher: _Publisher,
    speed: float | None,
    stop: threading.Event,
    progress: Progress | None,
) -> int:
    """Send every record, pacing by timestamp when `speed` is set; returns how many were sent.

    Whatever stops it, waits for what was sent first; a corrupt file's RecordingError
    then says how many records were published before it.
    """
    try:
        return _send_all(items, publisher, speed, stop, progress)
    except RecordingError as exc:
        publisher.finish()
        exc.published = publisher.delivered
        if progress is not None:
            progress.done(publisher.delivered, "  stopped by a corrupt record")
        raise
    except BaseException:
        publisher.finish()
        raise


def _send_all(
    items: Iterator[tuple[int, Record]],
    publisher: _Publisher,
    speed: float | None,
    stop: threading.Event,
    progress: Progress | None,
) -> int:
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
