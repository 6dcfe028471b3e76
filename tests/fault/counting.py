"""Counting harness of the fault suite: keyed Ticks in, Tocks out (see verdict.py for counts).

- `Pipeline` names one test's topics and group; `create_topic` makes a topic.
- `ticks(n)` names n events: 50 keys round-robin, `seq` increasing per key.
- `Stream` produces records from a thread with a plain idempotent Producer, paced (`rate`)
  and gated (`gate`: how many may be sent so far), and counts confirmations.
- `OutputWatcher` counts output records as they arrive (progress, for timing a kill).
- `read_all`, `end_offsets`, `committed_offsets`, `wait_settled`: offsets and records.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kit.codec import Codec
from kit.schema import SchemaRepository
from tests.fault.svc import SCHEMAS, Tick

__all__ = [
    "OutputWatcher",
    "Pipeline",
    "Stream",
    "codec",
    "committed_offsets",
    "create_topic",
    "encode_ticks",
    "end_offsets",
    "read_all",
    "ticks",
    "wait_settled",
]

KEYS = 50
_CODEC: Codec | None = None


def codec() -> Codec:
    """A Codec over the fault schemas only (tests/fault/schemas)."""
    global _CODEC
    if _CODEC is None:
        _CODEC = Codec(SchemaRepository(SCHEMAS))
    return _CODEC


def _quiet(config: dict[str, Any]) -> dict[str, Any]:
    return {"log_level": 0, **config}


# --- topics and offsets --------------------------------------------------------------------


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 3,
    config: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create a topic (the cluster's default replication) and wait until every partition
    has a leader."""
    admin = AdminClient(_quiet({"bootstrap.servers": bootstrap}))
    futures = admin.create_topics(
        [NewTopic(name, partitions, -1, config=config or {})], request_timeout=timeout
    )
    futures[name].result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(name, timeout=timeout).topics.get(name)
        if meta is not None and meta.error is None and len(meta.partitions) == partitions:
            if all(p.leader >= 0 for p in meta.partitions.values()):
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {name} not ready within {timeout}s")
        time.sleep(0.05)


