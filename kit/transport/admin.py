"""Topic admin: create topics and wait for their leaders; read and raise `max.message.bytes`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from kit.errors import BrokerError
from kit.transport.diagnose import authorization_message

if TYPE_CHECKING:
    from confluent_kafka.admin import TopicMetadata

__all__ = ["TopicSpec", "ensure_topics", "raise_topic_limits", "topic_limits"]

log = logging.getLogger("kit.kafka")


@dataclass(frozen=True)
class TopicSpec:
    """A topic the kit should make sure exists."""

    name: str
    partitions: int
    replication: int
    """Replicas; -1 takes the cluster's default.replication.factor (KIP-464)."""
    config: tuple[tuple[str, str], ...] = ()


def ensure_topics(
    admin: AdminClient,
    specs: Iterable[TopicSpec],
    timeout: float = 30.0,
    *,
    listed: dict[str, TopicMetadata] | None = None,
) -> list[str]:
    """Create missing topics; warn where an existing one differs. Returns those created.

    `listed`, a topic listing taken a moment ago (``admin.list_topics().topics``), saves
    asking for one: start-up checks all its topics against one answer. The metadata of the
    topics created is added to it.
    """
    wanted = {s.name: s for s in specs}
    if not wanted:
        return []
    existing = admin.list_topics(timeout=timeout).topics if listed is None else listed
    missing = [s for n, s in wanted.items() if n not in existing]
    for name, spec in wanted.items():
        meta = existing.get(name)
        if meta is not None and meta.error is None and len(meta.partitions) != spec.partitions:
            log.info(
                "topic %s exists with %d partitions (declared %d); using it as it is",
                name,
                len(meta.partitions),
                spec.partitions,
            )
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replication, config=dict(s.config)) for s in missing],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            denied = authorization_message(err, topic=name, action="create")
            raise BrokerError(denied or f"cannot create topic {name!r}: {err}") from None
    ready = _wait_for_metadata(admin, created, timeout)
    if listed is not None:
        listed.update({n: ready[n] for n in created})
    return created


def _wait_for_metadata(
    admin: AdminClient, names: list[str], timeout: float
) -> dict[str, TopicMetadata]:
    """The last listing, once every name in it has a leader for each partition."""
    deadline = time.monotonic() + timeout
    pending = set(names)
    topics: dict[str, TopicMetadata] = {}
    while pending and time.monotonic() < deadline:
        topics = admin.list_topics(timeout=timeout).topics
        pending = {
            n
            for n in pending
            if n not in topics
            or topics[n].error is not None
            or any(p.leader < 0 for p in topics[n].partitions.values())
        }
        if pending:
            time.sleep(0.05)
    if pending:
        raise BrokerError(f"topics not ready after {timeout:.0f}s: {sorted(pending)}")
    return topics


def topic_limits(
    admin: AdminClient, topics: Iterable[str], timeout: float = 15.0
) -> dict[str, int]:
    """`max.message.bytes` of each existing topic among `topics` (blocking)."""
    names = sorted(set(topics))
    if not names:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    out: dict[str, int] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        try:
            entries = future.result(timeout=timeout)
        except KafkaException as exc:
            log.debug("cannot read the configuration of %s: %s", resource.name, exc)
            continue
        entry = entries.get("max.message.bytes")
        if entry is not None and entry.value is not None:
            out[resource.name] = int(entry.value)
    return out


def raise_topic_limits(
    admin: AdminClient, limits: dict[str, int], timeout: float = 15.0
) -> dict[str, str]:
    """Raise `max.message.bytes` of topics to the given values; returns {topic: error} for
    each one the broker refused (for example for lack of ALTER_CONFIGS permission)."""
    failed: dict[str, str] = {}
    for name, limit in sorted(limits.items()):
        resource = ConfigResource(
            ResourceType.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(
                    "max.message.bytes",
                    str(limit),
                    incremental_operation=AlterConfigOpType.SET,
                )
            ],
        )
        future = admin.incremental_alter_configs([resource], request_timeout=timeout)[resource]
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            failed[name] = str(exc.args[0])
    return failed
