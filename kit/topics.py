"""Topic listings for operators: partitions and end offsets of the cluster's topics."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from kit.config import Settings
from kit.errors import BrokerError
from kit.transport.kafka import admin_client, check_reachable

__all__ = ["TopicInfo", "list_topics", "topic_exists"]


@dataclass(frozen=True)
class TopicInfo:
    """One topic: its partitions' end offsets (the next offset each will write)."""

    name: str
    end_offsets: tuple[int, ...]

    @property
    def partitions(self) -> int:
        """How many partitions it has."""
        return len(self.end_offsets)

    @property
    def records(self) -> int:
        """The sum of the end offsets: records ever written (compaction and retention
        may have removed some)."""
        return sum(self.end_offsets)


def list_topics(
    settings: Settings, *, internal: bool = False, timeout: float = 15.0
) -> list[TopicInfo]:
    """Every topic, by name (Kafka's own `__*` topics only with `internal`); blocking.

    Raises ConfigError naming KIT_BOOTSTRAP_SERVERS when no broker answers, BrokerError
    when the end offsets cannot be read within `timeout`.
    """
    admin = admin_client(settings)
    check_reachable(admin, settings, settings.connect_timeout)
    metadata = admin.list_topics(timeout=timeout).topics
    names = sorted(n for n in metadata if internal or not n.startswith("__"))
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]  # untyped in its stubs
    partitions = {TopicPartition(n, p): latest for n in names for p in metadata[n].partitions}
    ends = _end_offsets(admin, partitions, timeout) if partitions else {}
    return [
        TopicInfo(n, tuple(ends[(n, p)] for p in sorted(metadata[n].partitions))) for n in names
    ]


def topic_exists(settings: Settings, topic: str, timeout: float = 15.0) -> bool:
    """Whether the cluster has `topic`; blocking. Lists every topic rather than asking for
    this one, so that no broker auto-creates it."""
    meta = admin_client(settings).list_topics(timeout=timeout).topics.get(topic)
    return meta is not None and meta.error is None


def _end_offsets(
    admin: AdminClient, partitions: dict[TopicPartition, OffsetSpec], timeout: float
) -> dict[tuple[str, int], int]:
    futures = admin.list_offsets(partitions, request_timeout=timeout)
    ends: dict[tuple[str, int], int] = {}
    try:
        for tp, future in futures.items():
            ends[(tp.topic, tp.partition)] = future.result(timeout).offset
    except Exception as exc:  # a KafkaException or a timeout: name what failed
        raise BrokerError(f"cannot read the end offsets of the topics: {exc}") from None
    return ends
