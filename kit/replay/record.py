"""Record topics from a live cluster into a recording file: `record()`, and time parsing."""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import TopicMetadata

from kit.config import Settings, load_settings, resolve_bootstrap
from kit.errors import BrokerError
from kit.replay.file import Record, RecordingWriter
from kit.replay.schemas import SchemaFinder
from kit.replay.terminal import Progress, stop_on_sigint
from kit.schema import SchemaRepository, default_repository
from kit.transport.kafka import admin_client, check_reachable, make_consumer
from kit.transport.registry_format import RegistryFormat
from kit.transport.schema_topic import SchemaTopic

__all__ = ["RecordResult", "parse_time", "record", "settings_for"]

log = logging.getLogger("kit.replay")

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO-8601 time (naive means local time), or a duration meaning "now minus" it.

    Durations are numbers with units ms, s, m, h, d, w, and may be combined: `30s`,
    `10m`, `2h`, `1h30m`. Raises ValueError with a message for anything else.
    """
    text = text.strip()
    now = now or datetime.now(UTC)
    if text and _DURATION.fullmatch(text.replace(" ", "")) is None and text[0].isdigit():
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.astimezone()
    compact = text.replace(" ", "")
    parts = _DURATION.findall(compact)
    if parts and "".join(n + u for n, u in parts) == compact:
        return now - timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))
    raise ValueError(
        f"{text!r} is neither an ISO-8601 time (2026-01-31T12:00:00Z) "
        "nor a duration (30s, 10m, 2h, 1d, 1h30m)"
    )


def settings_for(settings: Settings | None, bootstrap: str | None) -> Settings:
    """`settings` (default: from the environment) with `bootstrap` as the bootstrap servers."""
    settings = settings or load_settings(bootstrap_servers=bootstrap)
    if bootstrap and settings.bootstrap_servers != bootstrap:
        settings = settings.model_copy(update={"bootstrap_servers": bootstrap})
    return settings


@dataclass(frozen=True)
class RecordResult:
    """What `record` wrote, and why it stopped: end, to, max, interrupt or idle."""

    path: str
    records: int
    raw_bytes: int
    file_bytes: int
    seconds: float
    stopped_by: str
    schemas: int
    unknown_fingerprints: tuple[str, ...] = ()
    unknown_schema_ids: tuple[int, ...] = ()
    """Registry ids with no schema kit can record (unknown to the registry, or not a
    self-contained Avro schema): their values are kept as bytes."""

    @property
    def rate(self) -> float:
        """Records per second."""
        return self.records / self.seconds if self.seconds > 0 else 0.0


def record(
    topics: Sequence[str],
    path: Path | str,
    *,
    settings: Settings | None = None,
    bootstrap: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    max_records: int | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    codec: str = "deflate",
    idle_timeout: float = 30.0,
    registry: str | None = None,
) -> RecordResult:
    """Record `topics` (every partition) into the recording file `path`.

    Reads from `start` (a time; default the beginning) and stops at `end`, after
    `max_records`, at the end of each partition (its high watermark when recording
    started), when `stop` is set, or on Ctrl-C. An `end` in the future records live
    traffic until then. The file is complete and valid whichever way it stops.

    Registry-framed values get their schemas from `registry` (default
    KIT_SCHEMA_REGISTRY_URL): the file holds each schema and the id it had there. Such a
    value with no registry configured is a ConfigError.
    """
    settings = settings_for(settings, bootstrap)
    if registry:
        settings = settings.model_copy(update={"schema_registry_url": registry})
    source, _origin = resolve_bootstrap(settings)
    admin = admin_client(settings)
    check_reachable(admin, settings)
    listed = admin.list_topics(timeout=15).topics
    partitions = _partition_counts(listed, topics, source)
    schema_topic = SchemaTopic(settings, admin) if settings.schema_topic in listed else None
    repository = SchemaRepository(settings.schemas_dir) if settings.schemas_dir else None
    formats = RegistryFormat(settings) if settings.schema_registry_url else None
    if formats is not None:
        formats.check()
    stop = stop or threading.Event()
    consumer = make_consumer(
        settings,
        f"kit-record-{uuid.uuid4().hex[:12]}",
        **{"enable.auto.commit": False, "enable.partition.eof": True},
    )
    try:
        live = end is not None and end > datetime.now(UTC)
        pending = _assign(consumer, partitions, start, live, max_records, progress)
        with (
            RecordingWriter(path, topics=partitions, source=source, codec=codec) as writer,
            stop_on_sigint(stop),
        ):
            run = _Run(consumer, writer, pending, live, end, max_records, stop, progress)
            repo = repository or default_repository()
            run.schemas = SchemaFinder(writer, repo, schema_topic, formats)
            run.loop(idle_timeout)
            unknown = run.schemas.finish()
    finally:
        consumer.close()
        if schema_topic is not None:
            schema_topic.close()
        if formats is not None:
            formats.close()
    return run.result(path, unknown)


def _partition_counts(
    listed: dict[str, TopicMetadata], topics: Sequence[str], source: str
) -> dict[str, int]:
    """The partition count of each topic to record, from the cluster's topic listing."""
    partitions: dict[str, int] = {}
    for topic in dict.fromkeys(topics):
        meta = listed.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise BrokerError(f"topic {topic!r} does not exist at {source}")
        partitions[topic] = len(meta.partitions)
    return partitions