def _partitions(
    consumer: Consumer, topic: str, timeout: float = 10.0, wait: bool = True
) -> list[int]:
    """The partitions of `topic`. With `wait`, asks again until `timeout` while the broker
    asked does not know it yet (on a cluster, a topic just made reaches each broker's
    metadata in turn); [] if it never appears (at once without `wait`)."""
    deadline = time.monotonic() + (timeout if wait else 0.0)
    while True:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is not None and meta.error is None and meta.partitions:
            return sorted(meta.partitions)
        if time.monotonic() > deadline:
            return []
        time.sleep(0.05)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The end (high watermark) offset of every partition of `topic`."""
    consumer = Consumer(_quiet({"bootstrap.servers": bootstrap, "group.id": "fault-offsets"}))
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in _partitions(consumer, topic)
        }
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The offsets `group` committed on every partition of `topic` (-1: none committed)."""
    consumer = Consumer(
        _quiet({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    )
    try:
        parts = [TopicPartition(topic, p) for p in _partitions(consumer, topic)]
        return {tp.partition: max(tp.offset, -1) for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()


def wait_settled(
    bootstrap: str,
    group: str,
    topic: str,
    timeout: float,
    give_up: Callable[[], bool] = lambda: False,
) -> bool:
    """Wait until `group` committed the end offset of every partition of `topic`.

    Returns True then; False when `give_up()` turns true first (say, no instance is left
    running) or when `timeout` passes (the report then shows how far it got).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            end = end_offsets(bootstrap, topic)
            committed = committed_offsets(bootstrap, group, topic)
        except KafkaException:
            end, committed = {0: 1}, {}  # the broker is away: not settled
        if end and committed == end:
            return True
        if give_up():
            return False
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def read_all(bootstrap: str, topic: str, timeout: float = 120.0) -> list[Message]:
    """Every record of `topic`, read to the end offsets it had when called, in partition
    order (partition by partition). A topic that does not exist has no records."""
    consumer = Consumer(
        _quiet(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"fault-read-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
    )
    try:
        parts = _partitions(consumer, topic, wait=False)  # a missing topic reads as empty
        marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10) for p in parts}
        todo = {p: high for p, (low, high) in marks.items() if high > low}
        consumer.assign([TopicPartition(topic, p, marks[p][0]) for p in todo])
        got: dict[int, list[Message]] = {p: [] for p in parts}
        position = {p: marks[p][0] for p in todo}
        deadline = time.monotonic() + timeout
        while any(position[p] < high for p, high in todo.items()):
            if time.monotonic() > deadline:
                raise AssertionError(f"read {topic} to {position} of {todo} only, in {timeout}s")
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    continue
                p = msg.partition()
                got[p].append(msg)
                position[p] = max(position[p], msg.offset() + 1)
            # transactional topics end in commit markers, which are never delivered: the
            # consumer's position moves past them
            for tp in consumer.position([TopicPartition(topic, p) for p in todo]):
                position[tp.partition] = max(position[tp.partition], tp.offset)
        return [m for p in parts for m in got[p] if m.offset() < marks[p][1]]
    finally:
        consumer.close()


@dataclass(frozen=True)
class Pipeline:
    """One test's topics and consumer group: Ticks on `input`, Tocks on `output`."""

    bootstrap: str
    input: str
    output: str
    group: str

    @property
    def dead_letters(self) -> str:
        """The dead-letter topic kit uses for the input topic (default suffix)."""
        return f"{self.input}.dlt"


# --- input ---------------------------------------------------------------------------------


def ticks(count: int, keys: int = KEYS) -> list[tuple[str, int]]:
    """`count` events as (key, seq): keys k00..k49 round-robin, seq 0, 1, 2, ... per key."""
    return [(f"k{i % keys:02d}", i // keys) for i in range(count)]


def encode_ticks(
    items: Iterable[tuple[str, int]], pad: str = "p" * 16
) -> list[tuple[bytes, bytes]]:
    """The (key, value) records of Ticks, encoded as the service reads them."""
    encode = codec().encode
    return [(key.encode(), encode(Tick(key=key, seq=seq, pad=pad))) for key, seq in items]


class Stream:
    """Produces (key, value) records to `topic` from a thread, and counts confirmations.

    `rate` paces it (records per second, a token bucket with 0.1 s of burst); `gate()`
    caps how many records may be sent so far (say, until the next kill). Delivery reports
    give each record's (partition, offset) in `offsets`, by index.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None]],
        *,
        rate: float | None = None,
        gate: Callable[[], int] | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.records = records
        self.rate = rate
        self.gate = gate
        self.producer = Producer(
            _quiet(
                {
                    "bootstrap.servers": bootstrap,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "queue.buffering.max.messages": 1_000_000,
                    "message.timeout.ms": 300_000,
                    **(config or {}),
                }
            )
        )
        self.sent = 0
        self.confirmed = 0
        self.errors: list[str] = []
        self.offsets: list[tuple[int, int]] = [(-1, -1)] * len(records)
        self.all_sent = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stream-{topic}", daemon=True)
        self.started = 0.0
        self.finished = 0.0

    def start(self) -> Stream:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def _delivered(self, index: int) -> Callable[[Any, Any], None]:
        def callback(err: Any, msg: Any) -> None:
            if err is not None:
                self.errors.append(f"record {index}: {err}")
            else:
                self.confirmed += 1
                self.offsets[index] = (msg.partition(), msg.offset())

        return callback

    def _run(self) -> None:
        producer, records, total = self.producer, self.records, len(self.records)
        tokens, last = 0.0, time.monotonic()
        i = 0
        while i < total and not self._stop.is_set():
            allowed = total if self.gate is None else min(total, self.gate())
            if self.rate is not None:
                now = time.monotonic()
                tokens = min(tokens + self.rate * (now - last), max(self.rate * 0.1, 1.0))
                last = now
                allowed = min(allowed, i + int(tokens))
            if i >= allowed:
                producer.poll(0.01)
                continue
            start = i
            while i < allowed:
                key, value = records[i]
                try:
                    producer.produce(self.topic, value, key, on_delivery=self._delivered(i))
                except BufferError:
                    producer.poll(0.05)
                    continue
                i += 1
            self.sent = i
            if self.rate is not None:
                tokens -= i - start
            producer.poll(0)
        self.all_sent.set()
        while not self._stop.is_set() and producer.flush(0.2) > 0:
            pass
        self.finished = time.monotonic()

    def wait(self, timeout: float) -> None:
        """Wait until every record is sent and confirmed; AssertionError otherwise."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(5)
            raise AssertionError(
                f"stream to {self.topic}: {self.confirmed}/{len(self.records)} confirmed "
                f"within {timeout}s"
            )
        assert not self.errors, f"stream to {self.topic}: delivery failed: {self.errors[:5]}"
        assert self.confirmed == len(self.records), (self.confirmed, len(self.records))

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)


class OutputWatcher:
    """Counts the records arriving on a topic (all partitions, from the start), in a thread."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._consumer = Consumer(
            _quiet(
                {
                    "bootstrap.servers": bootstrap,
                    "group.id": f"fault-watch-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "reconnect.backoff.max.ms": 1000,
                }
            )
        )
        parts = _partitions(self._consumer, topic)
        assert parts, f"no topic {topic} to watch"
        self._consumer.assign([TopicPartition(topic, p, -2) for p in parts])
        self._thread = threading.Thread(target=self._run, name=f"watch-{topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(1000, 0.2):
                if msg.error() is None:
                    self.count += 1
        self._consumer.close()

    def wait_for(self, count: int, timeout: float, alive: Callable[[], bool]) -> bool:
        """Wait until `count` records arrived; False if `alive()` turns false or time is up."""
        deadline = time.monotonic() + timeout
        while self.count < count:
            if not alive() or time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
