"""Reading dead-letter topics (and redrive targets) to their end, each read with a deadline.

One `Session` per command: an admin client (after a reachability check that fails fast
naming the setting to fix), the topic listing, and one consumer that joins no group and
commits nothing: partitions are assigned for each read and unassigned after it.
"""

from __future__ import annotations

import heapq
import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from types import TracebackType

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from kit.codec import Codec
from kit.config import Settings
from kit.dlt.letters import REDRIVEN_FROM, DeadLetter, Where, parse_marker
from kit.dlt.report import TopicCounts
from kit.errors import BrokerError
from kit.schema import Schema, SchemaRepository, repository_for
from kit.transport.kafka import admin_client, check_reachable, make_consumer
from kit.transport.registry_format import RegistryFormat
from kit.transport.schema_topic import SchemaTopic

__all__ = ["Session"]

log = logging.getLogger("kit.dlt")

_FATAL_READ = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED)


class Session:
    """The broker side of one `kit dlt` command. `timeout`: the deadline in seconds of each
    read of a topic to its end, and of each metadata or offset query."""

    def __init__(self, settings: Settings, timeout: float = 60.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self.admin = admin_client(settings)
        check_reachable(self.admin, settings, settings.connect_timeout)
        self.partitions: dict[str, int] = {}
        """The partition count of every topic of the cluster, as listed at the start."""
        try:
            listed = self.admin.list_topics(timeout=timeout).topics
        except KafkaException as exc:
            raise BrokerError(f"cannot list the topics: {exc}") from None
        for name, meta in listed.items():
            if meta.error is None and meta.partitions:
                self.partitions[name] = len(meta.partitions)
        self.consumer = make_consumer(
            settings,
            f"kit-dlt-{uuid.uuid4().hex[:12]}",  # assign() only: the group is never joined
            **{"enable.auto.commit": False, "enable.partition.eof": True},
        )
        self._schema_topic: SchemaTopic | None = None
        self._registry: RegistryFormat | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the consumer and the schema topic's reader."""
        self.consumer.close()
        if self._schema_topic is not None:
            self._schema_topic.close()

    # --- topics --------------------------------------------------------------------------

    def dead_letter_topics(self) -> list[str]:
        """Every topic whose name ends in KIT_DEAD_LETTER_SUFFIX, sorted."""
        suffix = self.settings.dead_letter_suffix
        return sorted(t for t in self.partitions if t.endswith(suffix) and t != suffix)

    def require(self, topic: str) -> int:
        """The partition count of `topic`; BrokerError if the cluster has no such topic."""
        count = self.partitions.get(topic)
        if count is None:
            raise BrokerError(f"topic {topic!r} does not exist")
        return count

    def codec(self, repository: SchemaRepository | None = None) -> Codec:
        """A codec that finds writer schemas by fingerprint: in `repository` (default: the
        project's, as kit.schema.repository_for finds it), then on the schema topic; and
        those of registry-framed values by id, with KIT_SCHEMA_REGISTRY_URL set."""
        repo = repository if repository is not None else repository_for(settings=self.settings)
        if self._schema_topic is None and self.settings.schema_topic in self.partitions:
            self._schema_topic = SchemaTopic(self.settings, self.admin, timeout=self.timeout)
        if self._registry is None and self.settings.schema_registry_url:
            self._registry = RegistryFormat(self.settings)
        topic, registry = self._schema_topic, self._registry

        def resolve(key: bytes) -> Schema | None:
            if len(key) == 8:
                return topic.lookup(key) if topic is not None else None
            return registry.lookup(key) if registry is not None else None

        return Codec(repo, resolver=resolve, registry=registry is not None)

    # --- reading -------------------------------------------------------------------------

    def counts(self, topic: str) -> TopicCounts:
        """The dead letters of `topic`, counted by reason."""
        counts = TopicCounts(topic, self.require(topic))
        for msg in self.read(topic):
            counts.add(DeadLetter.of(msg))
        return counts

    def letters(self, topic: str, where: Where | None = None) -> list[DeadLetter]:
        """Every dead letter of `topic` (that `where` matches), partition by partition in
        offset order."""
        self.require(topic)
        found = (DeadLetter.of(msg) for msg in self.read(topic))
        return [x for x in found if where is None or where.matches(x)]

    def newest(self, topic: str, limit: int, where: Where) -> tuple[list[DeadLetter], int]:
        """The `limit` newest dead letters of `topic` that `where` matches, oldest first,
        and how many it matches in all. Holds at most `limit` values in memory."""
        self.require(topic)
        matched = 0

        def matching() -> Iterator[tuple[int, int, int, DeadLetter]]:
            nonlocal matched
            for msg in self.read(topic):
                letter = DeadLetter.of(msg)
                if where.matches(letter):
                    matched += 1
                    yield letter.timestamp_ms, letter.partition, letter.offset, letter

        kept = heapq.nlargest(limit, matching(), key=lambda row: row[:3])
        return [row[3] for row in reversed(kept)], matched

    def markers(self, topic: str, dlt: str, since_ms: int) -> set[str]:
        """The kit-redriven-from markers naming a letter of `dlt` on the records of `topic`
        written since `since_ms` (epoch ms)."""
        prefix = f"{dlt}/"
        found: set[str] = set()
        for msg in self.read(topic, self._offsets_at(topic, since_ms)):
            for key, value in DeadLetter.of(msg).headers:
                if key == REDRIVEN_FROM and value is not None:
                    text = value.decode(errors="replace")
                    if text.startswith(prefix) and parse_marker(text) is not None:
                        found.add(text)
        return found

    def read(self, topic: str, starts: Mapping[int, int] | None = None) -> Iterator[Message]:
        """Every record of `topic` from `starts` (partition: first offset; default every
        partition from its beginning) up to each partition's end offset as it is now.

        BrokerError if the end is not reached within the session's timeout.
        """
        deadline = time.monotonic() + self.timeout
        ends = self._ranges(topic, starts, deadline)
        if not ends:
            return
        self.consumer.assign([TopicPartition(topic, p, first) for p, (first, _) in ends.items()])
        try:
            while ends:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BrokerError(
                        f"{topic} not read to its end within {self.timeout:g}s "
                        f"({len(ends)} partition(s) left)"
                    )
                msg = self.consumer.poll(min(remaining, 0.2))
                if msg is None:
                    self._drop_finished(topic, ends)
                    continue
                if self._take(topic, msg, ends):
                    yield msg
        finally:
            self.consumer.unassign()

    def _ranges(
        self, topic: str, starts: Mapping[int, int] | None, deadline: float
    ) -> dict[int, tuple[int, int]]:
        """Partition: (first offset, end offset) for each partition with records to read."""
        parts = starts if starts is not None else dict.fromkeys(range(self.require(topic)), 0)
        ranges: dict[int, tuple[int, int]] = {}
        for p, start in parts.items():
            wait = max(0.1, deadline - time.monotonic())
            try:
                marks = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=wait, cached=False
                )
            except KafkaException as exc:
                raise BrokerError(f"cannot read the end offsets of {topic}: {exc}") from None
            if marks is None:
                raise BrokerError(f"no end offsets for {topic}[{p}] within {self.timeout:g}s")
            low, high = marks
            first = max(start, low)
            if first < high:
                ranges[p] = (first, high)
        return ranges

    def _take(self, topic: str, msg: Message, ends: dict[int, tuple[int, int]]) -> bool:
        """Account for one polled message; True if it is a record of `topic` to hand out."""
        err = msg.error()
        part = msg.partition()
        if msg.topic() not in (topic, None):  # left over from an earlier read
            return False
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                ends.pop(part if part is not None else -1, None)
            elif err.code() in _FATAL_READ or err.fatal():
                raise BrokerError(f"cannot read {topic}: {err.str()}")
            else:
                log.warning("reading %s: %s", topic, err.str())
            return False
        if part is None or part not in ends:
            return False
        offset = msg.offset() or 0
        if offset + 1 >= ends[part][1]:
            del ends[part]
        return True

    def _drop_finished(self, topic: str, ends: dict[int, tuple[int, int]]) -> None:
        """Drop the partitions whose position is at their end (past transaction markers,
        which are never handed out as records)."""
        positions = self.consumer.position([TopicPartition(topic, p) for p in ends])
        for tp in positions:
            if tp.offset >= 0 and tp.offset >= ends.get(tp.partition, (0, 0))[1]:
                ends.pop(tp.partition, None)

    def _offsets_at(self, topic: str, since_ms: int) -> dict[int, int]:
        """Partition: the first offset of a record written at or after `since_ms` (the
        end offset where there is none; -1 from Kafka)."""
        count = self.require(topic)
        asked = [TopicPartition(topic, p, max(0, since_ms)) for p in range(count)]
        try:
            found = self.consumer.offsets_for_times(asked, timeout=self.timeout)
        except KafkaException as exc:
            raise BrokerError(f"cannot find offsets by time in {topic}: {exc}") from None
        starts: dict[int, int] = {}
        for tp in found:
            if tp.offset >= 0:
                starts[tp.partition] = tp.offset
        return starts