def _assign(
    consumer: Consumer,
    partitions: dict[str, int],
    start: datetime | None,
    live: bool,
    max_records: int | None,
    progress: Progress | None,
) -> dict[tuple[str, int], int]:
    """Assign the partitions there is something to record from, each at its start offset.

    Returns them with the offset each is read up to (its high watermark now), and sets
    the progress total where it is known (not for live recording).
    """
    ends, starts = _plan(consumer, partitions, start)
    pending = {tp: ends[tp] for tp, first in starts.items() if live or first < ends[tp]}
    total = None if live else sum(ends[tp] - starts[tp] for tp in pending)
    if progress is not None and max_records is not None and total is not None:
        total = min(total, max_records)
    if progress is not None:
        progress.total = total
    if pending:
        consumer.assign([TopicPartition(t, p, starts[(t, p)]) for t, p in pending])
    return pending


def _plan(
    consumer: Consumer, partitions: dict[str, int], start: datetime | None
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """High watermarks now, and the start offset of each partition."""
    ends: dict[tuple[str, int], int] = {}
    starts: dict[tuple[str, int], int] = {}
    for topic, count in partitions.items():
        for p in range(count):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            ends[(topic, p)] = high
            starts[(topic, p)] = low
    if start is not None:
        ms = int(start.timestamp() * 1000)
        asked = [TopicPartition(t, p, ms) for t, p in ends]
        for tp in consumer.offsets_for_times(asked, timeout=15):
            key = (tp.topic, tp.partition)
            starts[key] = ends[key] if tp.offset < 0 else tp.offset
    return ends, starts


class _Run:
    """The consume loop of one recording."""

    schemas: SchemaFinder

    def __init__(
        self,
        consumer: Consumer,
        writer: RecordingWriter,
        pending: dict[tuple[str, int], int],
        live: bool,
        end: datetime | None,
        max_records: int | None,
        stop: threading.Event,
        progress: Progress | None,
    ) -> None:
        self.consumer = consumer
        self.writer = writer
        self.pending = pending
        self.live = live
        self.end = end
        self.end_ms = int(end.timestamp() * 1000) if end is not None else None
        self.max_records = max_records
        self.stop = stop
        self.progress = progress
        self.count = 0
        self.raw_bytes = 0
        self.past_end = False
        self.stopped_by = "end"
        self.started = time.monotonic()

    def loop(self, idle_timeout: float) -> None:
        idle_deadline = time.monotonic() + idle_timeout
        while True:
            if self.stop.is_set():
                self.stopped_by = "interrupt"
                return
            if self.max_records is not None and self.count >= self.max_records:
                self.stopped_by = "max"
                return
            if not self.pending:
                self.stopped_by = "to" if self.past_end else "end"
                return
            if self.live and self.end is not None and datetime.now(UTC) >= self.end:
                self.stopped_by = "to"
                return
            batch = self.consumer.consume(500, 0.2)
            if batch:
                idle_deadline = time.monotonic() + idle_timeout
            elif not self.live and time.monotonic() > idle_deadline:
                log.warning("no records for %.0fs; stopping at %d", idle_timeout, self.count)
                self.stopped_by = "idle"
                return
            for msg in batch:
                self._take(msg)
                if self.max_records is not None and self.count >= self.max_records:
                    break
            self.writer.flush_if_due()
            if self.progress is not None:
                self.progress.update(self.count)

    def result(self, path: Path | str, unknown: list[bytes]) -> RecordResult:
        """What the recording wrote and why it stopped; prints the final progress line."""
        seconds = time.monotonic() - self.started
        if self.progress is not None:
            self.progress.done(self.count, f"  stopped by {self.stopped_by}")
        return RecordResult(
            str(path),
            self.count,
            self.raw_bytes,
            Path(path).stat().st_size,
            seconds,
            self.stopped_by,
            len(self.schemas.found),
            tuple(fp.hex() for fp in unknown),
            tuple(sorted(self.schemas.missing_ids)),
        )

    def _finish(self, tp: tuple[str, int]) -> None:
        if self.pending.pop(tp, None) is not None:
            self.consumer.pause([TopicPartition(*tp)])

    # Any: a consumed Message, whose topic, partition and offset the stubs call Optional
    def _take(self, msg: Any) -> None:
        tp = (msg.topic(), msg.partition())
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                if not self.live:
                    self._finish(tp)
                return
            if err.fatal() or err.code() in (
                KafkaError.UNKNOWN_TOPIC_OR_PART,
                KafkaError.TOPIC_AUTHORIZATION_FAILED,
            ):
                raise BrokerError(f"recording {tp[0]}[{tp[1]}] failed: {err.str()}")
            log.warning("consumer error on %s[%s]: %s", tp[0], tp[1], err.str())
            return
        high = self.pending.get(tp)
        if high is None:
            return
        offset = msg.offset()
        if not self.live and offset >= high:
            self._finish(tp)
            return
        ts_type, ts = msg.timestamp()
        if self.end_ms is not None and ts_type and ts > self.end_ms:
            self.past_end = True
            self._finish(tp)
            return
        value = msg.value()
        if value is not None:
            self.schemas.see(value, f"{tp[0]}[{tp[1]}]@{offset}")
        headers = tuple(msg.headers() or ())
        rec = Record(tp[0], tp[1], offset, ts, ts_type, msg.key(), headers, value)
        self.writer.write(rec)
        self.count += 1
        self.raw_bytes += rec.raw_size()
        if not self.live and offset + 1 >= high:
            self._finish(tp)
